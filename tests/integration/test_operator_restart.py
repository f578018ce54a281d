"""Restart safety: kill the operator at several points of a rollout; start a new one.

The jobs live in the FakeLauncher, which outlives each operator as a real scheduler would. After
every restart the rollout must complete with exactly one TrainingRun per instance x revision and
one job per run attempt: nothing is held in memory that the cluster does not also hold.
"""

from __future__ import annotations

from collections import Counter

from operator_harness import FakeLauncher, create, eventually, instance, patch
from test_operator_rollout import GRAD_CLIP, all_promoted, runs_at, template, tstatus

NAMES = ["a", "b", "c", "d"]


def assert_one_job_per_run(cluster, launcher: FakeLauncher, revision: str) -> None:
    runs = {r["metadata"]["name"] for r in runs_at(cluster, revision)}
    assert sorted(r["spec"]["instance"] for r in runs_at(cluster, revision)) == NAMES
    jobs = Counter(s for s in launcher.submitted if s[0] in runs)
    assert set(jobs) == {(r, 1) for r in runs}, jobs
    assert all(n == 1 for n in jobs.values()), jobs


async def start_rollout(cluster, operator_factory, launcher: FakeLauncher):
    op = await operator_factory(launcher)
    launcher.auto = "succeed"
    await create(cluster, "modeltemplates", template())
    for n in NAMES:
        await create(cluster, "modelinstances", instance(n))
    rev1 = await eventually(lambda: all_promoted(cluster, len(NAMES)))
    return op, rev1


async def test_restart_right_after_the_edit(cluster, operator_factory):
    launcher = FakeLauncher()
    op, rev1 = await start_rollout(cluster, operator_factory, launcher)
    launcher.auto = None
    # The edit lands and the operator dies before its debounced plan runs.
    op.ctx.debounce_seconds = 30
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    await eventually(lambda: cluster.obj("modeltemplates", "ctr")["metadata"]["generation"] == 2)
    await op.stop()
    assert tstatus(cluster)["revision"] == rev1

    launcher.auto = "succeed"
    await operator_factory(launcher)
    rev2 = await eventually(lambda: (r := all_promoted(cluster, 4)) != rev1 and r)
    assert_one_job_per_run(cluster, launcher, rev2)


async def test_restart_mid_wave_while_jobs_finish(cluster, operator_factory):
    launcher = FakeLauncher()
    op, rev1 = await start_rollout(cluster, operator_factory, launcher)
    launcher.auto = None
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    rev2 = await eventually(lambda: (r := tstatus(cluster).get("revision")) != rev1 and r)
    (canary,) = await eventually(lambda: launcher.pending())
    launcher.finish(canary)
    await eventually(lambda: len(launcher.pending()) == 2)  # the first wave is submitted

    await op.stop()
    for name in launcher.pending():  # the jobs finish while no operator runs
        launcher.finish(name)

    launcher.auto = "succeed"
    await operator_factory(launcher)
    assert await eventually(lambda: all_promoted(cluster, 4)) == rev2
    assert_one_job_per_run(cluster, launcher, rev2)


async def test_restart_between_submit_and_status_write_adopts_the_job(cluster, operator_factory):
    launcher = FakeLauncher()
    op, rev1 = await start_rollout(cluster, operator_factory, launcher)
    launcher.auto = None
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    (canary,) = await eventually(lambda: launcher.pending())
    await eventually(lambda: (cluster.obj("trainingruns", canary).get("status") or {}).get("appHandle"))
    await op.stop()
    # As if the operator had died after submitting but before recording the handle.
    key = (cluster.resource_key("trainingruns"), "default", canary)
    cluster.objects[key]["status"] = {}

    launcher.auto = "succeed"
    await operator_factory(launcher)
    await eventually(lambda: any(e["reason"] == "Adopted" for e in cluster.events(canary)))
    launcher.finish(canary)
    rev2 = await eventually(lambda: (r := all_promoted(cluster, 4)) != rev1 and r)
    assert_one_job_per_run(cluster, launcher, rev2)


async def test_killed_after_every_write_still_converges(cluster, operator_factory):
    """Crash right after the operator's first write of every life, until the rollout is done."""
    launcher = FakeLauncher()
    op, rev1 = await start_rollout(cluster, operator_factory, launcher)
    await patch(cluster, "modeltemplates", "ctr", {"spec": {"techniques": [GRAD_CLIP]}})
    lives = 0
    while not ((r := all_promoted(cluster, 4)) and r != rev1):
        mark = len(cluster.writes)
        try:
            await eventually(lambda: len(cluster.writes) > mark or ((r := all_promoted(cluster, 4)) and r != rev1))
        except AssertionError:
            runs = [(r["metadata"]["name"], r.get("status")) for r in cluster.objs("trainingruns")]
            raise AssertionError(f"life {lives}: no progress; template {tstatus(cluster)}; runs {runs}") from None
        await op.stop()
        lives += 1
        op = await operator_factory(launcher)
        assert lives < 200, "the rollout does not converge across restarts"
    assert lives >= 3  # the rollout really was interrupted, several times
    assert_one_job_per_run(cluster, launcher, all_promoted(cluster, 4))
