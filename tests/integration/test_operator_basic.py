"""The basic loop: the real kopf operator writes an instance's status, with observedGeneration."""

from __future__ import annotations

from operator_harness import condition, create, eventually, instance, patch


async def test_instance_without_template_gets_status_with_observed_generation(cluster, operator_factory):
    await operator_factory()
    await create(cluster, "modelinstances", instance("surface-a", template="missing"))

    obj = await eventually(lambda: (o := cluster.obj("modelinstances", "surface-a")) and o.get("status") and o)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "TemplateNotFound"
    assert "missing" in stalled["message"] and "spec.templateRef.name" in stalled["message"]
    assert condition(obj, "Ready")["status"] == "False"
    # Events are written after the status (docs/architecture.md): wait for it, do not race it
    events = await eventually(lambda: cluster.events("surface-a"))
    assert [e["reason"] for e in events] == ["TemplateNotFound"] and events[0]["type"] == "Warning"

    # A spec edit is a new generation; the operator catches up with it.
    await patch(cluster, "modelinstances", "surface-a", {"spec": {"event": "purchase"}})
    obj = await eventually(
        lambda: (o := cluster.obj("modelinstances", "surface-a"))["status"]["observedGeneration"] == 2 and o
    )
    assert obj["metadata"]["generation"] == 2
