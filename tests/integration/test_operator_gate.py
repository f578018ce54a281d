"""The noise-aware gate through the real operator (kopf against the emulated API server): a run's
paired comparison reaches the run's and the instance's status, the gate holds back a change
whose interval reaches past the tolerance, the instance warns once that its eval set is too
small, and a rollout that ended with every instance held back says so."""

from __future__ import annotations

from operator_harness import FakeLauncher, condition, eventually, patch
from test_operator_rollout import GRAD_CLIP, first_rollout, tstatus


def paired_metrics(cluster):
    """What the trainer writes: a paired comparison whenever the run names a baseline."""

    def metrics(run: str) -> dict:
        obj = cluster.obj("trainingruns", run) or {}
        baseline = obj.get("spec", {}).get("training", {}).get("baselineUri")
        out = {"ne": 0.80, "auc": 0.75, "calibration": 1.0, "examples": 481, "positives": 220, "neLow": 0.75, "neHigh": 0.85}
        if baseline:
            out["ne"] = 0.8008  # within the 0.5 % tolerance by the point rule
            out["comparison"] = {
                "baselineUri": baseline, "paired": True, "confidence": 0.95, "ne": 0.8008, "baselineNe": 0.80,
                "deltaNe": 0.0008, "deltaNeLow": -0.016, "deltaNeHigh": 0.0176,
                "relativeNeChange": 0.001, "relativeNeLow": -0.019, "relativeNeHigh": 0.021, "halfWidth": 0.02,
                "resamples": 1000, "examples": 481, "positives": 220,
            }
        return out

    return metrics


async def test_the_operator_holds_back_a_change_inside_the_noise_and_warns_once(cluster, operator_factory):
    launcher = FakeLauncher(metrics=paired_metrics(cluster))
    op = await operator_factory(launcher)
    names = ["a", "b"]
    await first_rollout(cluster, op, launcher, names, canary={"count": 0}, failureBudget=10, gate={"tolerance": 0.005})
    first = {n: cluster.obj("modelinstances", n)["status"] for n in names}
    assert all(s["metrics"]["neHigh"] == 0.85 and "comparison" not in s for s in first.values())

    launcher.auto = "succeed"
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    await eventually(lambda: tstatus(cluster).get("rolloutPhase") == "Failed")
    for n in names:
        inst = cluster.obj("modelinstances", n)
        s = inst["status"]
        assert s["promotedRevision"] == first[n]["promotedRevision"]  # the old model stays
        assert s["comparison"]["relativeNeHigh"] == 0.021 and s["comparison"]["baselineUri"] == first[n]["modelUri"]
        ready = condition(inst, "Ready")
        assert ready["reason"] == "GateFailed" and "[-1.90%, +2.10%]" in ready["message"]
        weak = condition(inst, "GateUnderpowered")
        assert weak["status"] == "True" and "481 examples, 220 positives" in weak["message"]
        (run,) = [r for r in cluster.objs("trainingruns") if r["spec"]["instance"] == n and r["spec"]["training"].get("baselineUri")]
        assert run["status"]["comparison"]["relativeNeChange"] == 0.001
        assert run["spec"]["training"]["baselineUri"] == first[n]["modelUri"]
    t = cluster.obj("modeltemplates", "ctr")
    ready = condition(t, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InstancesFailed"
    assert "ended with 2 gate failure(s) and 0 run failure(s)" in ready["message"]

    plans = op.ctx.plans
    await eventually(lambda: op.ctx.plans >= plans + 2)  # re-planning adds no second warning
    for n in names:
        assert sum(e["reason"] == "GateUnderpowered" for e in cluster.events(n)) == 1
