"""Rollouts through the real operator: fan-out through canary and waves, no-op edits, pauses,
serving budgets, superseded runs and the run finalizer."""

from __future__ import annotations

from typing import Any

from operator_harness import FakeLauncher, condition, create, delete, eventually, instance, patch
from prometheus_client import REGISTRY

from modelfleet.operator import naming


def template(name: str = "ctr", techniques: list[dict[str, Any]] | None = None, **rollout: Any) -> dict:
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": name},
        "spec": {
            "techniques": techniques or [],
            "rollout": {"maxConcurrentRuns": 2, "canary": {"count": 1}, "gate": {"tolerance": 0.05}, **rollout},
        },
    }


GRAD_CLIP = {"name": "grad-clip", "params": {"maxNorm": 1.0}}
DROPOUT = {"name": "dropout", "params": {"p": 0.1}}


def tstatus(cluster, name: str = "ctr") -> dict:
    return (cluster.obj("modeltemplates", name) or {}).get("status") or {}


def runs_at(cluster, template_revision: str) -> list[dict]:
    return [r for r in cluster.objs("trainingruns") if r["spec"].get("templateRevision") == template_revision]


def all_promoted(cluster, n: int, name: str = "ctr") -> str | None:
    st = tstatus(cluster, name)
    return st.get("revision") if st.get("instances") == n and st.get("upToDate") == n else None


async def settle(op, cycles: int = 2) -> None:
    """Let the template daemon plan `cycles` more times (it also re-plans on its resync timer)."""
    target = op.ctx.plans + cycles
    await eventually(lambda: op.ctx.plans >= target)


async def first_rollout(cluster, op, launcher: FakeLauncher, names: list[str], **tmpl: Any) -> str:
    launcher.auto = "succeed"
    await create(cluster, "modeltemplates", template(**tmpl))
    for n in names:
        await create(cluster, "modelinstances", instance(n))
    rev = await eventually(lambda: all_promoted(cluster, len(names)))
    launcher.auto = None
    return rev


def operator_writes(cluster, since: int) -> list[tuple]:
    """Writes after `since` that only the operator makes (status, runs, Events)."""
    return [w for w in cluster.writes[since:] if w[3] == "status" or w[1] in ("trainingruns", "events")]


async def test_technique_edit_fans_out_through_canary_and_waves(cluster, operator_factory):
    launcher = FakeLauncher()
    op = await operator_factory(launcher)
    names = ["a", "b", "c", "d"]
    rev1 = await first_rollout(cluster, op, launcher, names)
    propagated = REGISTRY.get_sample_value("modelfleet_propagation_seconds_count") or 0

    mark = len(cluster.writes)
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    rev2 = await eventually(lambda: (r := tstatus(cluster).get("revision")) != rev1 and r)

    # Canary: one run of the new revision, and nothing else starts while it trains.
    await eventually(lambda: len(runs_at(cluster, rev2)) == 1)
    await settle(op)
    (canary,) = runs_at(cluster, rev2)
    assert canary["metadata"]["labels"]["modelfleet.dev/wave"] == "1"
    assert tstatus(cluster)["rolloutPhase"] == "Canary"
    assert launcher.pending() == [canary["metadata"]["name"]]

    # The canary passes: a wave bounded by maxConcurrentRuns (2).
    launcher.finish(canary["metadata"]["name"])
    await eventually(lambda: len(runs_at(cluster, rev2)) == 3 and len(launcher.pending()) == 2)
    await settle(op)
    assert len(runs_at(cluster, rev2)) == 3 and len(launcher.pending()) == 2
    for name in launcher.pending():
        launcher.finish(name)
    await eventually(lambda: len(runs_at(cluster, rev2)) == 4 and len(launcher.pending()) == 1)
    launcher.finish(launcher.pending()[0])

    assert await eventually(lambda: all_promoted(cluster, 4)) == rev2
    assert tstatus(cluster)["rolloutPhase"] == "Complete"
    for n in names:
        inst = cluster.obj("modelinstances", n)
        (run,) = [r for r in runs_at(cluster, rev2) if r["spec"]["instance"] == n]
        assert inst["status"]["promotedRevision"] == run["spec"]["revision"]
        assert inst["status"]["techniques"] == ["grad-clip"]
        assert condition(inst, "Ready")["status"] == "True"
        assert inst["status"]["observedGeneration"] == inst["metadata"]["generation"]

    # Cost: one run per instance, one job per run, and a bounded number of writes per instance.
    created = [w for w in cluster.writes[mark:] if w[:2] == ("create", "trainingruns")]
    assert sorted(w[2] for w in created) == sorted(r["metadata"]["name"] for r in runs_at(cluster, rev2))
    new_jobs = [s for s in launcher.submitted if s[0] in {r["metadata"]["name"] for r in runs_at(cluster, rev2)}]
    assert len(new_jobs) == 4 == len(set(new_jobs))
    instance_status_writes = [w for w in cluster.writes[mark:] if w[1] == "modelinstances" and w[3] == "status"]
    assert len(instance_status_writes) <= 2 * len(names)  # Training, then promoted
    # The latency is observed right after the plan that promoted the last instance is applied.
    await eventually(lambda: (REGISTRY.get_sample_value("modelfleet_propagation_seconds_count") or 0) > propagated)


async def test_cosmetic_edits_train_nothing(cluster, operator_factory):
    launcher = FakeLauncher()
    op = await operator_factory(launcher)
    rev = await first_rollout(cluster, op, launcher, ["a", "b"], techniques=[GRAD_CLIP, DROPOUT])
    await settle(op)
    runs_before = len(cluster.objs("trainingruns"))

    # Labels only: not even a new generation, so no write at all.
    mark = len(cluster.writes)
    await patch(cluster, "modeltemplates", "ctr", {"metadata": {"labels": {"team": "ads"}}})
    await settle(op)
    assert operator_writes(cluster, mark) == []

    # Technique order: a new generation (the template's observedGeneration follows) but the same
    # revision, so no instance changes and no run starts.
    mark = len(cluster.writes)
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [DROPOUT, GRAD_CLIP]}})
    await eventually(lambda: tstatus(cluster)["observedGeneration"] == 2)
    await settle(op)
    writes = operator_writes(cluster, mark)
    assert writes == [("update", "modeltemplates", "ctr", "status")]
    assert tstatus(cluster)["revision"] == rev
    assert len(cluster.objs("trainingruns")) == runs_before
    assert launcher.pending() == []


async def test_failing_canary_pauses_the_rollout(cluster, operator_factory):
    launcher = FakeLauncher()
    op = await operator_factory(launcher)
    await create(cluster, "modeltemplates", template(maxRetries=0, failureBudget=2))
    for n in ["a", "b", "c"]:
        await create(cluster, "modelinstances", instance(n))

    (canary,) = await eventually(lambda: launcher.pending())
    launcher.finish(canary, ok=False)
    await eventually(lambda: tstatus(cluster).get("rolloutPhase") == "Paused")
    await settle(op)
    ready = condition(cluster.obj("modeltemplates", "ctr"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "CanaryFailed"
    assert canary in ready["message"]
    assert [r["metadata"]["name"] for r in cluster.objs("trainingruns")] == [canary]
    assert cluster.obj("trainingruns", canary)["status"]["phase"] == "Failed"
    assert launcher.pending() == []
    assert any(e["reason"] == "CanaryFailed" and e["type"] == "Warning" for e in cluster.events("ctr"))


async def test_over_budget_instance_is_blocked_before_training(cluster, operator_factory):
    launcher = FakeLauncher(auto="succeed")
    await operator_factory(launcher)
    await create(cluster, "modeltemplates", template(canary={"count": 0}))
    await create(cluster, "modelinstances", instance("small"))
    await create(cluster, "modelinstances", instance("huge", servingBudget={"maxFlopsPerExample": 10}))

    huge = await eventually(
        lambda: (c := condition(cluster.obj("modelinstances", "huge"), "Stalled")) and c["status"] == "True" and cluster.obj("modelinstances", "huge")
    )
    stalled = condition(huge, "Stalled")
    assert stalled["reason"] == "BudgetExceeded"
    assert "spec.servingBudget.maxFlopsPerExample" in stalled["message"] and "10" in stalled["message"]
    assert huge["status"]["estimatedFlopsPerExample"] > 10
    await eventually(lambda: (cluster.obj("modelinstances", "small")["status"] or {}).get("promotedRevision"))
    assert [r["spec"]["instance"] for r in cluster.objs("trainingruns")] == ["small"]
    assert tstatus(cluster)["blocked"] == 1


async def test_superseded_run_is_cancelled(cluster, operator_factory):
    launcher = FakeLauncher()
    await operator_factory(launcher)
    await create(cluster, "modeltemplates", template())
    await create(cluster, "modelinstances", instance("a"))
    (old,) = await eventually(lambda: launcher.pending())
    await eventually(lambda: (cluster.obj("trainingruns", old).get("status") or {}).get("appHandle"))

    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    old_run = await eventually(
        lambda: (r := cluster.obj("trainingruns", old))["status"]["phase"] == "Superseded" and r
    )
    assert old_run["status"]["reason"] == "Superseded"
    assert launcher.cancelled == [old]
    (new,) = await eventually(lambda: launcher.pending())
    assert new != old and new.startswith("a-")


async def test_deleting_a_run_cancels_its_job_through_the_finalizer(cluster, operator_factory):
    launcher = FakeLauncher()
    await operator_factory(launcher)
    await create(cluster, "modeltemplates", template())
    await create(cluster, "modelinstances", instance("a"))
    (run,) = await eventually(lambda: launcher.pending())
    body = await eventually(lambda: (r := cluster.obj("trainingruns", run)).get("status", {}).get("appHandle") and r)
    assert naming.FINALIZER in body["metadata"]["finalizers"]

    await delete(cluster, "trainingruns", run)
    await eventually(lambda: run in launcher.cancelled)
    # The finalizer was released and the object went away (the planner may then remake it).
    key = (cluster.resource_key("trainingruns"), "default", run)
    await eventually(lambda: None in list(cluster.objects[key].history))
