"""Applying a plan: the only place the planner's decisions become writes.

Public API (stable; the kopf daemon applies through `kube.KubeStore`, `modelfleet local` through
`store.FileStore`):

    apply_plan(plan, store, *, launcher=None, now=None) -> int   # number of writes issued

Order and write economy:
- CancelRun, CreateRun, DeleteRun, status patches, then Events (an Event is never the only
  write that happened before a crash, so a restarted operator does not repeat it forever).
- CancelRun before CreateRun, so a slot freed by a superseded run is reused in the same plan.
  With a `launcher`, the run's job is cancelled through `runs.cancel_run` (its status and Event are
  written here); without one only the status changes (the caller cancels jobs itself).
- `Promote` adds no write of its own: the planner's PatchStatus of the same instance already
  carries the promoted revision, metrics, model URI and techniques. A Promote without such a
  PatchStatus (a hand-made plan) is written as one status patch.
- Creates that find the object already there (a restart, a 409) are fine: the name is
  deterministic, so it is the same run.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from modelfleet.api.resources import TrainingRun
from modelfleet.operator.actions import CancelRun, CreateRun, DeleteRun, Event, PatchStatus, Plan, Promote

log = logging.getLogger(__name__)


def _promoted_status(p: Promote, techniques: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "promotedRevision": p.revision,
        "metrics": p.metrics.model_dump(mode="json", by_alias=True, exclude_none=True),
        "modelUri": p.model_uri,
        "activeRun": None,
    }
    if techniques is not None:
        out["techniques"] = techniques
    return out


def apply_plan(plan: Plan, store: Any, *, launcher: Any = None, now: dt.datetime | None = None) -> int:
    from modelfleet.operator import metrics
    from modelfleet.operator import runs as core_runs

    now = now or dt.datetime.now(dt.UTC)
    writes = 0
    patched = {(a.kind, a.name) for a in plan.of(PatchStatus)}
    deferred: list[Event] = []
    for action in plan.of(CancelRun):
        body = store.get("TrainingRun", action.name)
        if body is None:
            continue
        try:
            run = TrainingRun.model_validate({k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec", "status") if body.get(k) is not None})
        except Exception:  # an unreadable run: still mark it, there is no job handle to cancel
            store.patch_status("TrainingRun", action.name, {"phase": action.phase, "reason": action.reason, "message": action.message})
            writes += 1
            continue
        update = core_runs.cancel_run(
            run, launcher, now, phase=action.phase, reason=action.reason, message=action.message
        )
        if update.status_patch:
            store.patch_status("TrainingRun", action.name, update.status_patch)
            metrics.observe_run(run, update.status_patch)
            writes += 1
        deferred.extend(update.events)
    # State first, Events last: an Event is not state, so a crash between writes must never leave
    # an Event as the only thing done (the next plan would emit it again, and again).
    for action in plan.of(CreateRun):
        store.create("TrainingRun", action.body())
        writes += 1
    for action in plan.of(DeleteRun):
        store.delete("TrainingRun", action.name)
        writes += 1
    for action in plan.of(PatchStatus):
        store.patch_status(action.kind, action.name, action.status)
        writes += 1
    for action in plan.of(Promote):
        if ("ModelInstance", action.instance) not in patched:
            run = store.get("TrainingRun", action.run) or {}
            techniques = [t["name"] for t in ((run.get("spec") or {}).get("training") or {}).get("techniques", [])]
            store.patch_status("ModelInstance", action.instance, _promoted_status(action, techniques if run else None))
            writes += 1
    for action in [*deferred, *plan.of(Event)]:
        store.record_event(action.kind, action.name, action.type, action.reason, action.message)
        writes += 1
    return writes
