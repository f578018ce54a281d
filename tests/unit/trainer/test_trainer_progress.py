"""The progress file: written at a bounded rate, atomically, by rank 0 only; read torch-free."""

from __future__ import annotations

import json
from pathlib import Path

from modelfleet.trainer.progress import Progress, ProgressWriter, format_seconds, read_progress
from modelfleet.trainer.train import train


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_writes_at_most_every_interval_and_at_the_last_step(tmp_path):
    clock = Clock()
    w = ProgressWriter(str(tmp_path), total_steps=100, start_step=0, every_seconds=5.0, clock=clock, wall_clock=lambda: 1.7e9)
    written = []
    for step in range(1, 101):
        clock.t += 0.5  # a step every half second: 50 s in all
        if w.update(step, epoch=step // 40, loss=1.0 / step, examples=step * 32) is not None:
            written.append(step)
    # the first step, then every 10 steps (5 s), and the last one
    assert written == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100] and w.writes == len(written)
    p = read_progress(str(tmp_path))
    assert p == Progress(step=100, total_steps=100, epoch=2, loss=0.01, examples_per_second=64.0,
                         estimated_remaining_seconds=0, updated_at=1.7e9)
    assert not (tmp_path / "progress.json.tmp").exists()


def test_eta_rate_and_the_wire_form(tmp_path):
    clock = Clock()
    w = ProgressWriter(str(tmp_path), total_steps=186, start_step=40, clock=clock)
    clock.t += 10.0
    p = w.update(90, epoch=1, loss=0.5364, examples=50 * 256)  # 50 steps in 10 s since the resume
    assert p.estimated_remaining_seconds == 19  # 96 steps left at 5 steps/s
    assert p.examples_per_second == 1280.0 and p.percent == 48
    raw = json.loads((tmp_path / "progress.json").read_text())
    assert {k: raw[k] for k in ("step", "totalSteps", "epoch", "progressPercentage", "estimatedRemainingSeconds", "examplesPerSecond")} == {
        "step": 90, "totalSteps": 186, "epoch": 1, "progressPercentage": 48, "estimatedRemainingSeconds": 19, "examplesPerSecond": 1280.0}
    assert p.describe() == "90/186 48% epoch 1 loss 0.5364 1,280 ex/s ETA 0:19"
    assert format_seconds(3725) == "1:02:05"


def test_disabled_writer_writes_nothing_and_unreadable_files_read_as_none(tmp_path):
    w = ProgressWriter(str(tmp_path), 10, 0, enabled=False)
    assert w.update(1, 0, 0.5, 10) is None and not (tmp_path / "progress.json").exists()
    assert read_progress(str(tmp_path)) is None
    (tmp_path / "progress.json").write_text("{not json")
    assert read_progress(str(tmp_path)) is None


def test_training_leaves_a_finished_progress_file(make_spec):
    spec = make_spec(recipe={"steps": 12})
    train(spec)
    p = read_progress(spec.output_uri)
    assert (p.step, p.total_steps, p.percent, p.estimated_remaining_seconds) == (12, 12, 100, 0)
    assert p.loss > 0 and p.examples_per_second > 0
    assert Path(spec.output_uri, "serving", "model.ts").exists()
