"""What the planner decides, as plain data. The kopf handlers and `modelfleet local` apply these.

The planner (`modelfleet.operator.planner`) is a pure function from what is in the cluster
(one template, its instances, their runs, the time) to a `Plan`. Applying a plan is the only
place that writes: a kopf handler applies it through the Kubernetes API, `modelfleet local`
through a file-backed store, tests inspect it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from modelfleet.api.resources import Metrics, TrainingRunSpec

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class CreateRun:
    """Create TrainingRun `name` (deterministic: `<instance>-<revision>`) for `instance`."""

    instance: str
    name: str
    spec: TrainingRunSpec
    wave: int
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_uid: str | None = None  # the instance's uid: the run is owned by it (cascade delete)

    def body(self) -> dict[str, Any]:
        """The TrainingRun object to create (no status: the status subresource is written apart)."""
        from modelfleet.api.resources import API_VERSION

        meta: dict[str, Any] = {"name": self.name, "labels": dict(self.labels)}
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if self.owner_uid:
            meta["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelInstance",
                    "name": self.instance,
                    "uid": self.owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        return {
            "apiVersion": API_VERSION,
            "kind": "TrainingRun",
            "metadata": meta,
            "spec": self.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }


@dataclass(frozen=True)
class CancelRun:
    """Cancel the run's job and mark it Superseded or Cancelled (the run object stays for history)."""

    name: str
    phase: Literal["Superseded", "Cancelled"]
    reason: str
    message: str


@dataclass(frozen=True)
class DeleteRun:
    """Garbage-collect a finished run (history limit or TTL)."""

    name: str
    reason: str


@dataclass(frozen=True)
class PatchStatus:
    """Merge-patch the status of one object. `kind` is ModelTemplate, ModelInstance or TrainingRun."""

    kind: str
    name: str
    status: dict[str, Any]


@dataclass(frozen=True)
class Event:
    kind: str
    name: str
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Promote:
    """Record a succeeded run's model as the instance's promoted model."""

    instance: str
    run: str
    revision: str
    metrics: Metrics
    model_uri: str


Action = CreateRun | CancelRun | DeleteRun | PatchStatus | Event | Promote


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until the planner wants to look again (backoff, TTL)
    # Per instance: what the planner concluded and why ({"state", "reason", "message", "revision",
    # "flopsPerExample", ...}). Read by `modelfleet plan`/`local`; applying a plan ignores it.
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The template's computed status (also when unchanged, so no PatchStatus was emitted).
    template_status: dict[str, Any] = field(default_factory=dict)

    def of(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]
