"""`kueue`: a TorchX scheduler that runs an AppDef as a suspended batch/v1 Indexed Job for Kueue.

TorchX ships no Kueue scheduler; this one is registered through TorchX's plugin mechanism (the
`torchx.schedulers` entry point `kueue` in pyproject.toml), so `torchx run -s kueue ...`,
`torchx status kueue://...` and the operator's launcher all use it.

What it creates, per app (one role; a training app is one torchrun role):
- a batch/v1 Job, `completionMode: Indexed`, `completions = parallelism = num_replicas` (nnodes),
  `suspend: true` and the label `kueue.x-k8s.io/queue-name: <queue>`. Kueue creates a Workload
  for it, and unsuspends the Job once the LocalQueue's ClusterQueue has quota for all its pods
  (all-or-nothing admission of the whole gang). `backoffLimit` = the role's max_retries. With
  the run option `fail_on_exit_codes`, a `podFailurePolicy` fails the Job at once on those codes
  (the operator passes the trainer's permanent ones: bad input is never retried).
- a headless Service named like the Job (`clusterIP: None`, `publishNotReadyAddresses: true`,
  selecting the Job's pods by `batch.kubernetes.io/job-name`), owned by the Job so it is garbage
  collected with it. The pod template sets `subdomain` to it, so pod `i` is reachable as
  `<job>-<i>.<job>` (Indexed Job pods get the hostname `<job>-<index>`).

Rendezvous: TorchX's `dist.torchrun` components read the rank-0 host from `${rank0_env}`; here it
is `TORCHX_RANK0_HOST=<job>-0.<job>` on every pod, and the `replica_id` macro becomes
`$(JOB_COMPLETION_INDEX)` (expanded by the kubelet in command/args).

Resources: `nvidia.com/gpu` as limits (and requests, which must equal them for extended
resources), cpu/memory as requests (what Kueue counts against quota) plus a memory limit.

App id: `<namespace>:<job name>`; handle `kueue://<session>/<namespace>:<job name>`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from torchx.schedulers.api import (
    DescribeAppResponse,
    ListAppResponse,
    Scheduler,
    Stream,
    StructuredOpts,
    filter_regex,
    split_lines,
)
from torchx.schedulers.ids import make_unique
from torchx.specs.api import AppDef, AppDryRunInfo, AppState, ReplicaStatus, Role, RoleStatus, macros, runopts
from torchx.util.strings import normalize_str

from modelfleet.operator.diagnose import JobState, diagnose

log = logging.getLogger(__name__)

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
WORKLOAD_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
RANK0_ENV = "TORCHX_RANK0_HOST"
KUEUE_GROUP, KUEUE_VERSION, WORKLOADS = "kueue.x-k8s.io", "v1beta1", "workloads"
MANAGED_BY = "app.kubernetes.io/managed-by"

PHASE_TO_APP_STATE: dict[str, AppState] = {
    "Pending": AppState.PENDING,
    "Running": AppState.RUNNING,
    "Succeeded": AppState.SUCCEEDED,
    "Failed": AppState.FAILED,
    "Cancelled": AppState.CANCELLED,
    "Unknown": AppState.UNKNOWN,
}
# Pod and job names must stay DNS labels (63) including the `-<index>` of indexed pod hostnames.
_MAX_JOB_NAME = 56


@dataclass
class Opts(StructuredOpts):
    """Run options of the kueue scheduler."""

    queue: str
    """Kueue LocalQueue (in the job's namespace) to submit to."""

    namespace: str = "default"
    """Kubernetes namespace to create the Job in."""

    service_account: str | None = None
    """Service account of the pods."""

    priority_class: str | None = None
    """Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class)."""

    active_deadline_seconds: int | None = None
    """Fail the Job after this many seconds running (reason DeadlineExceeded)."""

    ttl_seconds_after_finished: int | None = None
    """Delete the finished Job (and its Service) after this many seconds."""

    fail_on_exit_codes: list[str] | None = None
    """Exit codes that fail the Job at once, without a retry (podFailurePolicy FailJob)."""


@dataclass
class KueueJob:
    """The dry-run request: the Job and the headless Service, as API JSON."""

    job: dict[str, Any]
    service: dict[str, Any]

    def __str__(self) -> str:
        return yaml.safe_dump_all([self.job, self.service], sort_keys=False)

    def __repr__(self) -> str:
        return str(self)


def _quantity_mb(mb: int) -> str:
    return f"{int(mb)}Mi"


def app_to_job(app: AppDef, opts: Opts) -> KueueJob:
    """Render an AppDef into the suspended Indexed Job (+ Service) Kueue admits."""
    from torchx.schedulers.kubernetes_scheduler import pod_labels, role_to_pod, sanitize_for_serialization

    if len(app.roles) != 1:
        raise ValueError(
            f"kueue scheduler: app {app.name!r} has {len(app.roles)} roles; an Indexed Job runs exactly one "
            "(one pod template), so give the app a single role"
        )
    role = app.roles[0]
    if role.num_replicas < 1:
        raise ValueError(f"kueue scheduler: role {role.name!r}: num_replicas must be >= 1, got {role.num_replicas}")
    base = normalize_str(app.name)[: _MAX_JOB_NAME - 15].rstrip("-") or "app"
    job_name = normalize_str(make_unique(base, 13))[:_MAX_JOB_NAME].rstrip("-")
    rank0_host = f"{job_name}-0.{job_name}"

    values = macros.Values(
        img_root="",
        app_id=job_name,
        replica_id="$(JOB_COMPLETION_INDEX)",
        rank0_env=RANK0_ENV,
    )
    replica_role = values.apply(role)
    replica_role.env[RANK0_ENV] = rank0_host
    replica_role.env["TORCHX_IMAGE"] = replica_role.image
    pod = sanitize_for_serialization(
        role_to_pod(normalize_str(role.name), replica_role, opts.service_account, reserved_millicpu=0, reserved_memmb=0)
    )
    assert isinstance(pod, dict)
    spec = pod["spec"]
    for container in spec["containers"]:
        res = replica_role.resource
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        if res.cpu > 0:
            requests["cpu"] = f"{int(res.cpu * 1000)}m"
        if res.memMB > 0:
            requests["memory"] = limits["memory"] = _quantity_mb(res.memMB)
        if res.gpu > 0:
            requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(res.gpu)
        for device, count in res.devices.items():
            requests[device] = limits[device] = str(count)
        container["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    spec["subdomain"] = job_name
    spec["restartPolicy"] = "Never"
    if not spec.get("nodeSelector"):
        spec.pop("nodeSelector", None)
    labels = pod_labels(app=app, role_idx=0, role=role, replica_id=0, app_id=job_name)
    labels.pop("torchx.pytorch.org/replica-id", None)  # one template for all replicas
    pod_meta = pod.setdefault("metadata", {})
    pod_meta["labels"] = {**labels, **(pod_meta.get("labels") or {})}

    job_labels = {**labels, QUEUE_LABEL: opts.queue}
    if opts.priority_class:
        job_labels[PRIORITY_LABEL] = opts.priority_class
    job_spec: dict[str, Any] = {
        "suspend": True,
        "completionMode": "Indexed",
        "completions": role.num_replicas,
        "parallelism": role.num_replicas,
        "backoffLimit": max(0, role.max_retries),
        "template": pod,
    }
    if opts.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = opts.active_deadline_seconds
    if opts.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = opts.ttl_seconds_after_finished
    if opts.fail_on_exit_codes:
        job_spec["podFailurePolicy"] = pod_failure_policy([int(c) for c in opts.fail_on_exit_codes])
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": opts.namespace, "labels": job_labels},
        "spec": job_spec,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": job_name, "namespace": opts.namespace, "labels": dict(labels)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rendezvous starts before pods are Ready
            "selector": {JOB_NAME_LABEL: job_name},
            "ports": [{"name": name, "port": port} for name, port in role.port_map.items()]
            or [{"name": "c10d", "port": 29500}],
        },
    }
    return KueueJob(job=job, service=service)


def pod_failure_policy(exit_codes: Iterable[int]) -> dict[str, Any]:
    """Fail the Job at once on `exit_codes` (bad input fails again however often it is retried);
    a pod disrupted by a drain or a preemption is replaced without counting against backoffLimit.
    Needs `restartPolicy: Never`, which the pod template has."""
    codes = sorted({int(c) for c in exit_codes} - {0})  # the API wants them ordered, 0 excluded
    return {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": codes}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


class KueueScheduler(Scheduler[Opts]):
    """TorchX scheduler for clusters that queue batch/v1 Jobs with Kueue (see the module docstring)."""

    def __init__(self, session_name: str, client: Any = None) -> None:
        super().__init__("kueue", session_name)
        self._client = client

    # --- API access ---------------------------------------------------------------------------

    def _api_client(self) -> Any:
        if self._client is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._client = client.ApiClient()
        return self._client

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._api_client())

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api_client())

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._api_client())

    def _json(self, obj: Any) -> Any:
        return self._api_client().sanitize_for_serialization(obj)

    # --- TorchX scheduler API ----------------------------------------------------------------

    def _run_opts(self) -> runopts:
        return Opts.as_runopts()

    def _submit_dryrun(self, app: AppDef, cfg: Opts) -> AppDryRunInfo[KueueJob, Opts]:
        return AppDryRunInfo(app_to_job(app, cfg), repr)

    def _validate(self, app: AppDef, scheduler: str, cfg: Opts) -> None:
        super()._validate(app, scheduler, cfg)
        if len(app.roles) != 1:
            raise ValueError(f"kueue scheduler: app {app.name!r} must have exactly one role, has {len(app.roles)}")

    def schedule(self, dryrun_info: AppDryRunInfo[KueueJob, Opts]) -> str:
        from kubernetes.client.rest import ApiException

        req = dryrun_info.request
        namespace = req.job["metadata"].get("namespace") or dryrun_info.cfg.namespace or "default"
        created = self._json(self._batch().create_namespaced_job(namespace=namespace, body=req.job))
        name = created["metadata"]["name"]
        service = dict(req.service)
        service["metadata"] = {
            **service["metadata"],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": created["metadata"].get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        }
        try:
            self._core().create_namespaced_service(namespace=namespace, body=service)
        except ApiException as exc:
            if exc.status != 409:  # a retried schedule: the Service is already there
                raise
        return f"{namespace}:{name}"

    def job_state(self, app_id: str) -> JobState:
        """The job's state with a specific reason, from the Job, its pods and its Kueue Workload."""
        from kubernetes.client.rest import ApiException

        namespace, name = _split(app_id)
        try:
            job = self._json(self._batch().read_namespaced_job(name=name, namespace=namespace))
        except ApiException as exc:
            if exc.status == 404:
                return diagnose(None)
            raise
        pods = self._json(
            self._core().list_namespaced_pod(namespace=namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
        )
        pods = [p for p in pods if (p.get("metadata", {}).get("labels") or {}).get(JOB_NAME_LABEL) == name]
        workload = None
        uid = job.get("metadata", {}).get("uid")
        if uid and _suspended(job):
            try:
                wls = self._custom().list_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace, WORKLOADS, label_selector=f"{WORKLOAD_JOB_UID_LABEL}={uid}"
                )
                items = [w for w in wls.get("items", []) if (w["metadata"].get("labels") or {}).get(WORKLOAD_JOB_UID_LABEL) == uid]
                workload = items[0] if items else None
            except ApiException as exc:
                if exc.status not in (403, 404):  # Kueue not installed, or not allowed to read workloads
                    raise
        return diagnose(job, pods, workload)

    def describe(self, app_id: str) -> DescribeAppResponse | None:
        state = self.job_state(app_id)
        if state.reason == "NotFound":
            return None
        _, name = _split(app_id)
        return DescribeAppResponse(
            app_id=app_id,
            state=PHASE_TO_APP_STATE[state.phase],
            msg=f"{state.reason}: {state.message}" if state.reason else (state.message or ""),
            structured_error_msg=state.reason or "<NONE>",
            roles=[Role(name=name, image="")],
            roles_statuses=[RoleStatus(name, [ReplicaStatus(0, PHASE_TO_APP_STATE[state.phase], name, "")])],
        )

    def list(self, cfg: Mapping[str, Any] | None = None) -> list[ListAppResponse]:
        namespace = str((cfg or {}).get("namespace") or "default")
        jobs = self._batch().list_namespaced_job(namespace=namespace, label_selector=QUEUE_LABEL)
        out = []
        for job in self._json(jobs.items):
            if QUEUE_LABEL not in (job["metadata"].get("labels") or {}):
                continue
            state = diagnose(job)
            out.append(ListAppResponse(app_id=f"{namespace}:{job['metadata']['name']}", state=PHASE_TO_APP_STATE[state.phase]))
        return out

    def _cancel_existing(self, app_id: str) -> None:
        # Deleting (not suspending) frees the quota at once and takes the pods and the owned Service
        # along; a Job suspended by us would be unsuspended again by Kueue on the next admission.
        delete_job(self._batch(), app_id)

    def log_iter(
        self,
        app_id: str,
        role_name: str,
        k: int = 0,
        regex: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        should_tail: bool = False,
        streams: Stream | None = None,
    ) -> Iterable[str]:
        if streams not in (None, Stream.COMBINED):
            raise ValueError("kueue scheduler only supports the COMBINED log stream")
        namespace, name = _split(app_id)
        core = self._core()
        pods = core.list_namespaced_pod(
            namespace=namespace, label_selector=f"{JOB_NAME_LABEL}={name},{COMPLETION_INDEX_LABEL}={k}"
        ).items
        if not pods:
            raise ValueError(f"kueue scheduler: no pod with index {k} of job {name} in namespace {namespace}")
        pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp or datetime.min)[-1]
        args: dict[str, Any] = {"name": pod.metadata.name, "namespace": namespace, "timestamps": False}
        if since is not None:
            args["since_seconds"] = max(1, int((datetime.now() - since).total_seconds()))
        if should_tail:
            from kubernetes import watch

            lines: Iterable[str] = (f"{line}\n" for line in watch.Watch().stream(core.read_namespaced_pod_log, **args))
        else:
            lines = split_lines(core.read_namespaced_pod_log(**args))
        return filter_regex(regex, lines) if regex else lines


def delete_job(batch_api: Any, app_id: str) -> bool:
    """Delete the Job (pods and owned Service follow). False when it was already gone."""
    from kubernetes.client.rest import ApiException

    namespace, name = _split(app_id)
    try:
        batch_api.delete_namespaced_job(name=name, namespace=namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _split(app_id: str) -> tuple[str, str]:
    namespace, sep, name = app_id.partition(":")
    if not sep or not name or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        raise ValueError(f"kueue app id {app_id!r} is not <namespace>:<job name>")
    return namespace or "default", name


def _suspended(job: Mapping[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def create_scheduler(session_name: str, client: Any = None, **kwargs: Any) -> KueueScheduler:
    return KueueScheduler(session_name=session_name, client=client)
