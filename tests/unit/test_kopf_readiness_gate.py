"""kopf's index readiness gate, with `modelfleet.operator.kopf_compat` installed: O(n), same meaning.

The gate is the ToggleSet kopf builds at startup with one toggle per listed object; each object's
worker drops its toggle, then waits until the set is all clear. Each waiter re-checks the set's
state (`_fn` over the toggles) whenever it is woken, so counting `_fn` calls counts wake-ups.
"""

from __future__ import annotations

import asyncio

import kopf
from kopf._cogs.aiokits import aiotoggles

from modelfleet.operator import handlers, kopf_compat


def _counting_set() -> tuple[aiotoggles.ToggleSet, list[int]]:
    checks = [0]
    toggles = aiotoggles.ToggleSet(all)

    def counting_all(states):  # the set's own function, counted
        checks[0] += 1
        return all(states)

    toggles._fn = counting_all
    return toggles, checks


async def _startup_gate(n: int) -> tuple[int, list[int]]:
    """kopf's startup shape: n toggles made, then the workers drop theirs one after another
    (as their objects get indexed), each then waiting at the gate."""
    gate, checks = _counting_set()
    toggles = [await gate.make_toggle(name=f"object {i}") for i in range(n)]
    turns = [asyncio.Event() for _ in range(n)]
    released: list[int] = []

    async def worker(i: int) -> None:
        await turns[i].wait()
        await gate.drop_toggle(toggles[i])
        await gate.wait_for(True)
        released.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(n)]
    for turn in turns:
        turn.set()
        for _ in range(3):  # let whoever was woken run
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return checks[0], released


def test_register_installs_the_fix():
    handlers.register(kopf.OperatorRegistry())
    assert getattr(aiotoggles.ToggleSet, kopf_compat._MARK, False)
    assert kopf_compat.install()  # idempotent


def test_the_gate_wakes_each_waiter_about_once_not_once_per_object():
    assert kopf_compat.install()
    n = 400
    checks, released = asyncio.run(_startup_gate(n))
    assert sorted(released) == list(range(n))
    # Unfixed, every drop wakes every worker already waiting: about n^2/2 = 80,000 checks.
    assert checks < 10 * n, checks


def test_waiters_are_held_until_the_last_toggle_is_dropped():
    assert kopf_compat.install()

    async def scenario() -> None:
        gate = aiotoggles.ToggleSet(all)
        a = await gate.make_toggle(name="a")
        b = await gate.make_toggle(name="b")
        waiter = asyncio.create_task(gate.wait_for(True))
        await gate.drop_toggle(a)
        await asyncio.sleep(0.01)
        assert not waiter.done()  # b still holds the gate
        await gate.drop_toggles([b])
        await asyncio.wait_for(waiter, timeout=5)

        # The other direction: a new "off" toggle closes an open gate, and wakes who waits for that.
        closed = asyncio.create_task(gate.wait_for(False))
        await asyncio.sleep(0.01)
        assert not closed.done()
        c = await gate.make_toggle(name="c")
        await asyncio.wait_for(closed, timeout=5)

        # A toggle's own turn_to still wakes the set's waiters (kopf's peering pauses use it).
        reopened = asyncio.create_task(gate.wait_for(True))
        await asyncio.sleep(0.01)
        assert not reopened.done()
        await c.turn_to(True)
        await asyncio.wait_for(reopened, timeout=5)

    asyncio.run(scenario())


def test_an_any_set_flips_only_on_its_own_state():
    """kopf's pause set is `any`: adding an "on" toggle pauses, dropping it resumes."""
    assert kopf_compat.install()

    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)
        off = await paused.make_toggle(False, name="quiet")
        assert paused.is_off()
        pausing = asyncio.create_task(paused.wait_for(True))
        await asyncio.sleep(0.01)
        assert not pausing.done()
        on = await paused.make_toggle(True, name="peer seen")
        await asyncio.wait_for(pausing, timeout=5)
        resuming = asyncio.create_task(paused.wait_for(False))
        await paused.drop_toggle(off)
        await asyncio.sleep(0.01)
        assert not resuming.done()  # still one "on" toggle
        await paused.drop_toggle(on)
        await asyncio.wait_for(resuming, timeout=5)

    asyncio.run(scenario())
