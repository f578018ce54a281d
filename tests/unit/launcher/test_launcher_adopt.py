"""Cluster launchers against kmock's Kubernetes emulator: submit, adopt by labels after a restart,
diagnose from what the API returns, cancel idempotently.

The emulator stores and serves objects but ignores label selectors, so these tests also show that
`find` checks the labels itself. No job controller runs here: the tests write the status a
controller (Job controller, Volcano, Kueue, kubelet) would, then read it back through the launcher.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from modelfleet.api.resources import TrainingRunSpec
from modelfleet.operator import naming
from modelfleet.operator.config import OperatorConfig
from modelfleet.operator.kube import make_api_client
from modelfleet.operator.launcher import KueueLauncher, VolcanoLauncher, make_launcher
from modelfleet.trainer.spec import TrainingSpec

NS = "ml"
JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
SERVICES = kmock.resource("", "v1", "services")
VCJOBS = kmock.resource("batch.volcano.sh", "v1alpha1", "jobs")
WORKLOADS = kmock.resource("kueue.x-k8s.io", "v1beta1", "workloads")


class Cluster(kmock.KubernetesEmulator):
    """The emulator plus what the API server does on create: uid, creationTimestamp, 201 Created
    (the generated client deserializes a custom object's create response only for 201)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._seq = itertools.count()

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("namespace", request.namespace)
            # strictly increasing, so "newest" is well defined even within one second
            t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=next(self._seq))
            meta["creationTimestamp"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        response = await super()._handle(request)
        if request.action == kmock.action.CREATE and getattr(response, "status", None) == 200:
            response.set_status(201)
        return response

    def put(self, resource: Any, obj: dict[str, Any]) -> None:
        self.objects[resource, obj["metadata"]["namespace"], obj["metadata"]["name"]] = obj

    def get(self, resource: Any, name: str) -> dict[str, Any] | None:
        key = (resource, NS, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def all(self, resource: Any) -> list[dict[str, Any]]:
        return [o.raw for (r, _, _), o in list(self.objects.items()) if r == resource and not o.deleted]


def declare(cluster: Cluster) -> None:
    verbs = {"get", "list", "watch", "create", "patch", "delete"}
    for key, kind in (
        ("batch/v1/jobs", "Job"),
        ("v1/pods", "Pod"),
        ("v1/services", "Service"),
        ("batch.volcano.sh/v1alpha1/jobs", "Job"),
        ("kueue.x-k8s.io/v1beta1/workloads", "Workload"),
    ):
        cluster.resources[key] = kmock.ResourceInfo(kind=kind, singular=kind.lower(), namespaced=True, verbs=verbs)


@pytest.fixture()
async def cluster() -> AsyncIterator[tuple[Cluster, Any]]:
    async with Cluster() as c, kmock.Server(c) as server:
        declare(c)
        yield c, make_api_client(str(server.url).rstrip("/"))


def run_spec() -> TrainingRunSpec:
    training = TrainingSpec.model_validate({
        "instance": "ctr-feed", "revision": "abc123", "event": "click", "architecture": {},
        "data": {"format": "synthetic"}, "outputUri": "s3://bucket/ml/ctr-feed-abc123",
    })
    return TrainingRunSpec(instance="ctr-feed", revision="abc123", training=training, resources={"nnodes": 2})


def config(scheduler: str) -> OperatorConfig:
    return OperatorConfig(scheduler=scheduler, queue="team-a", extra={"namespace": NS})  # type: ignore[arg-type]


# The launchers use the synchronous kubernetes client (the operator calls them from worker
# threads); the emulator serves from this test's event loop, so calls go through a thread too.
call = asyncio.to_thread


async def test_kueue_submit_adopt_diagnose_cancel(cluster: tuple[Cluster, Any]) -> None:
    c, api = cluster
    launcher = make_launcher(config("kueue"), api_client=api)
    assert isinstance(launcher, KueueLauncher)
    assert await call(launcher.find, "ctr-feed-abc123", 1) is None

    handle = await call(launcher.submit, "ctr-feed-abc123", 1, run_spec(), {naming.LABEL_INSTANCE: "ctr-feed"})
    name = handle.rsplit(":", 1)[1]
    assert handle == f"kueue://modelfleet/{NS}:{name}"
    job = c.get(JOBS, name)
    assert job is not None and job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][naming.LABEL_RUN] == "ctr-feed-abc123"
    svc = c.get(SERVICES, name)
    assert svc is not None
    assert svc["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]  # GC'd with the Job

    # Another run's job and this run's next attempt must not be adopted for attempt 1.
    other = await call(launcher.submit, "ctr-other-abc123", 1, run_spec(), {})
    restarted = KueueLauncher(config("kueue"), api_client=api)
    assert await call(restarted.find, "ctr-feed-abc123", 1) == handle
    assert await call(restarted.find, "ctr-feed-abc123", 2) is None
    assert await call(restarted.find, "ctr-other-abc123", 1) == other

    # Suspended with a Workload Kueue cannot admit: Inadmissible, with Kueue's message.
    c.put(WORKLOADS, {
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
        "metadata": {"name": f"job-{name}-1a2b3", "namespace": NS,
                     "labels": {"kueue.x-k8s.io/job-uid": job["metadata"]["uid"]}},
        "spec": {"queueName": "team-a", "podSets": [{"name": "main", "count": 2}]},
        "status": {"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Inadmissible",
                                   "message": "LocalQueue team-a doesn't exist"}]},
    })
    state = await call(restarted.state, handle)
    assert (state.phase, state.reason) == ("Pending", "Inadmissible")
    assert "LocalQueue team-a doesn't exist" in state.message

    # Admitted and unsuspended, but the image cannot be pulled.
    c.objects[JOBS, NS, name].patch({"spec": {"suspend": False}})
    c.put(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-0-x7k2p", "namespace": NS,
                     "labels": {"batch.kubernetes.io/job-name": name, "batch.kubernetes.io/job-completion-index": "0"}},
        "spec": {"containers": [{"name": "modelfleet", "image": "ghcr.io/modelfleet/trainer:0.1.0"}]},
        "status": {"phase": "Pending", "containerStatuses": [{
            "name": "modelfleet", "image": "ghcr.io/modelfleet/trainer:0.1.0", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]},
    })
    state = await call(restarted.state, handle)
    assert state.reason == "ImagePullBackOff" and f"{name}-0-x7k2p" in state.message

    await call(restarted.cancel, handle)
    assert c.get(JOBS, name) is None
    await call(restarted.cancel, handle)  # already gone: not an error
    assert (await call(restarted.state, handle)).reason == "NotFound"
    assert await call(restarted.find, "ctr-feed-abc123", 1) is None
    assert c.get(JOBS, other.rsplit(":", 1)[1]) is not None  # only the cancelled job went


async def test_volcano_submit_adopt_diagnose_cancel(cluster: tuple[Cluster, Any]) -> None:
    c, api = cluster
    launcher = make_launcher(config("kubernetes"), api_client=api)
    assert isinstance(launcher, VolcanoLauncher)
    handle = await call(launcher.submit, "ctr-feed-abc123", 2, run_spec(), {naming.LABEL_INSTANCE: "ctr-feed"})
    name = handle.rsplit(":", 1)[1]
    assert handle == f"kubernetes://modelfleet/{NS}:{name}"
    vcjob = c.get(VCJOBS, name)
    assert vcjob is not None and vcjob["spec"]["queue"] == "team-a"
    assert vcjob["metadata"]["labels"][naming.LABEL_ATTEMPT] == "2"
    for task in vcjob["spec"]["tasks"]:
        assert task["template"]["metadata"]["labels"][naming.LABEL_RUN] == "ctr-feed-abc123"

    restarted = VolcanoLauncher(config("kubernetes"), api_client=api)
    assert await call(restarted.find, "ctr-feed-abc123", 2) == handle
    assert await call(restarted.find, "ctr-feed-abc123", 1) is None

    # Volcano made the pods; none fits on a node.
    pod_labels = dict(vcjob["spec"]["tasks"][0]["template"]["metadata"]["labels"])
    c.objects[VCJOBS, NS, name].patch({"status": {"state": {"phase": "Pending"}}})
    c.put(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-modelfleet-0-0", "namespace": NS, "labels": pod_labels},
        "spec": {"containers": [{"name": "modelfleet-0", "image": "ghcr.io/modelfleet/trainer:0.1.0"}]},
        "status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient cpu."}]},
    })
    # A pod of some other job must not leak into this job's diagnosis.
    c.put(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unrelated-0", "namespace": NS, "labels": {"app.kubernetes.io/instance": "unrelated"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "",
                   "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]},
    })
    state = await call(restarted.state, handle)
    assert (state.phase, state.reason) == ("Pending", "Unschedulable") and "Insufficient cpu" in state.message

    c.objects[VCJOBS, NS, name].patch({"status": {"state": {"phase": "Completed"}}})
    assert (await call(restarted.state, handle)).phase == "Succeeded"

    await call(restarted.cancel, handle)
    assert c.get(VCJOBS, name) is None
    await call(restarted.cancel, handle)
    assert (await call(restarted.state, handle)).reason == "NotFound"


async def test_kueue_scheduler_describe_and_list_for_torchx(cluster: tuple[Cluster, Any]) -> None:
    from torchx.specs.api import AppState

    from modelfleet.operator.kueue_scheduler import create_scheduler

    c, api = cluster
    launcher = KueueLauncher(config("kueue"), api_client=api)
    handle = await call(launcher.submit, "ctr-feed-abc123", 1, run_spec(), {})
    app_id = handle.rsplit("/", 1)[1]
    name = app_id.split(":", 1)[1]
    scheduler = create_scheduler("torchx", client=api)

    desc = await call(scheduler.describe, app_id)
    assert desc is not None and desc.state == AppState.PENDING and desc.msg.startswith("Queued")
    listed = await call(scheduler.list, {"namespace": NS})
    assert [(a.app_id, a.state) for a in listed] == [(app_id, AppState.PENDING)]

    c.objects[JOBS, NS, name].patch({"spec": {"suspend": False}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}})
    desc = await call(scheduler.describe, app_id)
    assert desc.state == AppState.FAILED and desc.structured_error_msg == "DeadlineExceeded"

    await call(scheduler.cancel, app_id)  # TorchX's cancel: exists() then _cancel_existing()
    assert c.get(JOBS, name) is None
    assert await call(scheduler.describe, app_id) is None
    await call(scheduler.cancel, app_id)  # gone: a no-op
