"""The noise-aware gate over a file-backed world: the paired interval decides, a stale or unpaired
comparison falls back to the point rule, an underpowered eval set is flagged once, an undefined NE
is never promoted, and a rollout whose instances all failed the gate does not say Complete."""

from __future__ import annotations

import math
from typing import Any

import pytest
from op_world import World, instance, template
from test_op_planner import NEW_TECHS, cond, converge, finish_all, retemplate

from modelfleet.api.resources import Comparison
from modelfleet.operator.planner import GATE_INTERVAL_ABOVE_TOLERANCE, GATE_NO_NE, GATE_WORSE_THAN_PROMOTED, gate


def comparison(uri: str | None, change: float, half: float, **kw: Any) -> dict[str, Any]:
    return {
        "baselineUri": uri, "paired": True, "confidence": 0.95, "ne": 0.8 * (1 + change), "baselineNe": 0.8,
        "deltaNe": 0.8 * change, "deltaNeLow": 0.8 * (change - half), "deltaNeHigh": 0.8 * (change + half),
        "relativeNeChange": change, "relativeNeLow": change - half, "relativeNeHigh": change + half,
        "halfWidth": half, "resamples": 1000, "examples": 481, "positives": 220, **kw,
    }


class PairedWorld(World):
    """A world whose runs report a paired comparison against the baseline their spec names."""

    def __init__(self, root, change: float = 0.0, half: float = 0.02):
        super().__init__(root)
        self.change, self.half = change, half
        self.raw: dict[str, dict[str, Any]] = {}  # run name -> metrics.json it "wrote" instead

    def _metrics(self, uri: str) -> dict | None:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if name in self.raw:
            return self.raw[name]
        out = super()._metrics(uri)
        run = self.run(name)
        baseline = run["spec"]["training"].get("baselineUri") if run else None
        if baseline:
            c = comparison(baseline, self.change, self.half)
            out = {**out, "ne": c["ne"], "comparison": c}
        return out


def one(tmp_path, **gate_spec: Any) -> PairedWorld:
    w = PairedWorld(tmp_path)
    w.put(template(rollout={"maxConcurrentRuns": 2, "gate": gate_spec}))
    w.put(instance("m0"))
    return w


# --- gate(): the decision ------------------------------------------------------------------------


def _gate(tol: float, new_ne: float, c: dict | None, promoted_uri: str | None = "/o/m0-old"):
    t = template(rollout={"gate": {"tolerance": tol}})
    return gate(t, {"ne": 0.8}, "old", new_ne, Comparison.model_validate(c) if c else None, promoted_uri)


def test_paired_upper_bound_decides_not_the_point_nes():
    # point rule would pass (0.8008 <= 0.8 * 1.002), but the interval reaches +2.1 %
    reason, why = _gate(0.002, 0.8008, comparison("/o/m0-old", 0.001, 0.02))
    assert reason == GATE_INTERVAL_ABOVE_TOLERANCE and "481 eval examples" in why and "[-1.90%, +2.10%]" in why and "0.20%" in why
    # point rule would hold back (0.808 > 0.8016), but the interval is below the tolerance
    assert _gate(0.002, 0.808, comparison("/o/m0-old", -0.01, 0.005)) is None


def test_without_a_usable_pairing_the_point_rule_applies():
    stale = comparison("/o/m0-older", 0.001, 0.02)  # compared with a model no longer promoted
    assert _gate(0.002, 0.8008, stale) is None
    changed = {"baselineUri": "/o/m0-old", "paired": False, "reason": "the eval sets differ"}
    assert _gate(0.002, 0.8008, changed) is None
    reason, why = _gate(0.002, 0.81, changed)
    assert reason == GATE_WORSE_THAN_PROMOTED and "tolerance 0.002" in why
    assert _gate(0.002, 0.8008, None) is None


@pytest.mark.parametrize("ne", [None, math.nan, math.inf])
def test_an_undefined_ne_is_never_promoted_even_without_max_ne(ne):
    t = template()
    for failed in (gate(t, None, None, ne), gate(t, {"ne": 0.8}, "old", ne)):  # first model (maxNe unset), then not
        assert failed is not None and failed[0] == GATE_NO_NE and "undefined" in failed[1]


# --- the world: statuses, conditions, Events -------------------------------------------------------


def test_a_null_edit_inside_the_noise_is_held_back_and_the_instance_says_why(tmp_path):
    w = one(tmp_path, tolerance=0.002)
    converge(w)
    first = w.instance("m0")["status"]
    assert "comparison" not in first  # a first model has no baseline
    retemplate(w)
    converge(w)
    (run,) = [r for r in w.runs() if r.spec.revision != first["promotedRevision"]]
    assert run.spec.training.baseline_uri == first["modelUri"]  # the promoted model at creation
    assert run.spec.training.gate_confidence == 0.95
    assert run.status.comparison.relative_ne_high == pytest.approx(0.02)
    inst = w.instance("m0")
    ready = cond(inst, "Ready")
    assert ready["reason"] == "GateFailed" and "interval [-2.00%, +2.00%]" in ready["message"]
    assert inst["status"]["promotedRevision"] == first["promotedRevision"]  # the old model stays
    assert inst["status"]["comparison"]["relativeNeHigh"] == pytest.approx(0.02)
    weak = cond(inst, "GateUnderpowered")
    assert weak["status"] == "True" and "481 examples, 220 positives" in weak["message"]
    assert "half-width 2.00%" in weak["message"] and "0.20%" in weak["message"]
    events = [e for e in w.store.events() if e["name"] == "m0" and e["reason"] == "GateUnderpowered"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert w.plan().actions == []  # the condition is stable: no write, no second Event


def test_a_real_improvement_beyond_the_noise_is_promoted_with_its_interval(tmp_path):
    w = one(tmp_path, tolerance=0.002)
    converge(w)
    retemplate(w)
    w.change, w.half = -0.05, 0.01
    converge(w)
    inst = w.instance("m0")
    assert cond(inst, "Ready")["reason"] == "Promoted"
    assert inst["status"]["metrics"]["ne"] == pytest.approx(0.76)
    assert inst["status"]["comparison"]["relativeNeHigh"] == pytest.approx(-0.04)
    assert cond(inst, "GateUnderpowered")["status"] == "True"  # 1 % half-width > 0.2 % tolerance
    # a big enough eval set for the tolerance: no warning
    w2 = one(tmp_path / "b", tolerance=0.02)
    converge(w2)
    retemplate(w2)
    w2.change, w2.half = -0.05, 0.01
    converge(w2)
    assert all(c["type"] != "GateUnderpowered" for c in w2.instance("m0")["status"]["conditions"])


def test_a_one_class_eval_fails_the_run_and_is_never_promoted_with_max_ne_unset(tmp_path):
    w = one(tmp_path)
    w.step()
    (name,) = [r.metadata.name for r in w.runs()]
    w.raw[name] = {"ne": 494790.2, "logloss": 0.84, "examples": 40, "positives": 0, "auc": None}
    finish_all(w)
    for _ in range(3):
        w.step()
    run = w.run(name)
    assert run["status"]["phase"] == "Failed" and run["status"]["reason"] == "MetricUndefined"
    assert "one class" in run["status"]["message"] and run["status"]["attempts"] == 1  # not retried
    inst = w.instance("m0")
    assert "promotedRevision" not in inst["status"]
    assert cond(inst, "Ready")["status"] == "False" and cond(inst, "Ready")["reason"] == "MetricUndefined"
    assert cond(inst, "Stalled")["status"] == "True"


@pytest.mark.parametrize("raw", [{"ne": math.nan, "examples": 40}, {"auc": 0.7, "examples": 40}, {"ne": 0.7, "examples": 0}])
def test_a_nan_absent_or_empty_ne_fails_the_run(tmp_path, raw):
    w = one(tmp_path)
    w.step()
    (name,) = [r.metadata.name for r in w.runs()]
    w.raw[name] = raw
    finish_all(w)
    w.step()
    assert w.run(name)["status"]["reason"] == "MetricUndefined"
    assert "promotedRevision" not in w.instance("m0")["status"]


def test_every_instance_failing_the_gate_does_not_say_complete(tmp_path):
    w = World(tmp_path)
    w.put(template(rollout={"maxConcurrentRuns": 8, "canary": {"count": 0}, "failureBudget": 100}))
    for i in range(8):
        w.put(instance(f"m{i}"))
    converge(w)
    assert w.template().status.rollout_phase == "Complete"
    retemplate(w, techniques=NEW_TECHS)
    w.ne["*"] = 0.9
    converge(w)
    t = w.store.get("ModelTemplate", "ctr")
    assert t["status"]["rolloutPhase"] == "Failed" and t["status"]["failed"] == 8
    ready = cond(t, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InstancesFailed"
    assert "ended with 8 gate failure(s) and 0 run failure(s)" in ready["message"]
    assert cond(t, "Stalled")["status"] == "True"
