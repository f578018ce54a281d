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


async def test_missing_data_is_found_before_queueing_once_per_change(cluster, operator_factory, tmp_path):
    from operator_harness import instance

    op = await operator_factory()
    await create(cluster, "modeltemplates", template("ctr", rollout={"canary": {"count": 0}}))
    data = {"format": "csv", "trainUri": str(tmp_path / "missing.csv"), "denseColumns": ["x"], "sparseColumns": ["c"]}
    await create(cluster, "modelinstances", instance("lost", data=data))

    obj = await eventually(lambda: condition(cluster.obj("modelinstances", "lost"), "Stalled") and cluster.obj("modelinstances", "lost"))
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "DataNotFound"
    assert ready["message"].startswith("spec.data.trainUri: ") and "missing.csv" in ready["message"]
    events = await eventually(lambda: cluster.events("lost"))  # Events are written after the status
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "DataNotFound")]
    assert cluster.objs("trainingruns") == []

    # Plans keep coming (resync, other events); the data is not looked at again, the instance is
    # not written again and gets no second Event.
    plans, writes = op.ctx.plans, len(cluster.writes)
    await eventually(lambda: op.ctx.plans >= plans + 3)
    assert op.ctx.data_checks.calls == 1
    assert [w for w in cluster.writes[writes:] if w[1] == "modelinstances"] == []
    assert len(cluster.events("lost")) == 1 and cluster.objs("trainingruns") == []

    # The file arrives and the instance is edited: checked again, and it trains.
    (tmp_path / "here.csv").write_text("x,c,click\n1,a,0\n2,b,1\n")
    await patch(cluster, "modelinstances", "lost", {"spec": {"data": {**data, "trainUri": str(tmp_path / "here.csv")}}})
    await eventually(lambda: cluster.objs("trainingruns"))
    assert op.ctx.data_checks.calls == 2


async def test_a_permanent_failure_is_not_retried_and_its_reason_reaches_instance_and_template(cluster, operator_factory):
    from operator_harness import FakeLauncher, instance

    launcher = FakeLauncher()
    await operator_factory(launcher)
    await create(cluster, "modeltemplates", template("ctr", rollout={"canary": {"count": 0}, "maxRetries": 3, "backoffSeconds": 1}))
    await create(cluster, "modelinstances", instance("a"))
    await eventually(lambda: launcher.pending())
    [run] = launcher.pending()
    launcher.finish(run, ok=False, reason="InvalidLabels", message="pod p container c exited with code 5: spec.event: 'click' is not binary")

    obj = await eventually(lambda: (r := cluster.obj("trainingruns", run)) and (r.get("status") or {}).get("phase") == "Failed" and r)
    assert obj["status"]["reason"] == "InvalidLabels" and obj["status"]["attempts"] == 1
    assert "not retried" in obj["status"]["message"]
    inst = await eventually(lambda: (o := cluster.obj("modelinstances", "a")) and condition(o, "Stalled")
                            and condition(o, "Stalled")["status"] == "True" and o)
    assert condition(inst, "Ready")["reason"] == "InvalidLabels" and "is not binary" in condition(inst, "Ready")["message"]
    tmpl = await eventually(lambda: (t := cluster.obj("modeltemplates", "ctr")) and "(InvalidLabels)" in (condition(t, "Ready") or {}).get("message", "") and t)
    assert condition(tmpl, "Ready")["status"] == "False"
    assert launcher.submitted == [(run, 1)]  # one attempt: no retry, though maxRetries is 3
