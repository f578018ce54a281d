"""FileStore: the Store protocol on files, surviving a new process (a new FileStore on the folder)."""

from __future__ import annotations

from modelfleet.operator.store import FileStore


def body(name: str, **spec) -> dict:
    return {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelInstance", "metadata": {"name": name}, "spec": spec}


def test_round_trip_create_patch_delete(tmp_path):
    s = FileStore(tmp_path)
    created = s.create("ModelInstance", {**body("a", event="x"), "status": {"ignored": True}})
    assert created["metadata"]["generation"] == 1 and "status" not in created
    assert s.create("ModelInstance", body("a", event="y")) is None  # exists: the same object
    s.patch_status("ModelInstance", "a", {"targetRevision": "r1", "metrics": {"ne": 0.5, "auc": 0.7}})
    s.patch_status("ModelInstance", "a", {"metrics": {"ne": 0.4}, "activeRun": None})
    again = FileStore(tmp_path)  # another process
    obj = again.get("ModelInstance", "a")
    assert obj["spec"] == {"event": "x"}
    assert obj["status"] == {"targetRevision": "r1", "metrics": {"ne": 0.4, "auc": 0.7}}
    assert [o["metadata"]["name"] for o in again.list("ModelInstance")] == ["a"]
    assert again.patch_status("ModelInstance", "gone", {"x": 1}) is None
    assert again.delete("ModelInstance", "a") and not again.delete("ModelInstance", "a")
    assert again.get("ModelInstance", "a") is None


def test_put_bumps_generation_only_on_spec_change_and_keeps_status(tmp_path):
    s = FileStore(tmp_path)
    s.put("ModelInstance", body("a", event="x"))
    s.patch_status("ModelInstance", "a", {"observedGeneration": 1})
    writes = s.writes
    s.put("ModelInstance", body("a", event="x"))
    assert s.writes == writes  # unchanged: no write
    s.put("ModelInstance", {**body("a", event="x"), "metadata": {"name": "a", "labels": {"k": "v"}}})
    assert s.get("ModelInstance", "a")["metadata"]["generation"] == 1
    obj = s.put("ModelInstance", body("a", event="y"))
    assert obj["metadata"]["generation"] == 2 and obj["status"] == {"observedGeneration": 1}


def test_events_are_appended(tmp_path):
    s = FileStore(tmp_path)
    s.record_event("ModelInstance", "a", "Warning", "GateFailed", "worse")
    s.record_event("ModelInstance", "a", "Normal", "Promoted", "better")
    assert [e["reason"] for e in FileStore(tmp_path).events()] == ["GateFailed", "Promoted"]
