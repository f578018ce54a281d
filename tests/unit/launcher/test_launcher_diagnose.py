"""diagnose(): realistic API objects (as the API server returns them) -> specific JobState reasons."""

from __future__ import annotations

import copy
from typing import Any

from modelfleet.operator.diagnose import JobState, diagnose

IMAGE = "ghcr.io/modelfleet/trainer:0.1.0"


def batch_job(name: str = "ctr-abc-x1", *, suspend: bool = False, conditions: list[dict] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-11-23T10:00:00Z"}
    if conditions:
        status["conditions"] = conditions
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "ml", "uid": "9b1e-uid", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
        "spec": {"suspend": suspend, "completionMode": "Indexed", "completions": 2, "parallelism": 2},
        "status": status,
    }


def volcano_job(phase: str, name: str = "ctr-abc-x1") -> dict[str, Any]:
    return {
        "apiVersion": "batch.volcano.sh/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"queue": "default", "schedulerName": "volcano", "tasks": []},
        "status": {"state": {"phase": phase, "lastTransitionTime": "2026-11-23T10:00:00Z"}, "minAvailable": 1},
    }


def pod(name: str = "ctr-abc-x1-0-zq8kx", *, phase: str = "Pending", container_state: dict | None = None,
        last_state: dict | None = None, conditions: list[dict] | None = None, image: str = IMAGE) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "qosClass": "Burstable"}
    if conditions is not None:
        status["conditions"] = conditions
    if container_state is not None:
        status["containerStatuses"] = [
            {
                "name": "modelfleet",
                "image": image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": container_state,
                "lastState": last_state or {},
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "labels": {"batch.kubernetes.io/job-name": "ctr-abc-x1"}},
        "spec": {"containers": [{"name": "modelfleet", "image": image}], "restartPolicy": "Never"},
        "status": status,
    }


def test_missing_job_is_not_found() -> None:
    assert diagnose(None) == JobState("Unknown", "NotFound", diagnose(None).message)
    assert "does not exist" in (diagnose(None).message or "")


def test_image_pull_backoff_names_pod_container_and_image() -> None:
    bad = "ghcr.io/modelfleet/trainer:nope"
    p = pod(
        image=bad,
        container_state={
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{bad}"',
            }
        },
        conditions=[{"type": "PodScheduled", "status": "True"}],
    )
    state = diagnose(batch_job(), [p])
    assert state.phase == "Pending" and state.reason == "ImagePullBackOff"
    assert "ctr-abc-x1-0-zq8kx" in state.message and "modelfleet" in state.message and bad in state.message


def test_err_image_pull_is_reported_as_image_pull_backoff() -> None:
    p = pod(container_state={"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}})
    state = diagnose(volcano_job("Pending"), [p])
    assert state.reason == "ImagePullBackOff" and "ErrImagePull" in state.message and "manifest unknown" in state.message


def test_unschedulable_pod() -> None:
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
    p = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
                         "lastProbeTime": None, "lastTransitionTime": "2026-11-23T10:00:01Z"}])
    state = diagnose(volcano_job("Pending"), [p])
    assert state == JobState("Pending", "Unschedulable", f"pod ctr-abc-x1-0-zq8kx cannot be scheduled: {msg}")


def test_crash_loop_backoff_has_last_exit() -> None:
    p = pod(
        phase="Running",
        container_state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        last_state={"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-23T10:00:00Z"}},
    )
    state = diagnose(volcano_job("Running"), [p])
    assert state.reason == "CrashLoopBackOff" and "last exit code 1" in state.message


def test_oom_killed_job_failure() -> None:
    job = batch_job(conditions=[
        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
    ])
    p = pod(phase="Failed", container_state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    state = diagnose(job, [p])
    assert state.phase == "Failed" and state.reason == "OOMKilled"
    assert "137" in state.message and "memoryMb" in state.message and "ctr-abc-x1-0-zq8kx" in state.message


def test_backoff_limit_with_plain_error_says_exit_code() -> None:
    job = batch_job(conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}])
    p = pod(phase="Failed", container_state={"terminated": {"exitCode": 1, "reason": "Error",
                                                            "message": "modelfleet train: error: connection reset"}})
    state = diagnose(job, [p])
    assert state.reason == "Error" and "exited with code 1" in state.message and "connection reset" in state.message


def test_a_permanent_exit_code_names_the_trainers_reason() -> None:
    # The podFailurePolicy failed the Job at the first pod that exited with 3 (DataNotFound); the
    # other replica was terminated (143) by the Job controller and must not hide the cause.
    message = "Container modelfleet for pod ml/ctr-abc-x1-1-k2j9q failed with exit code 3 matching FailJob rule at index 0"
    job = batch_job(conditions=[
        {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy", "message": message},
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message},
    ])
    killed = pod("ctr-abc-x1-0-zq8kx", phase="Failed", container_state={"terminated": {"exitCode": 143, "reason": "Error"}})
    bad = pod("ctr-abc-x1-1-k2j9q", phase="Failed", container_state={"terminated": {
        "exitCode": 3, "reason": "Error", "message": "spec.data.trainUri: 's3://ads/x.parquet': no such file"}})
    state = diagnose(job, [killed, bad])
    assert state.phase == "Failed" and state.reason == "DataNotFound"
    assert "ctr-abc-x1-1-k2j9q" in state.message and "code 3" in state.message and "spec.data.trainUri" in state.message
    # Once the pods are gone (TTL, or a restarted operator that finds only the Job), the Job's
    # PodFailurePolicy condition still says which code it was.
    assert diagnose(job, []).reason == "DataNotFound"
    # Volcano: TerminateJob keeps the failed pods, whose exit code names the reason.
    assert diagnose(volcano_job("Terminated"), [killed, bad]).reason == "DataNotFound"
    assert diagnose(volcano_job("Terminated"), [killed]).reason == "Error"


def test_backoff_limit_without_pods_keeps_the_job_reason() -> None:
    job = batch_job(conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}])
    assert diagnose(job, []).reason == "BackoffLimitExceeded"


def test_deadline_exceeded() -> None:
    job = batch_job(conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                 "message": "Job was active longer than specified deadline"}])
    state = diagnose(job, [pod(phase="Failed", container_state={"terminated": {"exitCode": 143, "reason": "Error"}})])
    assert state.phase == "Failed" and state.reason == "DeadlineExceeded" and "deadline" in state.message


def test_batch_job_complete() -> None:
    job = batch_job(conditions=[
        {"type": "SuccessCriteriaMet", "status": "True"},
        {"type": "Complete", "status": "True"},
    ])
    assert diagnose(job, []).phase == "Succeeded"


def test_volcano_phases() -> None:
    assert diagnose(volcano_job("Completed")).phase == "Succeeded"
    assert diagnose(volcano_job("Aborted")).phase == "Cancelled"
    assert diagnose(volcano_job("Running"), [pod(phase="Running")]).phase == "Running"
    assert diagnose(volcano_job("Pending")).phase == "Pending"
    failed = diagnose(volcano_job("Failed"), [pod(phase="Failed", container_state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})])
    assert failed.phase == "Failed" and failed.reason == "OOMKilled"


def workload(conditions: list[dict]) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "Workload",
        "metadata": {"name": "job-ctr-abc-x1-4f2a1", "namespace": "ml", "labels": {"kueue.x-k8s.io/job-uid": "9b1e-uid"}},
        "spec": {"queueName": "q", "podSets": [{"name": "main", "count": 2}]},
        "status": {"conditions": conditions},
    }


def test_kueue_inadmissible_queue_missing() -> None:
    wl = workload([{"type": "QuotaReserved", "status": "False", "reason": "Inadmissible",
                    "message": "LocalQueue q doesn't exist", "lastTransitionTime": "2026-11-23T10:00:00Z"}])
    state = diagnose(batch_job(suspend=True), [], wl)
    assert state == JobState("Pending", "Inadmissible", "workload job-ctr-abc-x1-4f2a1 is inadmissible: LocalQueue q doesn't exist")


def test_kueue_request_beyond_capacity_is_inadmissible_but_waiting_for_quota_is_queued() -> None:
    never = workload([{"type": "QuotaReserved", "status": "False", "reason": "Pending",
                       "message": "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in "
                                  "flavor default-flavor, request > maximum capacity (16 > 8)"}])
    assert diagnose(batch_job(suspend=True), [], never).reason == "Inadmissible"
    later = copy.deepcopy(never)
    later["status"]["conditions"][0]["message"] = (
        "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default-flavor, 4 more needed"
    )
    state = diagnose(batch_job(suspend=True), [], later)
    assert state.phase == "Pending" and state.reason == "Queued" and "4 more needed" in state.message


def test_kueue_admitted_then_running() -> None:
    admitted = workload([{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved"},
                         {"type": "Admitted", "status": "True", "reason": "Admitted"}])
    assert diagnose(batch_job(suspend=True), [], admitted).reason == "Admitted"
    running = diagnose(batch_job(suspend=False), [pod(phase="Running"), pod("ctr-abc-x1-1-p2", phase="Running")], admitted)
    assert running.phase == "Running" and "2 pod(s)" in running.message


def test_kueue_evicted_workload() -> None:
    wl = workload([{"type": "Evicted", "status": "True", "reason": "Preempted", "message": "Preempted to accommodate a higher priority Workload"}])
    state = diagnose(batch_job(suspend=True), [], wl)
    assert state.phase == "Pending" and state.reason == "Preempted" and "higher priority" in state.message


def test_suspended_job_without_workload_yet_is_queued() -> None:
    assert diagnose(batch_job(suspend=True)).reason == "Queued"


def test_deleting_job_is_cancelled() -> None:
    job = batch_job()
    job["metadata"]["deletionTimestamp"] = "2026-11-23T10:05:00Z"
    assert diagnose(job, [pod(phase="Running")]).phase == "Cancelled"
