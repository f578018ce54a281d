"""Bad input becomes a specific condition and one Warning Event; the operator never retries it hot."""

from __future__ import annotations

from operator_harness import condition, create, eventually, patch


def template(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_bad_template_gets_stalled_condition_naming_the_field_and_one_event(cluster, operator_factory):
    op = await operator_factory()
    # Duplicate technique names: the CRD's CEL rule would refuse it; kmock has no schema checks,
    # so this is also what an operator sees if the CRD is older than the operator.
    bad = template("ctr", techniques=[{"name": "dcnv2-cross"}, {"name": "dcnv2-cross"}])
    await create(cluster, "modeltemplates", bad)

    obj = await eventually(lambda: condition(cluster.obj("modeltemplates", "ctr"), "Stalled") and cluster.obj("modeltemplates", "ctr"))
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == "InvalidSpec"
    assert "techniques" in stalled["message"] and "dcnv2-cross" in stalled["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["observedGeneration"] == 1
    events = await eventually(lambda: cluster.events("ctr"))
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "InvalidSpec")]
    assert cluster.objs("trainingruns") == []

    # An edit of the still-bad template (a label) re-plans but writes no new status or Event.
    op_writes = len(cluster.writes)
    plans = op.ctx.plans
    await patch(cluster, "modeltemplates", "ctr", {"metadata": {"labels": {"team": "ads"}}})
    await eventually(lambda: op.ctx.plans > plans)
    new = [w for w in cluster.writes[op_writes:] if w[3] == "status" or w[1] == "events"]
    assert new == []
    assert len(cluster.events("ctr")) == 1
