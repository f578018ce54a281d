"""A fix for kopf's index readiness gate, which is quadratic in the number of objects at startup.

With `@kopf.index` handlers, kopf holds every handler back until all indexed objects are indexed
(so a handler never reads a half-filled index). It does so with one `ToggleSet` for the whole
operator (`operator_indexed`) and, during the initial listing, one toggle per listed object. Each
object's worker indexes its object, drops its toggle and then waits for the set to be all clear.

In kopf 1.45.2 (`kopf._cogs.aiokits.aiotoggles.ToggleSet`) every `make_toggle`/`drop_toggle` calls
`notify_all()` on the set's shared `asyncio.Condition`, whether or not the set's state changed. So
each of the n toggles created and dropped wakes every worker already waiting at the gate; each
re-takes the lock, re-checks `is_on()` and goes back to sleep: O(n^2) task wake-ups before the
first handler runs. Measured with py-spy at 5,000 ModelInstances: 92% of the operator's CPU in
`ToggleSet.wait_for`/`make_toggle` -> `Condition.notify_all`, ~5 minutes before the first write
(at 1,000 it is seconds). A restart after a rollout lists the runs too, so it only gets worse.

The waiters on a set only ever wait for the set's aggregate state (`ToggleSet.wait_for`); a waiter
on a single toggle is woken by that toggle's own `turn_to`. So adding or dropping a toggle needs to
wake anyone only when it flips the aggregate state, which is what `install()` makes `make_toggle`,
`drop_toggle` and `drop_toggles` do: the gate then costs O(n) (one wake-up per waiter, when the last
toggle is dropped). Everything else about the set is kopf's.

It patches kopf's class in place (there is no seam to pass another set), only when the class still
looks like the one it was written against; otherwise it leaves kopf alone and logs why.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_modelfleet_wakes_on_change_only"


def install() -> bool:
    """Make kopf's ToggleSet wake its waiters only when its state flips. Idempotent.

    Returns whether the fix is in place.
    """
    try:
        from kopf._cogs.aiokits import aiotoggles
    except ImportError:  # kopf reorganised its internals: nothing to fix here any more
        log.warning("kopf's aiotoggles module is gone; its readiness gate is left as it is")
        return False
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, _MARK, False):
        return True
    probe = cls(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "_fn")) or not all(
        callable(getattr(cls, m, None)) for m in ("is_on", "make_toggle", "drop_toggle", "drop_toggles")
    ):
        log.warning("kopf's ToggleSet is not the one this fix was written for; left as it is")
        return False
    toggle_cls = aiotoggles.Toggle

    async def make_toggle(self: Any, val: bool = False, /, *, name: str | None = None) -> Any:
        toggle = toggle_cls(val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggles(self: Any, toggles: Any) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggle(self: Any, toggle: Any) -> None:
        await drop_toggles(self, (toggle,))

    cls.make_toggle = make_toggle
    cls.drop_toggle = drop_toggle
    cls.drop_toggles = drop_toggles
    setattr(cls, _MARK, True)
    return True
