"""A launcher whose jobs do what the test says, behind the protocol of `operator/launcher.py`.

Shared by the planner/run unit tests, the kopf integration tests and the propagation benchmark:
GPUs and a cluster's job controller cannot run here, everything around them does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from modelfleet.operator.diagnose import JobState

_LIVE = ("PENDING", "RUNNING")


class FakeLauncher:
    """A new job starts in `initial` state until the test calls `finish(run, ok)`; `auto` decides
    every new job's outcome at once (`"succeed"`, `"fail"`, None = stay live). `metrics(run_name)`
    is what a succeeded job "wrote" (read back through `read_metrics(output_uri)`). Like a real
    scheduler it outlives an operator restart: pass the same instance to the next operator.
    """

    scheduler = "fake"
    initial = "PENDING"

    def __init__(self, auto: str | None = None, metrics: Callable[[str], dict[str, Any]] | None = None):
        self.auto = auto
        self.metrics_for = metrics or (lambda run: {"ne": 0.80, "auc": 0.75, "calibration": 1.0})
        self.jobs: dict[str, dict[str, Any]] = {}  # handle -> {run, attempt, state, ...}
        self.submitted: list[tuple[str, int]] = []  # (run, attempt), one per submit call
        self.cancelled: list[str] = []
        self._seq = itertools.count(1)
        # (run, attempt) -> handle: `find` is called once per new run, from the operator's worker
        # threads while others submit; a scan of `jobs` would be O(jobs) and could see it resized.
        self._handles: dict[tuple[str, int], str] = {}

    def submit(self, run_name: str, attempt: int, spec: Any, labels: dict[str, str]) -> str:
        handle = f"fake://{run_name}-{attempt}-{next(self._seq)}"
        state = {"succeed": "SUCCEEDED", "fail": "FAILED"}.get(self.auto or "", self.initial)
        self.jobs[handle] = {"run": run_name, "attempt": attempt, "state": state, "labels": labels, "spec": spec}
        self._handles.setdefault((run_name, attempt), handle)  # the first one, as a scan would find
        self.submitted.append((run_name, attempt))
        return handle

    def find(self, run_name: str, attempt: int, *, labels: dict[str, str] | None = None) -> str | None:
        return self._handles.get((run_name, attempt))

    def state(self, handle: str) -> JobState:
        job = self.jobs.get(handle)
        if job is None:
            return JobState("UNKNOWN")
        return JobState(job["state"], job.get("reason"), job.get("message"))

    def cancel(self, handle: str) -> None:
        job = self.jobs.get(handle)
        if job and job["state"] in _LIVE:
            job["state"] = "CANCELLED"
            self.cancelled.append(job["run"])

    def finish(self, run: str, ok: bool = True, reason: str | None = None, message: str | None = None) -> None:
        for job in list(self.jobs.values()):
            if job["run"] == run and job["state"] in _LIVE:
                job.update(state="SUCCEEDED" if ok else "FAILED", reason=reason, message=message)

    def pending(self) -> list[str]:
        return sorted(j["run"] for j in list(self.jobs.values()) if j["state"] in _LIVE)

    def read_metrics(self, output_uri: str) -> dict[str, Any] | None:
        return self.metrics_for(output_uri.rstrip("/").rsplit("/", 1)[-1])
