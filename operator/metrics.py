"""Prometheus metrics of the operator (served on `MODELFLEET_METRICS_PORT`, path /metrics).

- `modelfleet_runs{namespace,template,phase}`: TrainingRuns of a template by phase, as of its last plan;
- `modelfleet_propagation_seconds`: from the operator first seeing a template revision to every
  (unblocked) instance of the template being promoted at it;
- `modelfleet_api_errors_total{verb}`: failed Kubernetes API calls (and failed plans/reconciles);
- `modelfleet_planner_seconds`: duration of one `plan_template` call.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RUNS = Gauge("modelfleet_runs", "TrainingRuns by phase, per template.", ["namespace", "template", "phase"])
PROPAGATION_SECONDS = Histogram(
    "modelfleet_propagation_seconds",
    "Seconds from a template revision change to all of its instances promoted.",
    buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, float("inf")),
)
API_ERRORS = Counter("modelfleet_api_errors_total", "Failed Kubernetes API calls.", ["verb"])
PLANNER_SECONDS = Histogram(
    "modelfleet_planner_seconds",
    "Duration of one plan of one template.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
)

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Superseded", "Cancelled")
_lock = threading.Lock()


def api_error(verb: str) -> None:
    API_ERRORS.labels(verb=verb).inc()


def set_runs(namespace: str, template: str, counts: dict[str, int]) -> None:
    with _lock:
        for phase in PHASES:
            RUNS.labels(namespace=namespace, template=template, phase=phase).set(counts.get(phase, 0))


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a background thread (port 0: do not serve)."""
    if port:
        start_http_server(port)
