"""A run's progress file, `<outputUri>/progress.json`: written by the trainer, read by
`modelfleet local` and the operator (torch-free, so the operator can import it).

Rank 0 rewrites the file atomically (a temporary file moved over it) at most every
`every_seconds`, plus once at the last step, so a reader never sees a half-written file and an
object store is not written on every step. The field names follow Kubeflow Trainer's progress
proposal (KEP-2779) where they fit: `progressPercentage`, `estimatedRemainingSeconds`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

PROGRESS_FILE = "progress.json"
WRITE_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss: float | None
    examples_per_second: float | None
    estimated_remaining_seconds: int | None
    updated_at: float  # unix seconds

    @property
    def percent(self) -> int:
        return min(100, int(100 * self.step / self.total_steps)) if self.total_steps > 0 else 0

    def wire(self) -> dict[str, Any]:
        """The camelCase form of the file (and of TrainingRun `status.progress`, minus updatedAt)."""
        out = {_camel(k): v for k, v in asdict(self).items()}
        out["progressPercentage"] = self.percent
        return out

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Progress:
        return cls(**{f.name: raw.get(_camel(f.name)) for f in fields(cls)})

    def describe(self) -> str:
        """One line: `90/186 48% epoch 1 loss 0.5364 1,234 ex/s ETA 0:42` (no ETA once done)."""
        parts = [f"{self.step}/{self.total_steps}", f"{self.percent}%", f"epoch {self.epoch}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.examples_per_second is not None:
            parts.append(f"{self.examples_per_second:,.0f} ex/s")
        if self.estimated_remaining_seconds is not None and self.step < self.total_steps:
            parts.append(f"ETA {format_seconds(self.estimated_remaining_seconds)}")
        return " ".join(parts)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def format_seconds(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_path(output_uri: str) -> str:
    return output_uri.rstrip("/") + "/" + PROGRESS_FILE


def read_progress(output_uri: str) -> Progress | None:
    """The run's latest progress, None while it has none (not started, or an unreadable file)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(progress_path(output_uri))
        with fs.open(path, "r") as fh:
            return Progress.from_wire(json.load(fh))
    except (FileNotFoundError, OSError, ValueError, TypeError):
        return None


class ProgressWriter:
    """Called once per training step; writes the file when it is due (rank 0 only)."""

    def __init__(
        self,
        output_uri: str,
        total_steps: int,
        start_step: int,
        *,
        enabled: bool = True,
        every_seconds: float = WRITE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        import fsspec

        self.fs, self.path = fsspec.core.url_to_fs(progress_path(output_uri))
        self.total, self.start_step, self.enabled = total_steps, start_step, enabled
        self.every, self.clock, self.wall_clock = every_seconds, clock, wall_clock
        self.t0 = clock()
        self.last_write: float | None = None
        self.writes = 0

    def update(self, step: int, epoch: int, loss: float, examples: int) -> Progress | None:
        """Record `step` (after it ran); `examples` counts this process's examples since start."""
        if not self.enabled:
            return None
        now = self.clock()
        due = self.last_write is None or now - self.last_write >= self.every or step >= self.total
        if not due:
            return None
        elapsed = now - self.t0
        done = step - self.start_step
        eta = round((self.total - step) * elapsed / done) if done > 0 and elapsed > 0 else None
        p = Progress(
            step=step,
            total_steps=self.total,
            epoch=epoch,
            loss=loss if loss == loss else None,  # NaN is not JSON
            examples_per_second=round(examples / elapsed, 1) if elapsed > 0 else None,
            estimated_remaining_seconds=eta,
            updated_at=round(self.wall_clock(), 3),
        )
        self._write(p)
        self.last_write = now
        return p

    def _write(self, p: Progress) -> None:
        folder = self.path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        tmp = self.path + ".tmp"
        with self.fs.open(tmp, "w") as fh:
            json.dump(p.wire(), fh)
        self.fs.mv(tmp, self.path)
        self.writes += 1
