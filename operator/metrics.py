"""Prometheus metrics of the operator (served on `MODELFLEET_METRICS_PORT`, path /metrics).

Names follow Prometheus' conventions: a `modelfleet_` prefix, base units (`_seconds`), `_total` on
counters, `_info` on the build info. Labels are bounded: per template `namespace`, `template`; per
instance also `instance` (the ModelInstance's name); `phase`, `outcome`, `reason` take a few fixed
values. The table with every series is in docs/operator.md.

The core feeds them from three places, so they move with it:
- `observe_plan(namespace, template, plan, instances)` after a plan was applied: promotions, gate
  failures, and the promoted models' NE and calibration per instance (series of instances that
  left the template are removed);
- `observe_run(run, patch)` where a run's status patch is written: the duration of a run that
  finishes with it;
- `forget_template(namespace, template)` when the template's daemon stops (the template was
  deleted, or this replica lost peering): every series of that template goes.
"""

from __future__ import annotations

import platform
import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics, start_http_server

from modelfleet import __version__
from modelfleet.api.resources import FINISHED_PHASES
from modelfleet.operator import naming
from modelfleet.operator import status as st
from modelfleet.operator.actions import PatchStatus, Plan, Promote

# `<counter>_created` series double every counter and histogram and say nothing a dashboard uses.
disable_created_metrics()

_TEMPLATE = ["namespace", "template"]
_INSTANCE = [*_TEMPLATE, "instance"]

RUNS = Gauge("modelfleet_runs", "TrainingRuns of a template by phase, as of its last plan.", [*_TEMPLATE, "phase"])
PROPAGATION_SECONDS = Histogram(
    "modelfleet_propagation_seconds",
    "Seconds from a template revision change to all of its instances promoted.",
    buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, float("inf")),
)
API_ERRORS = Counter("modelfleet_api_errors_total", "Failed Kubernetes API calls, by verb.", ["verb"])
RECONCILE_ERRORS = Counter(
    "modelfleet_reconcile_errors_total",
    "Plans (kind=plan) and run reconciles (kind=run) that raised; logged and retried later.",
    ["kind"],
)
PLANNER_SECONDS = Histogram(
    "modelfleet_planner_seconds",
    "Duration of one plan of one template.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
)
INSTANCE_NE = Gauge(
    "modelfleet_instance_ne", "Normalized entropy of the instance's promoted model (lower is better).", _INSTANCE
)
INSTANCE_CALIBRATION = Gauge(
    "modelfleet_instance_calibration",
    "Calibration (mean prediction / observed rate) of the instance's promoted model; 1 is ideal.",
    _INSTANCE,
)
PROMOTIONS = Counter("modelfleet_promotions_total", "Models promoted (they passed the NE gate).", _TEMPLATE)
GATE_FAILURES = Counter(
    "modelfleet_gate_failures_total",
    "Trained models the NE gate kept from promotion, by reason (no_ne, above_max_ne, worse_than_promoted).",
    [*_TEMPLATE, "reason"],
)
_HOUR, _DAY = 3600, 86400
RUN_DURATION = Histogram(
    "modelfleet_run_duration_seconds",
    "Seconds from a TrainingRun's first submission to its end (queueing and retries included), by outcome.",
    [*_TEMPLATE, "outcome"],
    buckets=(60, 300, 900, 1800, _HOUR, 2 * _HOUR, 4 * _HOUR, 8 * _HOUR, 16 * _HOUR, _DAY, 2 * _DAY, 4 * _DAY, 7 * _DAY, float("inf")),
)
BUILD_INFO = Info("modelfleet_build", "The operator's version and Python; the value is always 1.")
BUILD_INFO.info({"version": __version__, "python": platform.python_version()})

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Superseded", "Cancelled")
_lock = threading.Lock()
# (namespace, template) -> the instances whose series were last set for it (to remove the gone ones)
_instances: dict[tuple[str, str], set[str]] = {}


def api_error(verb: str) -> None:
    API_ERRORS.labels(verb=verb).inc()


def reconcile_error(kind: str) -> None:
    RECONCILE_ERRORS.labels(kind=kind).inc()


def set_runs(namespace: str, template: str, counts: dict[str, int]) -> None:
    with _lock:
        for phase in PHASES:
            RUNS.labels(namespace=namespace, template=template, phase=phase).set(counts.get(phase, 0))


def _set(gauge: Gauge, labels: tuple[str, str, str], value: float | None) -> None:
    if value is None:
        gauge.remove(*labels)
    else:
        gauge.labels(*labels).set(value)


def observe_plan(namespace: str, template: str, plan: Plan, instances: list[Any]) -> None:
    """Record what an applied `plan` of `template` decided; `instances` are the ones it planned.

    A gate failure counts once, when the instance's Ready condition turns to it (the planner
    re-evaluates the gate on every plan and writes, and counts, only news).
    """
    promoted = {p.instance: p.metrics for p in plan.of(Promote)}
    patched = {a.name for a in plan.of(PatchStatus) if a.kind == "ModelInstance"}
    names: set[str] = set()
    with _lock:
        for inst in instances:
            name = inst.metadata.name
            names.add(name)
            status = inst.status
            metrics = promoted.get(name) or (status.metrics if status and status.promoted_revision else None)
            labels = (namespace, template, name)
            _set(INSTANCE_NE, labels, metrics.ne if metrics else None)
            _set(INSTANCE_CALIBRATION, labels, metrics.calibration if metrics else None)
            info = plan.instances.get(name) or {}
            if info.get("state") == "GateFailed" and name in patched:
                old = next((c for c in (status.conditions if status else ()) if c.type == "Ready"), None)
                if old is None or (old.reason, old.message) != (info.get("reason"), info.get("message")):
                    GATE_FAILURES.labels(namespace, template, info.get("gateReason") or "unknown").inc()
        if promoted:
            PROMOTIONS.labels(namespace, template).inc(len(promoted))
        key = (namespace, template)
        for gone in _instances.get(key, set()) - names:
            INSTANCE_NE.remove(namespace, template, gone)
            INSTANCE_CALIBRATION.remove(namespace, template, gone)
        _instances[key] = names


def observe_run(run: Any, patch: dict[str, Any] | None) -> None:
    """The duration of `run` when the status `patch` just written finishes it."""
    outcome = (patch or {}).get("phase")
    old = run.status.phase if run.status else None
    if outcome not in FINISHED_PHASES or old in FINISHED_PHASES:
        return
    start = st.parse_time((run.status.start_time if run.status else None) or patch.get("startTime"))  # type: ignore[union-attr]
    end = st.parse_time(patch.get("finishTime"))  # type: ignore[union-attr]
    if start is None or end is None:
        return  # never submitted (superseded while queued): it has no duration
    template = (run.metadata.labels or {}).get(naming.LABEL_TEMPLATE, "")
    RUN_DURATION.labels(run.metadata.namespace or "", template, outcome).observe(max(0.0, (end - start).total_seconds()))


def forget_template(namespace: str, template: str) -> None:
    """Remove every series of `template`: it is gone, or another replica reports it now."""
    labels = {"namespace": namespace, "template": template}
    with _lock:
        for metric in (RUNS, INSTANCE_NE, INSTANCE_CALIBRATION, PROMOTIONS, GATE_FAILURES, RUN_DURATION):
            metric.remove_by_labels(labels)
        _instances.pop((namespace, template), None)


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a background thread (port 0: do not serve)."""
    if port:
        start_http_server(port)
