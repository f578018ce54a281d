"""Harness: the real kopf operator against kmock's Kubernetes emulator, in this test's event loop.

`cluster` is a `kmock.KubernetesEmulator` on loopback that serves our CRDs (from crds/*.yaml) in
discovery, plus core `namespaces` and `events`. kmock keeps objects and serves
create/get/list/watch/patch/delete and finalizers; `Cluster` adds what the operator relies on and
kmock leaves out: `metadata.generation` (bumped on spec changes only), `uid`, `resourceVersion`,
`creationTimestamp`, the status subresource's split (a PATCH of /status changes only `status`, a
PATCH of the object never changes `status`) and 201 Created. No resourceVersion conflicts, label
selectors, PUT, dry-run or schema validation.

`operator` starts the real operator (the handlers module's registry, kopf's own watchers, indexes,
daemons and finalizers) in-process with `kopf.operator(...)`, logged in to the emulator through an
`@kopf.on.login` handler. GPUs and a cluster's job controller cannot run here, so jobs go to a
`FakeLauncher` injected through the `launcher` seam of `handlers.OperatorContext` (jobs succeed,
fail or stay pending on the test's command; their metrics come back through `read_metrics`).
Stopping the operator (`await op.stop()`) and starting another one is a restart: nothing survives
but what is in the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import yaml
from kmock import ReactionMismatchError

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "default"
GROUP = "modelfleet.dev"
VERSION = "v1alpha1"


# --- the emulated API server --------------------------------------------------------------------


def _sees(view: Any, request: kmock.Request) -> bool:
    """Whether `view` sees `request`, without scanning every request served so far.

    kmock decides which reaction serves a request with `request in view`, which iterates all
    recorded requests (O(requests) per request, quadratic over a run). For the chains the emulator
    uses (root -> priority -> filter), membership is the filters' criteria on this one request.
    """
    from kmock._internal import dsl

    if isinstance(view, dsl.Root):
        return True
    if type(view) in (dsl.Filter, dsl.Priority, dsl.Chained, dsl.Reaction):
        if isinstance(view, dsl.Filter) and not view.criteria(request):
            return False
        return _sees(view._source, request)
    return request in view  # anything else (slices, groups): kmock's exact, slow way


class _FastDispatch(kmock.RawHandler):
    async def _handle(self, request: kmock.Request) -> Any:
        # kmock's RawHandler._handle, with `_sees` for the membership test.
        priorities = [payload.priorities for payload in self._payloads]
        longest = max((len(p) for p in priorities), default=0)
        keys = [tuple(-x for x in p) + (0,) * (longest - len(p)) for p in priorities]
        for index in sorted(range(len(keys)), key=lambda i: keys[i]):
            payload = self._payloads[index]
            if _sees(payload._source, request) and not payload._disabled.is_set():
                try:
                    return await payload(request)
                except ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        raise NotImplementedError("no reaction matches the request")


class Cluster(kmock.KubernetesEmulator, _FastDispatch):
    """kmock's emulator plus generation, uid, resourceVersion and the status subresource."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self.status_subresources: set[tuple[str, str]] = set()  # (group, plural)
        # Every write: (verb, plural, name, subresource); the tests count the operator's writes.
        self.writes: list[tuple[str, str, str | None, str | None]] = []

    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data
        res = request.resource
        if res is not None and isinstance(data, dict):
            sub = (res.group, res.plural) in self.status_subresources
            if request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("namespace", request.namespace)
                meta["generation"] = 1
                meta["creationTimestamp"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                meta["resourceVersion"] = str(next(self._rv))
                if sub:
                    data.pop("status", None)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (res, request.namespace, request.name)
                current = self.objects[key] if key in self.objects else None
                if current is not None and not current.deleted:
                    if request.subresource == "status":
                        for k in [k for k in data if k != "status"]:
                            del data[k]
                    elif sub:
                        data.pop("status", None)
                    meta = data.setdefault("metadata", {})
                    if "spec" in data and data["spec"] != current.get("spec"):
                        meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
                    meta["resourceVersion"] = str(next(self._rv))
        if res is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE):
            name = request.name
            if name is None and isinstance(data, dict):
                name = (data.get("metadata") or {}).get("name")
            self.writes.append((str(request.action.value).lower(), res.plural, name, request.subresource))
        response = await super()._handle(request)
        if request.action == kmock.action.CREATE and getattr(response, "status", None) == 200:
            response.set_status(201)
        return response

    def _KubernetesEmulator__get_objs(self, request: kmock.Request, strict: bool) -> list[Any]:
        # kmock scans every object per request; a named request is a dict lookup. Without this the
        # emulator, not the operator, dominates the benchmark's time at thousands of objects.
        if request.name is not None and request.resource is not None and (strict or request.namespace):
            obj = self._objects._objects.get((request.resource, request.namespace, request.name))
            return [obj] if obj is not None else []
        return kmock.KubernetesEmulator._KubernetesEmulator__get_objs(self, request, strict)  # type: ignore[attr-defined]

    # --- helpers for tests -----------------------------------------------------------------------

    def obj(self, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        key = (kmock.resource(GROUP, VERSION, plural), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def resource_key(self, plural: str) -> Any:
        return kmock.resource(GROUP, VERSION, plural)

    def objs(self, plural: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        res = kmock.resource(GROUP, VERSION, plural)
        return [
            obj.raw
            for (r, ns, _), obj in list(self.objects.items())
            if r == res and ns == namespace and not obj.deleted
        ]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        res = kmock.resource("", "v1", "events")
        return [
            obj.raw
            for (r, _, _), obj in list(self.objects.items())
            if r == res and not obj.deleted
            if name is None or obj.raw.get("involvedObject", {}).get("name") == name
        ]


def crd_resources() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]


def declare_resources(cluster: Cluster) -> None:
    for crd in crd_resources():
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            subresources = set(version.get("subresources", {}))
            cluster.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names["singular"],
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                namespaced=spec["scope"] == "Namespaced",
                verbs={"get", "list", "watch", "create", "patch", "delete"},
                subresources=subresources,
            )
            if "status" in subresources:
                cluster.status_subresources.add((spec["group"], names["plural"]))
    # kopf's peering objects (their CRDs ship in charts/modelfleet/files/kopf-peering-crds.yaml).
    for plural, kind, namespaced in (("clusterkopfpeerings", "ClusterKopfPeering", False), ("kopfpeerings", "KopfPeering", True)):
        cluster.resources[f"kopf.dev/v1/{plural}"] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=namespaced, verbs={"get", "list", "watch", "create", "patch"}
        )
    cluster.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list", "watch"}
    )
    cluster.resources["v1/events"] = kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs={"create", "get", "list"}
    )
    cluster.objects[kmock.resource("", "v1", "namespaces"), None, NAMESPACE] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE},
    }


@contextlib.asynccontextmanager
async def running_cluster() -> AsyncIterator[tuple[Cluster, str]]:
    async with Cluster() as cluster, kmock.Server(cluster) as server:
        declare_resources(cluster)
        yield cluster, str(server.url).rstrip("/")


def instance(name: str, template: str = "ctr", **spec: Any) -> dict:
    """A ModelInstance manifest on small synthetic data (each name its own seed)."""
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": name},
        "spec": {
            "templateRef": {"name": template},
            "event": "click",
            "data": {"format": "synthetic", "synthetic": {"rows": 200, "seed": len(name)}},
            **spec,
        },
    }


# --- the operator under test -------------------------------------------------------------------

from fakes import FakeLauncher  # noqa: E402,F401  (tests import it from here)


class RunningOperator:
    def __init__(self, task: asyncio.Task, stop: asyncio.Event, ctx: Any):
        self.task = task
        self._stop = stop
        self.ctx = ctx

    async def stop(self, graceful: bool = False) -> None:
        """Stop the operator. Not graceful (the default) is a crash: the task is cancelled.

        A graceful stop waits for kopf's "hung" tasks, which here include the emulator's
        never-ending watch responses (kopf counts every task spawned after its start), for 5 s.
        """
        if graceful:
            self._stop.set()
        else:
            # A crash: nothing of this operator may write any more, not even a worker thread
            # that is still in the middle of a plan (a dead process's threads are gone too).
            self.ctx.close()
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, timeout=20)


async def start_operator(
    url: str,
    launcher: Any,
    *,
    peering: str | None = None,
    priority: int = 0,
    liveness: str | None = None,
    **overrides: Any,
) -> RunningOperator:
    """The operator, standalone unless `peering` names a ClusterKopfPeering to elect through."""
    import kopf

    from modelfleet.operator import handlers
    from modelfleet.operator.config import OperatorConfig

    config = OperatorConfig(
        scheduler="local_cwd",
        output_uri=str(overrides.pop("output_uri", "/tmp/modelfleet-test")),
        namespaces=(NAMESPACE,),
        metrics_port=0,
        poll_seconds=overrides.pop("poll_seconds", 0.2),
    )
    ctx = handlers.OperatorContext(
        config=config,
        server=url,
        launcher=launcher,
        read_metrics=getattr(launcher, "read_metrics", None),
        debounce_seconds=overrides.pop("debounce_seconds", 0.05),
        resync_seconds=overrides.pop("resync_seconds", 1.0),
        **overrides,
    )
    registry = kopf.OperatorRegistry()
    handlers.register(registry)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, default_namespace=NAMESPACE)

    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            standalone=peering is None,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness,
            # kmock cannot parse GET /api/v1/namespaces (kopf lists namespaces when given names),
            # so the operator under test watches cluster-wide; the emulator holds one namespace.
            clusterwide=True,
            stop_flag=stop,
            ready_flag=ready,
            memo=kopf.Memo(ctx=ctx),
        )
    )
    await asyncio.wait_for(ready.wait(), timeout=20)
    return RunningOperator(task, stop, ctx)


# --- helpers ---------------------------------------------------------------------------------


async def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Wait until `check()` is truthy and return it; on timeout, fail with its last value.

    Waiting is not a timed assert: the bound only keeps a broken operator from hanging the suite.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            last = exc
        else:
            if last:
                return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last value: {last!r}")
        await asyncio.sleep(interval)


async def create(cluster: Cluster, plural: str, body: dict[str, Any]) -> None:
    """Create an object as a user would (through the API, so watchers see it)."""
    url = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{plural}"
    resp = await cluster.post(url, json=body)
    assert resp.status in (200, 201), await resp.text()


async def patch(cluster: Cluster, plural: str, name: str, body: dict[str, Any]) -> None:
    url = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{plural}/{name}"
    resp = await cluster.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status == 200, await resp.text()


async def delete(cluster: Cluster, plural: str, name: str) -> None:
    url = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{plural}/{name}"
    resp = await cluster.delete(url)
    assert resp.status == 200, await resp.text()


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


logging.getLogger("kopf").setLevel(logging.INFO)
