"""The operator's Prometheus metrics: names, types and labels as exported (the text exposition,
parsed by prometheus_client's own parser), and what real plans and runs make of them."""

from __future__ import annotations

import datetime as dt
import platform
import re

import pytest
from op_world import World, instance, template
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet import __version__
from modelfleet.operator import metrics

NS, T = "default", "ctr"
HOUR = dt.timedelta(hours=1)

# family -> (type, label names); counters' samples carry `_total`, histograms' `_bucket/_sum/_count`.
EXPORTED = {
    "modelfleet_runs": ("gauge", {"namespace", "template", "phase"}),
    "modelfleet_propagation_seconds": ("histogram", set()),
    "modelfleet_api_errors": ("counter", {"verb"}),
    "modelfleet_reconcile_errors": ("counter", {"kind"}),
    "modelfleet_planner_seconds": ("histogram", set()),
    "modelfleet_instance_ne": ("gauge", {"namespace", "template", "instance"}),
    "modelfleet_instance_calibration": ("gauge", {"namespace", "template", "instance"}),
    "modelfleet_promotions": ("counter", {"namespace", "template"}),
    "modelfleet_gate_failures": ("counter", {"namespace", "template", "reason"}),
    "modelfleet_run_duration_seconds": ("histogram", {"namespace", "template", "outcome"}),
    "modelfleet_build_info": ("gauge", {"version", "python"}),
}


@pytest.fixture(autouse=True)
def clean():
    metrics.forget_template(NS, T)
    yield
    metrics.forget_template(NS, T)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def running(w: World) -> list[str]:
    return sorted(j["run"] for j in w.launcher.jobs.values() if j["state"] in ("RUNNING", "PENDING"))


def advance(w: World, steps: int) -> None:
    """Plan, apply and reconcile; every job then ends an hour later, successfully."""
    for _ in range(steps):
        w.step()
        for name in running(w):
            w.launcher.finish(name)
        w.now += HOUR


def fleet(tmp_path, names=("a", "b"), **rollout) -> World:
    w = World(tmp_path, feed_metrics=True)
    w.put(template(rollout={"maxConcurrentRuns": 2, "canary": {"count": 1}, **rollout}))
    for n in names:
        w.put(instance(n))
    return w


def test_exported_names_types_and_labels_follow_the_conventions(tmp_path):
    w = fleet(tmp_path, gate={"tolerance": 0.01})
    advance(w, 6)
    w.put(template(techniques=[], rollout={"maxConcurrentRuns": 2, "canary": {"count": 1}, "gate": {"tolerance": 0.01}}))
    w.ne["*"] = 0.9
    advance(w, 3)
    metrics.set_runs(NS, T, {"Succeeded": 3})  # the daemon's per-plan census
    metrics.api_error("patch")  # KubeStore's on_error
    metrics.reconcile_error("plan")

    families = {f.name: f for f in text_string_to_metric_families(generate_latest(REGISTRY).decode()) if f.name.startswith("modelfleet_")}
    got = {name: (f.type, {k for s in f.samples for k in s.labels} - {"le"}) for name, f in families.items()}
    assert got == EXPORTED
    for name, f in families.items():
        assert re.fullmatch(r"modelfleet_[a-z0-9_]+", name)
        suffixes = {s.name[len(name):] for s in f.samples}
        if f.type == "counter":
            assert suffixes == {"_total"}, (name, suffixes)  # and no `_created` series
        elif f.type == "histogram":
            assert name.endswith("_seconds") and suffixes == {"_bucket", "_sum", "_count"}, (name, suffixes)
        else:
            assert suffixes == {""}
    build = families["modelfleet_build_info"].samples
    assert [(s.labels, s.value) for s in build] == [({"version": __version__, "python": platform.python_version()}, 1.0)]
    # Buckets for training runs: from a minute to a week.
    les = sorted({float(s.labels["le"]) for s in families["modelfleet_run_duration_seconds"].samples if "le" in s.labels})
    assert les[0] == 60 and les[-2] == 7 * 86400 and les[-1] == float("inf")


def test_promotions_ne_calibration_and_run_durations_of_a_rollout(tmp_path):
    w = fleet(tmp_path)
    advance(w, 6)
    assert {i.metadata.name: i.status.promoted_revision is not None for i in w.instances()} == {"a": True, "b": True}
    for n in ("a", "b"):
        assert value("modelfleet_instance_ne", namespace=NS, template=T, instance=n) == pytest.approx(0.8)
        assert value("modelfleet_instance_calibration", namespace=NS, template=T, instance=n) == pytest.approx(1.01)
    assert value("modelfleet_promotions_total", namespace=NS, template=T) == 2
    # Each job ran an hour between the reconcile that submitted it and the one that saw it end.
    ok = {"namespace": NS, "template": T, "outcome": "Succeeded"}
    assert value("modelfleet_run_duration_seconds_count", **ok) == 2
    assert value("modelfleet_run_duration_seconds_sum", **ok) == 2 * 3600
    assert value("modelfleet_run_duration_seconds_bucket", **ok, le="1800.0") == 0
    assert value("modelfleet_run_duration_seconds_bucket", **ok, le="3600.0") == 2

    advance(w, 3)  # nothing new: re-plans count nothing twice
    assert value("modelfleet_promotions_total", namespace=NS, template=T) == 2
    assert value("modelfleet_run_duration_seconds_count", **ok) == 2


def test_a_gate_failure_counts_once_by_reason_and_the_old_model_stays(tmp_path):
    w = fleet(tmp_path, gate={"tolerance": 0.01})
    advance(w, 6)
    w.put(template(techniques=[], rollout={"maxConcurrentRuns": 2, "canary": {"count": 1}, "gate": {"tolerance": 0.01}}))
    w.ne["*"] = 0.9  # worse than 0.8 by more than 1 %
    advance(w, 6)  # the canary fails the gate; every later plan re-evaluates it
    failed = [i.metadata.name for i in w.instances() if i.status.conditions[0].reason == "GateFailed"]
    assert failed == ["a"]
    assert value("modelfleet_gate_failures_total", namespace=NS, template=T, reason="worse_than_promoted") == 1
    assert value("modelfleet_gate_failures_total", namespace=NS, template=T, reason="above_max_ne") is None
    assert value("modelfleet_instance_ne", namespace=NS, template=T, instance="a") == pytest.approx(0.8)
    assert value("modelfleet_promotions_total", namespace=NS, template=T) == 2
    # The run itself succeeded: its outcome is the run's, the gate's verdict is the counter's.
    assert value("modelfleet_run_duration_seconds_count", namespace=NS, template=T, outcome="Succeeded") == 3

    # A new generation that changes no revision rewrites the status (observedGeneration), still
    # GateFailed: not a second failure.
    w.put(instance("a", resources={"cpu": 4}))
    writes = w.store.writes
    advance(w, 2)
    assert w.store.writes > writes and w.instance("a")["status"]["observedGeneration"] == 2
    assert w.instance("a")["status"]["conditions"][0]["reason"] == "GateFailed"
    assert value("modelfleet_gate_failures_total", namespace=NS, template=T, reason="worse_than_promoted") == 1


def test_a_first_model_above_max_ne_has_no_ne_series(tmp_path):
    w = fleet(tmp_path, names=("a",), gate={"maxNe": 0.7})
    advance(w, 4)
    assert value("modelfleet_gate_failures_total", namespace=NS, template=T, reason="above_max_ne") == 1
    assert value("modelfleet_instance_ne", namespace=NS, template=T, instance="a") is None
    assert value("modelfleet_promotions_total", namespace=NS, template=T) is None


def test_a_superseded_run_is_observed_with_its_outcome(tmp_path):
    w = fleet(tmp_path, names=("a",))
    w.step()  # submitted, running
    w.now += 2 * HOUR
    w.put(template(techniques=[], rollout={"maxConcurrentRuns": 2, "canary": {"count": 1}}))
    w.step()  # the plan cancels the old run (apply_plan) and starts the new one
    out = {"namespace": NS, "template": T, "outcome": "Superseded"}
    assert value("modelfleet_run_duration_seconds_count", **out) == 1
    assert value("modelfleet_run_duration_seconds_sum", **out) == 2 * 3600


def test_series_of_an_instance_that_left_and_of_a_forgotten_template_are_removed(tmp_path):
    w = fleet(tmp_path)
    advance(w, 6)
    w.store.delete("ModelInstance", "b")
    w.step()
    assert value("modelfleet_instance_ne", namespace=NS, template=T, instance="b") is None
    assert value("modelfleet_instance_calibration", namespace=NS, template=T, instance="b") is None
    assert value("modelfleet_instance_ne", namespace=NS, template=T, instance="a") == pytest.approx(0.8)

    metrics.set_runs(NS, T, {"Succeeded": 2})
    metrics.forget_template(NS, T)
    text = generate_latest(REGISTRY).decode()
    assert f'template="{T}"' not in text
