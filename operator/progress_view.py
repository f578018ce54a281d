"""`modelfleet local`'s live view: per instance its revision, phase, training progress, NE, reason.

On a terminal a `rich` table redrawn in place (a bar, step/total, loss, examples/s and ETA per
training run); otherwise plain lines, one when a row changes -- for progress, when it moves by
`PLAIN_PROGRESS_STEP` percentage points or the run reaches its last step, so a log stays short.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from modelfleet.trainer.progress import Progress

PLAIN_PROGRESS_STEP = 10  # percent


@dataclass(frozen=True)
class Row:
    instance: str
    revision: str
    phase: str
    ne: str
    reason: str
    progress: Progress | None = None  # the active run's latest progress.json, while it trains


def progress_text(p: Progress | None) -> str:
    return p.describe() if p is not None else ""


class PlainView:
    """One line per change; for a stream that is not a terminal (a log, a pipe, a test)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self._last: dict[str, tuple] = {}

    def show(self, rows: list[Row], footer: str) -> None:
        for r in rows:
            p = r.progress
            mark = (p.percent // PLAIN_PROGRESS_STEP, p.step >= p.total_steps) if p else None
            key = (r.revision, r.phase, r.ne, r.reason, mark)
            if self._last.get(r.instance) == key:
                continue
            self._last[r.instance] = key
            line = f"{r.instance}: revision {r.revision} {r.phase}"
            if p is not None:
                line += f" {progress_text(p)}"
            line += f" NE {r.ne} {r.reason}"
            self.stream.write(line.rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def render(rows: list[Row], footer: str) -> Any:
    """The rich table of the live view."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, caption=footer, caption_justify="left")
    for name in ("INSTANCE", "REVISION", "PHASE", "PROGRESS", "", "NE", "REASON"):
        table.add_column(name, no_wrap=name != "REASON")
    for r in rows:
        p = r.progress
        bar: Any = ProgressBar(total=max(1, p.total_steps), completed=p.step, width=20) if p else Text("")
        table.add_row(r.instance, r.revision, r.phase, bar, progress_text(p), r.ne, r.reason)
    return table


class RichView:
    """A table redrawn in place on a terminal (rich's Live display)."""

    def __init__(self, stream: Any, console: Any = None):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(file=stream)
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def show(self, rows: list[Row], footer: str) -> None:
        self.live.update(render(rows, footer), refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_view(stream: Any = None) -> PlainView | RichView:
    stream = stream or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return RichView(stream) if tty else PlainView(stream)
