"""status.progress: the trainer's progress.json copied into the TrainingRun at a bounded rate."""

from __future__ import annotations

import datetime as dt

from op_world import T0, FakeLauncher, instance, template

from modelfleet.api.resolve import resolve_training_spec
from modelfleet.api.resources import TrainingRun, TrainingRunSpec
from modelfleet.operator.config import OperatorConfig
from modelfleet.operator.runs import reconcile_run
from modelfleet.operator.status import merge_patch
from modelfleet.trainer.progress import ProgressWriter


def _run(output_uri: str) -> TrainingRun:
    spec = TrainingRunSpec(instance="a", revision="rev", training=resolve_training_spec(template(), instance("a"), output_uri=output_uri))
    return TrainingRun.model_validate({"metadata": {"name": "a-rev"}, "spec": spec.model_dump(by_alias=True)})


def _apply(run: TrainingRun, patch: dict | None) -> TrainingRun:
    if not patch:
        return run
    body = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["status"] = merge_patch(body.get("status"), patch)
    return TrainingRun.model_validate(body)


def test_a_run_polled_every_second_writes_progress_at_most_once_per_interval(tmp_path):
    out = str(tmp_path / "run")
    launcher = FakeLauncher()
    launcher.initial = "RUNNING"
    run = _run(out)
    now = T0
    clock = [0.0]
    writer = ProgressWriter(out, total_steps=400, start_step=0, every_seconds=5.0, clock=lambda: clock[0],
                            wall_clock=lambda: (T0 + dt.timedelta(seconds=clock[0])).timestamp())
    patches: list[tuple[float, dict]] = []
    for second in range(0, 200):
        clock[0] = float(second)
        now = T0 + dt.timedelta(seconds=second)
        writer.update(2 * second + 1, epoch=0, loss=0.5, examples=(2 * second + 1) * 64)  # 2 steps a second
        upd = reconcile_run(run, launcher, now, read_metrics=lambda uri: {"ne": 0.7}, progress_seconds=30.0)
        if upd.status_patch and "progress" in upd.status_patch:
            patches.append((second, upd.status_patch["progress"]))
        run = _apply(run, upd.status_patch)
    times = [t for t, _ in patches]
    assert len(times) == 7  # seconds 1 (first file), 31, 61, ... 181: never two within 30 s
    assert all(b - a >= 30 for a, b in zip(times, times[1:], strict=False))
    p = run.status.progress
    assert p.total_steps == 400 and p.step == patches[-1][1]["step"] and 0 < p.progress_percentage < 100
    assert p.estimated_remaining_seconds is not None and p.examples_per_second > 0
    assert p.last_updated_time == "2026-01-01T12:03:01Z" and p.reported_time is not None

    # the job finishes: the success patch carries the final numbers, not one more write
    writer.update(400, epoch=1, loss=0.4, examples=400 * 64)
    launcher.finish("a-rev")
    upd = reconcile_run(run, launcher, now + dt.timedelta(seconds=2), read_metrics=lambda uri: {"ne": 0.7}, progress_seconds=30.0)
    run = _apply(run, upd.status_patch)
    assert run.status.phase == "Succeeded"
    assert (run.status.progress.step, run.status.progress.progress_percentage) == (400, 100)


def test_no_progress_file_or_an_unmoved_step_writes_nothing(tmp_path):
    out = str(tmp_path / "run")
    launcher = FakeLauncher()
    launcher.initial = "RUNNING"
    run = _run(out)
    run = _apply(run, reconcile_run(run, launcher, T0).status_patch)  # submit
    assert run.status.phase == "Running" and run.status.progress is None
    assert reconcile_run(run, launcher, T0 + dt.timedelta(seconds=60)).status_patch is None  # no file yet
    ProgressWriter(out, 10, 0).update(3, 0, 0.6, 96)
    run = _apply(run, reconcile_run(run, launcher, T0 + dt.timedelta(seconds=61)).status_patch)
    assert run.status.progress.step == 3
    # the trainer is stuck at step 3: due again, but nothing changed, so nothing is written
    assert reconcile_run(run, launcher, T0 + dt.timedelta(seconds=200)).status_patch is None


def test_the_interval_is_a_config_value():
    assert OperatorConfig().progress_seconds == 30.0
    assert OperatorConfig.from_env({"MODELFLEET_PROGRESS_SECONDS": "120"}).progress_seconds == 120.0
