"""`modelfleet local`'s live view: a rich table redrawn in place on a terminal, changed lines
otherwise; both show each training run's step/total, %, loss, examples/s and ETA."""

from __future__ import annotations

import io

from rich.console import Console

from modelfleet.operator.progress_view import PlainView, RichView, Row, make_view, progress_text
from modelfleet.trainer.progress import Progress


def _p(step: int, total: int = 186, eta: int | None = 42) -> Progress:
    return Progress(step=step, total_steps=total, epoch=1, loss=0.5364, examples_per_second=1234.4,
                    estimated_remaining_seconds=eta, updated_at=0.0)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_text():
    assert progress_text(_p(90)) == "90/186 48% epoch 1 loss 0.5364 1,234 ex/s ETA 0:42"
    assert progress_text(_p(186, eta=0)) == "186/186 100% epoch 1 loss 0.5364 1,234 ex/s"  # no ETA once done
    assert progress_text(None) == ""


def test_on_a_terminal_a_rich_table_is_redrawn_in_place():
    out = io.StringIO()
    view = RichView(out, console=Console(file=out, force_terminal=True, width=140, color_system=None))
    view.show([Row("adult-wife", "d6a44521c4", "Running", "-", "Training", _p(90)),
               Row("adult-husband", "68c646d740", "Pending", "-", "Queued")], "1 run(s) in flight, 12s")
    first = out.getvalue()
    for text in ("INSTANCE", "PROGRESS", "adult-wife", "90/186 48% epoch 1 loss 0.5364 1,234 ex/s ETA 0:42", "adult-husband", "Queued", "1 run(s) in flight, 12s"):
        assert text in first, text
    assert "━" in first  # the bar
    view.show([Row("adult-wife", "d6a44521c4", "UpToDate", "0.8704", "Promoted"),
               Row("adult-husband", "68c646d740", "Running", "-", "Training", _p(10))], "1 run(s) in flight, 14s")
    view.close()
    redraw = out.getvalue()[len(first):]
    assert "\x1b[" in redraw and "\x1b[2K" in redraw  # moved the cursor up and erased the old table
    assert "0.8704" in redraw and "10/186 5%" in redraw


def test_make_view_picks_rich_on_a_terminal_and_plain_lines_otherwise():
    tty = make_view(Tty())
    try:
        assert isinstance(tty, RichView)
    finally:
        tty.close()
    assert isinstance(make_view(io.StringIO()), PlainView)


def test_in_a_log_only_changes_are_printed_and_progress_every_ten_percent():
    out = io.StringIO()
    view = PlainView(out)
    for step in (1, 5, 18, 19, 40, 186):
        view.show([Row("a", "r1", "Running", "-", "Training", _p(step))], "")
        view.show([Row("a", "r1", "Running", "-", "Training", _p(step))], "")  # unchanged: nothing
    view.show([Row("a", "r1", "UpToDate", "0.7000", "Promoted")], "")
    assert out.getvalue().splitlines() == [
        "a: revision r1 Running 1/186 0% epoch 1 loss 0.5364 1,234 ex/s ETA 0:42 NE - Training",
        "a: revision r1 Running 19/186 10% epoch 1 loss 0.5364 1,234 ex/s ETA 0:42 NE - Training",
        "a: revision r1 Running 40/186 21% epoch 1 loss 0.5364 1,234 ex/s ETA 0:42 NE - Training",
        "a: revision r1 Running 186/186 100% epoch 1 loss 0.5364 1,234 ex/s NE - Training",
        "a: revision r1 UpToDate NE 0.7000 Promoted",
    ]
