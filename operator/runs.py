"""The TrainingRun lifecycle, pure over a launcher: submit or adopt, poll, retry, finish.

Public API (stable; the kopf `run_monitor` daemon and `modelfleet local` call these):
- `reconcile_run(run, launcher, now, *, policy=RolloutSpec(), read_metrics=read_metrics_json,
  read_failure=read_failure_json) -> RunUpdate(status_patch, events, requeue_after)`: one step of one run. The caller merge-patches
  `status_patch` (None: nothing changed, write nothing), records `events`, and calls again after
  `requeue_after` seconds (None: the run is finished, stop).
- `cancel_run(run, launcher, now, *, phase="Cancelled", reason="Cancelled", message=...)
  -> RunUpdate`: cancel the run's job (best effort) and finish the run (supersede, delete).
- `read_metrics_json(output_uri) -> dict | None`: `<output_uri>/metrics.json` through fsspec.
- `read_failure_json(output_uri, since) -> dict | None`: the trainer's `failure.json`, if not older
  than `since`; `classify_failure(reason, message, failure) -> (reason, message, permanent)`.
- `job_phase(state) -> (phase, reason, message)`: a launcher's state, normalised.

Lifecycle:
- no job yet (phase unset/Pending, no `appHandle`): after `nextAttemptAt`, attempt = attempts + 1;
  `launcher.find(run, attempt)` first -- a job submitted just before a crash is adopted, never
  submitted twice -- else `launcher.submit(...)`. The handle, scheduler, attempt and startTime are
  written at once (one patch) so a restart finds them.
- a job: `launcher.state(handle)`; a status patch only when phase/reason/message changed.
- the job failed: if attempts <= policy.maxRetries, back to Pending with `nextAttemptAt = now +
  backoffSeconds * 2**(attempt-1)`; else phase Failed with the job's specific reason
  (ImagePullBackOff, Unschedulable, Inadmissible, DeadlineExceeded, ...), which the planner
  bubbles up to the instance.
- a permanent failure -- bad input, which fails the same way however often it is tried -- is Failed
  at once, without a retry: the launcher's reason is one of `PERMANENT_REASONS` (the trainer's
  exit code, `trainer/report.py`), or the trainer's `failure.json` under the run's outputUri names
  a permanent code. failure.json's message (which names the field) wins when it is readable; a
  file older than the run (left by a deleted run of the same name) is ignored.
- the job succeeded: metrics.json is read into `status.metrics` (its paired `comparison` into
  `status.comparison`); a succeeded job without metrics is a failed run (reason MetricsMissing),
  and one whose NE is absent, not finite or undefined (empty or one-class eval) is Failed with
  reason MetricUndefined -- a model nobody can gate is never promoted.
- progress: while the job is Running, `<outputUri>/progress.json` (trainer/progress.py) is copied
  into `status.progress`, at most once per `progress_seconds` (the last copy's `lastUpdatedTime`
  in the status bounds it, so a restart keeps the bound) and only when the step moved; the success
  patch carries the final numbers.
- a finished run is left alone.
- Events: Warnings (a pending job's problem, a failure, a retry), adoption after a restart and
  cancellation. A routine submit, start or success is in the status alone: at thousands of runs
  per rollout an Event each would be most of the operator's API writes (the template's Events
  summarise each wave and its promotions).

The launcher protocol (operator/launcher.py): `submit(run_name, attempt, spec, labels) -> handle`,
`find(run_name, attempt) -> handle | None`, `state(handle) -> JobState(phase, reason, message)`,
`cancel(handle)`. `state` may also answer a bare phase string or a TorchX `AppState`; both are
understood.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelfleet.api.resources import FINISHED_PHASES, Comparison, Metrics, RolloutSpec, RunProgress, TrainingRun
from modelfleet.operator.actions import Event
from modelfleet.operator.naming import (
    LABEL_ATTEMPT,
    LABEL_INSTANCE,
    LABEL_REVISION,
    LABEL_RUN,
    LABEL_RUN_NAMESPACE,
    LABEL_RUN_UID,
    LABEL_TEMPLATE,
    label_value,
)
from modelfleet.operator.status import condition, parse_time, timestamp
from modelfleet.trainer.report import FAILURE_FILE, PERMANENT_EXIT_CODES, REASONS, ExitCode, reason_for

PERMANENT_REASONS: frozenset[str] = frozenset(REASONS[ExitCode(c)] for c in PERMANENT_EXIT_CODES)
# failure.json written before the run started is another run's; storage and operator clocks differ
# by a little, a rerun of a deleted run comes minutes later.
_CLOCK_SKEW = dt.timedelta(seconds=60)

log = logging.getLogger(__name__)

POLL_SECONDS = 10.0
PROGRESS_SECONDS = 30.0  # at most one progress write per run per this many seconds

# TorchX AppState names (and ours) -> run phase.
_PHASES = {
    "UNSUBMITTED": "Pending",
    "SUBMITTED": "Pending",
    "PENDING": "Pending",
    "QUEUED": "Pending",
    "RUNNING": "Running",
    "SUCCEEDED": "Succeeded",
    "FAILED": "Failed",
    "CANCELLED": "Cancelled",
    "UNKNOWN": "Unknown",
}


@dataclass
class RunUpdate:
    status_patch: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def job_phase(state: Any) -> tuple[str, str | None, str | None]:
    """(phase, reason, message) of whatever `launcher.state()` answered."""
    if state is None:
        return "Unknown", "JobLost", "the launcher no longer knows this job"
    phase = getattr(state, "phase", state)
    reason = getattr(state, "reason", None) or None
    message = getattr(state, "message", None) or None
    name = getattr(phase, "name", None) or str(phase)
    return _PHASES.get(name.upper(), name if name in FINISHED_PHASES + ("Pending", "Running") else "Unknown"), reason, message


def read_metrics_json(output_uri: str) -> dict[str, Any] | None:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(output_uri)
        with fs.open(root.rstrip("/") + "/metrics.json", "r") as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError, OSError) as exc:
        log.warning("no metrics.json under %s: %s", output_uri, exc)
        return None


def read_failure_json(output_uri: str, since: dt.datetime | None = None) -> dict[str, Any] | None:
    """`<output_uri>/failure.json` ({code, reason, field, message}) if written since `since`."""
    import fsspec

    from modelfleet.trainer.report import read_failure

    if since is not None:
        with contextlib.suppress(NotImplementedError, AttributeError, OSError, ValueError):
            fs, root = fsspec.core.url_to_fs(output_uri)
            modified = fs.modified(root.rstrip("/") + "/" + FAILURE_FILE)
            if modified.tzinfo is None:
                modified = modified.replace(tzinfo=dt.UTC)
            if modified < since - _CLOCK_SKEW:
                return None
    report = read_failure(output_uri)
    return report.model_dump(mode="json", by_alias=True) if report is not None else None


def classify_failure(reason: str, message: str, failure: dict[str, Any] | None) -> tuple[str, str, bool]:
    """(reason, message, permanent) of a failed job, from its launcher and the trainer's failure.json."""
    code = failure.get("code") if failure else None
    written = reason_for(code) if isinstance(code, int) else None
    if written is not None:
        assert failure is not None
        text = str(failure.get("message") or failure.get("reason") or written)
        field = failure.get("field")
        if field and str(field) not in text:
            text = f"{field}: {text}"
        return written, f"{text} (exit code {code})", True
    return reason, message, reason in PERMANENT_REASONS


def _metrics(raw: dict[str, Any]) -> dict[str, Any]:
    """The part of metrics.json that `status.metrics` holds (its schema rejects other keys)."""
    known = {}
    for name, f in Metrics.model_fields.items():
        for key in (f.alias, name):
            if key and key in raw and raw[key] is not None:
                known[name] = raw[key]
                break
    return Metrics.model_validate(known).model_dump(mode="json", by_alias=True, exclude_none=True)


def metric_undefined(raw: dict[str, Any]) -> str | None:
    """Why metrics.json's NE cannot gate anything (absent, not finite, empty or one-class eval), or None."""
    ne = raw.get("ne")
    if not isinstance(ne, int | float) or isinstance(ne, bool):
        return f"its NE is {'absent' if ne is None else repr(ne)}"
    if not math.isfinite(ne) or ne <= 0:
        return f"its NE is {ne!r}, not a finite positive number"
    n, pos = raw.get("examples"), raw.get("positives")
    if n == 0:
        return "it evaluated 0 examples: NE is undefined"
    if isinstance(n, int) and isinstance(pos, int) and pos in (0, n):
        return f"its {n} eval examples are all of one class ({pos} positives): NE is undefined (NE {ne:.4g})"
    return None


def _comparison(raw: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's `comparison`, as `status.comparison` holds it (non-finite numbers dropped)."""
    keep = {k: v for k, v in raw.items() if not (isinstance(v, float) and not math.isfinite(v))}
    fields = {f.alias or n for n, f in Comparison.model_fields.items()}
    return Comparison.model_validate({k: v for k, v in keep.items() if k in fields}).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def read_progress_json(output_uri: str) -> Any:
    from modelfleet.trainer.progress import read_progress

    return read_progress(output_uri)


def _progress(run: TrainingRun, now: dt.datetime, read_progress: Callable[[str], Any], every: float) -> dict[str, Any] | None:
    """The `status.progress` to write now, or None (not due, no file yet, or the step did not move)."""
    old = run.status.progress if run.status else None
    last = parse_time(old.last_updated_time) if old else None
    if last is not None and (now - last).total_seconds() < every:
        return None
    p = read_progress(run.spec.training.output_uri)
    if p is None or (old is not None and old.step == p.step):
        return None
    return RunProgress(
        step=p.step,
        total_steps=p.total_steps,
        epoch=p.epoch,
        loss=p.loss,
        examples_per_second=p.examples_per_second,
        progress_percentage=p.percent,
        estimated_remaining_seconds=p.estimated_remaining_seconds,
        reported_time=timestamp(dt.datetime.fromtimestamp(p.updated_at, dt.UTC)) if p.updated_at else None,
        last_updated_time=timestamp(now),
    ).wire()


def _event(run: TrainingRun, type_: str, reason: str, message: str) -> Event:
    return Event("TrainingRun", run.metadata.name, type_, reason, message)  # type: ignore[arg-type]


def job_labels(run: TrainingRun, attempt: int) -> dict[str, str]:
    """The job's labels: the run's own modelfleet labels plus run and attempt (adoption finds by them)."""
    group = LABEL_TEMPLATE.split("/")[0] + "/"
    labels = {k: v for k, v in run.metadata.labels.items() if k.startswith(group)}
    labels.setdefault(LABEL_INSTANCE, label_value(run.spec.instance))
    labels.setdefault(LABEL_REVISION, label_value(run.spec.revision))
    labels[LABEL_RUN] = label_value(run.metadata.name)
    labels[LABEL_ATTEMPT] = str(attempt)
    if run.metadata.uid:
        labels[LABEL_RUN_UID] = run.metadata.uid
    if run.metadata.namespace:
        labels[LABEL_RUN_NAMESPACE] = run.metadata.namespace
    return labels


def _failed_for_good(run: TrainingRun, attempt: int, reason: str, text: str, now: dt.datetime) -> RunUpdate:
    return RunUpdate(
        {"phase": "Failed", "attempts": attempt, "finishTime": timestamp(now), "reason": reason, "message": text},
        [_event(run, "Warning", reason, f"{run.metadata.name}: {text}")],
        None,
    )


def _failed(
    run: TrainingRun, attempt: int, reason: str, message: str, now: dt.datetime, policy: RolloutSpec, *, permanent: bool = False
) -> RunUpdate:
    name = run.metadata.name
    if permanent:
        message += "; not retried: the same input fails the same way (fix it, then delete this run to train again)"
    elif attempt <= policy.max_retries:
        delay = float(policy.backoff_seconds * 2 ** (attempt - 1))
        when = now + dt.timedelta(seconds=delay)
        text = f"attempt {attempt} failed ({reason}: {message}); retry {attempt}/{policy.max_retries} at {timestamp(when)}"
        return RunUpdate(
            {
                "phase": "Pending",
                "appHandle": None,
                "attempts": attempt,
                "nextAttemptAt": timestamp(when),
                "reason": reason,
                "message": text,
            },
            [_event(run, "Warning", "RetryScheduled", f"{name}: {text}")],
            delay,
        )
    text = f"attempt {attempt} of {attempt if permanent else policy.max_retries + 1} failed: {message}" if attempt > 1 else message
    return RunUpdate(
        {
            "phase": "Failed",
            "attempts": attempt,
            "nextAttemptAt": None,
            "finishTime": timestamp(now),
            "reason": reason,
            "message": text,
        },
        [_event(run, "Warning", reason, f"{name}: {text}")],
        None,
    )


# phase -> (Ready, Reconciling, Stalled, Succeeded, Failed)
_RUN_CONDITIONS: dict[str, tuple[str, str, str, str, str]] = {
    "Pending": ("False", "True", "False", "False", "False"),
    "Running": ("False", "True", "False", "False", "False"),
    "Unknown": ("False", "True", "False", "False", "False"),
    "Succeeded": ("True", "False", "False", "True", "False"),
    "Failed": ("False", "False", "True", "False", "True"),
    "Superseded": ("False", "False", "False", "False", "False"),
    "Cancelled": ("False", "False", "False", "False", "False"),
}


def with_conditions(run: TrainingRun, patch: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any] | None:
    """`patch` plus the run's kstatus conditions (Ready, Reconciling, Stalled) and Succeeded/Failed
    (for `kubectl wait --for=condition=Succeeded`), and observedGeneration, all from the phase the
    patch leaves. They ride in the same write: conditions never cost a patch of their own."""
    if not patch:
        return patch
    status = run.status
    phase = patch.get("phase") or (status.phase if status else None) or "Pending"
    reason = (patch["reason"] if "reason" in patch else (status.reason if status else None)) or phase
    message = (patch["message"] if "message" in patch else (status.message if status else None)) or ""
    previous = [c.model_dump(mode="json", by_alias=True) for c in status.conditions] if status else []
    gen = run.metadata.generation
    values = _RUN_CONDITIONS.get(phase, _RUN_CONDITIONS["Unknown"])
    conds = [
        condition(type_, value, reason, message if value == "True" or type_ == "Ready" else "", gen, now, previous)
        for type_, value in zip(("Ready", "Reconciling", "Stalled", "Succeeded", "Failed"), values, strict=True)
    ]
    return {**patch, "observedGeneration": gen, "conditions": conds}


def reconcile_run(
    run: TrainingRun,
    launcher: Any,
    now: dt.datetime,
    *,
    policy: RolloutSpec | None = None,
    read_metrics: Callable[[str], dict[str, Any] | None] | None = None,
    read_failure: Callable[..., dict[str, Any] | None] | None = None,
    poll_seconds: float = POLL_SECONDS,
    read_progress: Callable[[str], Any] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> RunUpdate:
    update = _reconcile(
        run, launcher, now, policy=policy, read_metrics=read_metrics, read_failure=read_failure,
        poll_seconds=poll_seconds, read_progress=read_progress, progress_seconds=progress_seconds,
    )
    update.status_patch = with_conditions(run, update.status_patch, now)
    return update


def _reconcile(
    run: TrainingRun,
    launcher: Any,
    now: dt.datetime,
    *,
    policy: RolloutSpec | None,
    read_metrics: Callable[[str], dict[str, Any] | None] | None,
    read_failure: Callable[..., dict[str, Any] | None] | None,
    poll_seconds: float,
    read_progress: Callable[[str], Any] | None,
    progress_seconds: float,
) -> RunUpdate:
    policy = policy or RolloutSpec()
    read_metrics = read_metrics or read_metrics_json
    read_progress = read_progress or read_progress_json
    read_failure = read_failure or read_failure_json
    status = run.status
    phase = status.phase if status else None
    if phase in FINISHED_PHASES:
        return RunUpdate()
    name = run.metadata.name
    handle = status.app_handle if status else None
    attempts = status.attempts if status else 0

    if not handle:
        due = parse_time(status.next_attempt_at if status else None)
        if due is not None and due > now:
            return RunUpdate(requeue_after=(due - now).total_seconds())
        attempt = attempts + 1
        events: list[Event] = []
        labels = job_labels(run, attempt)
        try:
            handle = launcher.find(name, attempt, labels=labels)
        except Exception as exc:  # a lookup failure must not cause a duplicate submit
            log.warning("looking up the job of %s failed: %s", name, exc)
            return RunUpdate(requeue_after=poll_seconds)
        if handle:
            events.append(_event(run, "Normal", "Adopted", f"{name}: adopted job {handle} (attempt {attempt})"))
        else:
            try:
                handle = launcher.submit(name, attempt, run.spec, labels)
            except Exception as exc:
                return _failed(run, attempt, "SubmitFailed", f"{type(exc).__name__}: {exc}", now, policy)
        try:
            job, reason, message = job_phase(launcher.state(handle))
        except Exception:
            job, reason, message = "Pending", None, None
        if job not in ("Pending", "Running"):
            job, reason, message = "Pending", None, None  # the next poll handles the outcome
        patch = {
            "phase": job,
            "appHandle": str(handle),
            "scheduler": getattr(launcher, "scheduler", None) or str(handle).split("://", 1)[0],
            "attempts": attempt,
            "nextAttemptAt": None,
            "reason": reason,
            "message": message,
        }
        if not (status and status.start_time):
            patch["startTime"] = timestamp(now)
        return RunUpdate(patch, events, poll_seconds)

    try:
        job, reason, message = job_phase(launcher.state(handle))
    except Exception as exc:
        log.warning("polling %s (%s) failed: %s", name, handle, exc)
        return RunUpdate(requeue_after=poll_seconds)
    attempt = max(attempts, 1)
    if job in ("Pending", "Running"):
        progress = _progress(run, now, read_progress, progress_seconds) if job == "Running" else None
        extra = {"progress": progress} if progress else {}
        if (phase, status.reason if status else None, status.message if status else None) == (job, reason, message):
            return RunUpdate(extra or None, [], poll_seconds)
        events = [_event(run, "Warning", reason, f"{name}: {message or reason}")] if reason else []
        return RunUpdate({"phase": job, "reason": reason, "message": message, **extra}, events, poll_seconds)
    if job == "Succeeded":
        raw = read_metrics(run.spec.training.output_uri)
        # Retrying cannot make a finished job write its metrics, nor make an undefined NE defined
        # on the same eval set: both fail for good.
        if not raw:
            text = f"the job succeeded but wrote no metrics.json under {run.spec.training.output_uri}"
            return _failed_for_good(run, attempt, "MetricsMissing", text, now)
        undefined = metric_undefined(raw)
        if undefined:
            text = f"the job succeeded but {undefined} (metrics.json under {run.spec.training.output_uri})"
            return _failed_for_good(run, attempt, "MetricUndefined", text, now)
        metrics = _metrics(raw)
        progress = _progress(run, now, read_progress, 0.0)
        patch = {
            "phase": "Succeeded",
            "finishTime": timestamp(now),
            "metrics": metrics,
            **({"progress": progress} if progress else {}),
            "reason": "Succeeded",
            "message": f"trained in {attempt} attempt(s); NE {metrics['ne']:.4f}",
        }
        if isinstance(raw.get("comparison"), dict):
            patch["comparison"] = _comparison(raw["comparison"])
        return RunUpdate(patch, [], None)
    permanent = False
    if job == "Cancelled":
        reason, message = reason or "JobCancelled", message or f"job {handle} was cancelled outside modelfleet"
    elif job == "Unknown":
        reason, message = reason or "JobLost", message or f"job {handle} is not known to the scheduler"
    else:
        reason, message = reason or "JobFailed", message or f"job {handle} failed"
        failure = read_failure(run.spec.training.output_uri, parse_time(status.start_time if status else None))
        reason, message, permanent = classify_failure(reason, message, failure)
    # The failed attempt's job is done with: delete it (its pods and quota with it) before the next
    # attempt or the final Failed; the reason and message are in the run's status.
    try:
        launcher.cancel(handle)
    except Exception as exc:
        log.warning("deleting the failed job %s of %s failed: %s", handle, name, exc)
    return _failed(run, attempt, reason, message, now, policy, permanent=permanent)


def cancel_run(
    run: TrainingRun,
    launcher: Any,
    now: dt.datetime,
    *,
    phase: str = "Cancelled",
    reason: str = "Cancelled",
    message: str | None = None,
) -> RunUpdate:
    """Cancel the run's job (errors are logged: the job may already be gone) and finish the run."""
    status = run.status
    if status and status.phase in FINISHED_PHASES:
        return RunUpdate()
    handle = status.app_handle if status else None
    if handle and launcher is not None:
        try:
            launcher.cancel(handle)
        except Exception as exc:
            log.warning("cancelling job %s of %s failed: %s", handle, run.metadata.name, exc)
    message = message or f"{run.metadata.name}: {phase.lower()}"
    return RunUpdate(
        with_conditions(
            run,
            {"phase": phase, "finishTime": timestamp(now), "reason": reason, "message": message, "nextAttemptAt": None},
            now,
        ),
        [_event(run, "Normal", reason, message)],
        None,
    )
