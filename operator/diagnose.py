"""What the cluster says about one training job, turned into a `JobState` with a specific reason.

A pure function over plain dicts in the API server's JSON form (camelCase, as `kubectl get -o json`
prints them, or `ApiClient().sanitize_for_serialization(obj)` makes them from client objects), so
it is tested without a cluster and shared by the Volcano (`kubernetes`) and `kueue` launchers.

Reasons bubble up to the TrainingRun and its ModelInstance, so they are the specific ones a user
can act on: `ImagePullBackOff`, `Unschedulable`, `Inadmissible`, `DeadlineExceeded`, `OOMKilled`,
`CrashLoopBackOff`, `BackoffLimitExceeded`, `Error`, `NotFound`. Messages name the pod, container
and image so `kubectl describe` is one copy-paste away.

A trainer that exits with one of its permanent codes (`trainer/report.py`: bad spec, data, format,
labels, ...) gets that code's reason (`DataNotFound`, `InvalidLabels`, ...) instead of `Error`,
read from the container's exit code or, once the pods are gone, from the Job's `PodFailurePolicy`
condition; the run reconciler does not retry those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modelfleet.trainer.report import reason_for

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled", "Unknown"]
FINISHED: tuple[str, ...] = ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class JobState:
    phase: Phase
    reason: str | None = None  # specific CamelCase reason, see the module docstring
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


# Container waiting reasons that mean the image cannot be had: retrying will not fix them.
_IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
# Waiting reasons that mean the container keeps dying or cannot even be created.
_CRASH_REASONS = ("CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError")

# Volcano job phases (batch.volcano.sh/v1alpha1 Job .status.state.phase).
_VOLCANO_PHASES: dict[str, Phase] = {
    "Pending": "Pending",
    "Running": "Running",
    "Restarting": "Running",
    "Completing": "Running",
    "Completed": "Succeeded",
    "Failed": "Failed",
    "Terminating": "Failed",
    "Terminated": "Failed",
    "Aborting": "Cancelled",
    "Aborted": "Cancelled",
}

# Kueue messages of a workload that will not be admitted however long it waits (as opposed to one
# waiting for quota that others hold: "insufficient unused quota").
_INADMISSIBLE_HINTS = (
    "doesn't exist",
    "does not exist",
    "is inactive",
    "is stopped",
    "maximum capacity",
    "no flavor",
    "doesn't match",
    "couldn't find",
)


def diagnose(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]] = (),
    workload: Mapping[str, Any] | None = None,
) -> JobState:
    """The state of one job: a batch/v1 Job (kueue) or a Volcano Job (kubernetes), its pods, and
    for kueue its Workload (`kueue.x-k8s.io/v1beta1`). `job=None` means it is gone."""
    if job is None:
        return JobState("Unknown", "NotFound", "the job does not exist (deleted, or never created)")
    name = _name(job)
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return JobState("Cancelled", "Deleted", f"job {name} is being deleted")

    terminal = _terminal(job, pods)
    if terminal is not None:
        return terminal

    problem = _pod_problem(pods)
    if problem is not None:
        return problem

    if _suspended(job):
        return _queued(name, workload)

    if any(_pod_phase(p) == "Running" for p in pods) or _volcano_phase(job) == "Running":
        return JobState("Running", None, f"job {name}: {_count(pods, 'Running')} pod(s) running")
    return JobState("Pending", None, f"job {name}: waiting for pods to start")


# --- terminal states of the job itself -------------------------------------------------------


def _terminal(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobState | None:
    name = _name(job)
    vphase = _volcano_phase(job)
    if vphase is not None:
        phase = _VOLCANO_PHASES.get(vphase)
        if phase == "Succeeded":
            return JobState("Succeeded", "Completed", f"job {name} completed")
        if phase == "Cancelled":
            return JobState("Cancelled", vphase, f"job {name} was aborted")
        if phase == "Failed":
            return _failure(name, pods, vphase, f"job {name} is {vphase}")
        return None

    conds = _conditions(job)
    for ctype in ("Complete", "SuccessCriteriaMet"):
        if _is_true(conds.get(ctype)):
            return JobState("Succeeded", "Completed", f"job {name} completed")
    failed = conds.get("Failed")
    if _is_true(failed):
        reason = failed.get("reason") or "Failed"
        message = failed.get("message") or f"job {name} failed"
        if reason == "DeadlineExceeded":
            return JobState("Failed", "DeadlineExceeded", f"job {name}: {message}")
        if reason == "PodFailurePolicy":
            # "Container train for pod ns/p failed with exit code 3 matching FailJob rule at index 0"
            code = re.search(r"exit code (\d+)", message)
            reason = (reason_for(int(code.group(1))) if code else None) or reason
        return _failure(name, pods, reason, f"job {name}: {message}")
    return None


def _failure(job_name: str, pods: Sequence[Mapping[str, Any]], fallback: str, job_message: str) -> JobState:
    """A failed job: the most telling container termination wins (OOMKilled over a plain error)."""
    terminated = [t for t in _container_states(pods) if t[3].get("terminated")]
    for pod, container, image, state in terminated:
        term = state["terminated"]
        if term.get("reason") == "OOMKilled":
            return JobState(
                "Failed",
                "OOMKilled",
                f"pod {pod} container {container} (image {image}) was killed for exceeding its memory "
                f"limit (exit code {term.get('exitCode')}); raise resources.memoryMb",
            )
    for pod, container, image, state in sorted(terminated, key=lambda t: reason_for(t[3]["terminated"].get("exitCode")) is None):
        term = state["terminated"]
        if term.get("exitCode", 0) != 0:
            detail = (term.get("message") or "").strip().splitlines()
            tail = f": {detail[-1]}" if detail else ""
            return JobState(
                "Failed",
                reason_for(term.get("exitCode")) or "Error",
                f"pod {pod} container {container} (image {image}) exited with code "
                f"{term.get('exitCode')} ({term.get('reason') or 'Error'}){tail}; {job_message}",
            )
    problem = _pod_problem(pods)
    if problem is not None:
        return JobState("Failed", problem.reason, f"{problem.message}; {job_message}")
    return JobState("Failed", fallback, job_message)


# --- pods ------------------------------------------------------------------------------------


def _pod_problem(pods: Sequence[Mapping[str, Any]]) -> JobState | None:
    """A pod that cannot make progress on its own: image, crash loop, no node, OOM while retrying."""
    for pod, container, image, state in _container_states(pods):
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _IMAGE_REASONS:
            return JobState(
                "Pending",
                "ImagePullBackOff",
                f"pod {pod} container {container}: image {image!r} cannot be pulled ({reason}): "
                f"{waiting.get('message') or 'check the image name, tag and pull secret'}",
            )
    for pod, container, image, state in _container_states(pods):
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _CRASH_REASONS:
            last = (state.get("_last") or {}).get("terminated") or {}
            why = f" (last exit code {last.get('exitCode')}, {last.get('reason')})" if last else ""
            return JobState(
                "Running" if reason == "CrashLoopBackOff" else "Pending",
                "CrashLoopBackOff" if reason == "CrashLoopBackOff" else reason,
                f"pod {pod} container {container} (image {image}): {reason}{why}: {waiting.get('message') or ''}".rstrip(": "),
            )
    for p in pods:
        for cond in (p.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                if cond.get("reason") == "Unschedulable":
                    return JobState(
                        "Pending",
                        "Unschedulable",
                        f"pod {_name(p)} cannot be scheduled: {cond.get('message') or 'no node fits'}",
                    )
    # An OOM kill of a pod the job will retry: the job is still running, but say why it restarts.
    for pod, container, image, state in _container_states(pods):
        for st in (state, state.get("_last") or {}):
            term = st.get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                return JobState(
                    "Running",
                    "OOMKilled",
                    f"pod {pod} container {container} (image {image}) was OOM-killed; the job is retrying",
                )
    return None


def _container_states(pods: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(pod, container, image, state) for init and regular containers; `_last` = lastState."""
    out = []
    for p in pods:
        status = p.get("status") or {}
        images = {c.get("name"): c.get("image") for c in (p.get("spec") or {}).get("containers") or []}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            state = dict(cs.get("state") or {})
            state["_last"] = cs.get("lastState") or {}
            image = images.get(cs.get("name")) or cs.get("image") or "?"
            out.append((_name(p), cs.get("name") or "?", image, state))
    return out


def _pod_phase(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def _count(pods: Sequence[Mapping[str, Any]], phase: str) -> int:
    return sum(1 for p in pods if _pod_phase(p) == phase)


# --- kueue -----------------------------------------------------------------------------------


def _suspended(job: Mapping[str, Any]) -> bool:
    if (job.get("spec") or {}).get("suspend"):
        return True
    return _is_true(_conditions(job).get("Suspended"))


def _queued(job_name: str, workload: Mapping[str, Any] | None) -> JobState:
    """A suspended job waits for Kueue to admit its Workload; say whether it ever can."""
    if workload is None:
        return JobState("Pending", "Queued", f"job {job_name} is suspended, waiting for its Kueue workload")
    wl = _name(workload)
    conds = _conditions(workload)
    evicted = conds.get("Evicted")
    if _is_true(evicted):
        return JobState(
            "Pending",
            evicted.get("reason") or "Evicted",
            f"workload {wl} was evicted: {evicted.get('message') or ''}".rstrip(": "),
        )
    quota = conds.get("QuotaReserved")
    if quota is not None and quota.get("status") == "False":
        message = quota.get("message") or ""
        reason = quota.get("reason") or ""
        if reason == "Inadmissible" or any(h in message for h in _INADMISSIBLE_HINTS):
            return JobState("Pending", "Inadmissible", f"workload {wl} is inadmissible: {message}")
        return JobState("Pending", "Queued", f"workload {wl} is waiting for quota: {message}".rstrip(": "))
    if _is_true(conds.get("Admitted")):
        return JobState("Pending", "Admitted", f"workload {wl} is admitted; the job is starting")
    return JobState("Pending", "Queued", f"job {job_name} is suspended, waiting for workload {wl}")


# --- helpers ---------------------------------------------------------------------------------


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type")}


def _is_true(cond: Mapping[str, Any] | None) -> bool:
    return cond is not None and cond.get("status") == "True"


def _volcano_phase(job: Mapping[str, Any]) -> str | None:
    if not str(job.get("apiVersion", "")).startswith("batch.volcano.sh/"):
        return None
    return ((job.get("status") or {}).get("state") or {}).get("phase") or "Pending"
