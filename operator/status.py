"""Status computation helpers: kstatus conditions, and "is this status news?".

Public functions (stable; the planner, the run reconciler and the kopf handlers use them):
- `timestamp(now: datetime) -> str`: RFC 3339 UTC, second precision (what Kubernetes writes).
- `condition(type_, status, reason, message, generation, now, previous=None) -> dict`: one
  condition; `lastTransitionTime` is kept from `previous` (the object's current conditions) when
  the condition's status did not flip, as kstatus and `kubectl wait` expect.
- `conditions(ready, reconciling, stalled, generation, now, previous) -> list[dict]`: the three
  kstatus conditions from `(status, reason, message)` triples.
- `stalled(reason, message, generation, now, previous) -> list[dict]`: Ready=False, Stalled=True,
  Reconciling=False -- what a problem that needs a user's fix looks like.
- `status_changed(current: dict | None, new: dict) -> bool`: whether merge-patching `new` onto
  `current` would change anything, ignoring `lastTransitionTime` (so re-planning an unchanged
  world writes nothing). A `None` in `new` means "remove", as in a JSON merge patch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

Triple = tuple[str, str, str]  # (status "True"/"False", reason, message)


def timestamp(now: dt.datetime) -> str:
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        out = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return out if out.tzinfo else out.replace(tzinfo=dt.UTC)


def find(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """The condition of `type_` among `conditions`, or None."""
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return None


def condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
    previous: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    old = find(previous, type_)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or timestamp(now),
        "observedGeneration": generation,
    }


def conditions(
    ready: Triple,
    reconciling: Triple,
    stalled: Triple,
    generation: int | None,
    now: dt.datetime,
    previous: Iterable[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    previous = list(previous or ())
    return [
        condition("Ready", *ready, generation, now, previous),
        condition("Reconciling", *reconciling, generation, now, previous),
        condition("Stalled", *stalled, generation, now, previous),
    ]


def stalled(
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
    previous: Iterable[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    return conditions(
        ("False", reason, message),
        ("False", reason, message),
        ("True", reason, message),
        generation,
        now,
        previous,
    )


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "lastTransitionTime" and v is not None}
    if isinstance(value, list):
        items = [_strip(v) for v in value]
        if all(isinstance(v, dict) and "type" in v for v in items):
            return sorted(items, key=lambda c: str(c.get("type")))
        return items
    return value


def status_changed(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    current = current or {}
    return _strip(merge_patch(current, new)) != _strip(current)


def merge_patch(target: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch (what the status subresource does with a dict body)."""
    out = dict(target or {})
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out
