"""High availability and probes: two replicas peer through kopf's ClusterKopfPeering, only the
higher priority acts, the other takes over when it goes; the liveness endpoint answers."""

from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
import kmock
from operator_harness import FakeLauncher, create, eventually, instance, start_operator
from test_operator_rollout import template

from modelfleet.operator.main import peering_priority

PEERING = "modelfleet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peers(cluster) -> dict:
    obj = cluster.objects[kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"), None, PEERING]
    return {k: v for k, v in (obj.raw.get("status") or {}).items() if v and v.get("lifetime")}


class Replica:
    """One operator in a thread of its own, with its own event loop, like a pod of its own.

    Two kopf operators in one event loop are not two processes: on exit kopf cancels every task
    started after it (its "hung" tasks), which would include the other replica's daemons.
    """

    def __init__(self, url: str, launcher: FakeLauncher, priority: int):
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.op = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(url, launcher, priority),), daemon=True)
        self._thread.start()
        assert self._started.wait(30), "the replica did not start"

    async def _main(self, url: str, launcher: FakeLauncher, priority: int) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.op = await start_operator(url, launcher, peering=PEERING, priority=priority)
        self._started.set()
        await self._stop.wait()
        await self.op.stop()  # a crash: no graceful hand-over beyond what kopf does on its way out

    @property
    def plans(self) -> int:
        return self.op.ctx.plans

    @property
    def writes(self) -> int:
        return sum(store.writes for store in list(self.op.ctx._stores.values()))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def live_jobs(jobs: FakeLauncher) -> list[str]:
    return sorted(j["run"] for j in dict(jobs.jobs).values() if j["state"] in ("PENDING", "RUNNING"))


async def test_two_replicas_one_acts_the_other_takes_over(cluster):
    cluster.objects[kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"), None, PEERING] = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING},
    }
    url = str(cluster.url).rstrip("/")
    jobs = FakeLauncher()  # one job controller for both replicas, as in a cluster
    standby = await asyncio.to_thread(Replica, url, jobs, 10)
    active = await asyncio.to_thread(Replica, url, jobs, 20)
    try:
        await eventually(lambda: {p["priority"] for p in peers(cluster).values()} == {10, 20})

        await create(cluster, "modeltemplates", template(maxConcurrentRuns=3))
        for name in ("a", "b", "c"):
            await create(cluster, "modelinstances", instance(name))
        canary = (await eventually(lambda: live_jobs(jobs)))[0]
        await eventually(lambda: active.plans > 0)
        assert standby.plans == 0 and standby.writes == 0 < active.writes  # kopf holds the standby

        # The active replica goes away (a rolling update, a lost node): its peering record goes and
        # the standby resumes, adopting the job in flight rather than submitting it again.
        await asyncio.to_thread(active.stop)
        jobs.finish(canary)
        await eventually(lambda: len(live_jobs(jobs)) == 2, timeout=30)
        for run in live_jobs(jobs):
            jobs.finish(run)
        await eventually(
            lambda: all((cluster.obj("modelinstances", n) or {}).get("status", {}).get("promotedRevision") for n in "abc"),
            timeout=30,
        )
        assert standby.plans > 0
        assert len(jobs.submitted) == len(set(jobs.submitted)) == 3  # one job per instance, none twice
    finally:
        await asyncio.to_thread(standby.stop)
        await asyncio.to_thread(active.stop)


def test_replicas_draw_different_priorities_unless_one_is_given():
    # kopf pauses every operator that sees a live peer of its own priority: replicas must differ.
    drawn = {peering_priority(None) for _ in range(50)}
    assert len(drawn) == 50 and all(p > 0 for p in drawn)
    assert peering_priority(7) == 7


async def test_liveness_endpoint_reports_the_operator_alive(cluster, operator_factory):
    port = free_port()
    await operator_factory(liveness=f"http://127.0.0.1:{port}/healthz")

    # kopf serves the probe in the operator's event loop (this test's) and starts it a moment after
    # the operator is ready: ask asynchronously, until it listens.
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    status, body = resp.status, await resp.json()
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the liveness endpoint never listened")
    assert status == 200 and isinstance(body, dict)
