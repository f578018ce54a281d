"""The kopf handlers: thin glue between Kubernetes events and the pure core.

Everything that decides lives in the core (`validation`, `planner`, `runs`); these handlers only
find the inputs (from kopf indexes, never a namespace-wide list per event), call the core in a
worker thread, and apply what it returns through `kube.KubeStore`.

Shape of the work (see docs/operator.md for the why):
- `templates_by_name`, `instances_by_template`, `runs_by_instance`: kopf indexes, kept current by
  kopf's watch streams. A plan reads them in O(n) for its template's n instances.
- One `template_rollout` daemon per ModelTemplate plans and applies. Every other handler only
  *wakes* it; the daemon debounces (`debounce_seconds`), so a burst of k instance or run events
  costs one plan, not k. While runs are in flight it also re-plans every `resync_seconds` or when
  the planner asks (`plan.requeue_after`), which drives canary -> waves -> promotion.
- `instance_changed` validates an instance against its template: problems become a `Stalled`
  condition and one Warning Event; it never raises, so kopf never retries it hot.
- The data pre-flight (`datachecks.DataChecks` on the context) runs in the plan's worker thread,
  only for instances that would start a run and only once per instance change (cached by uid,
  generation and what it reads); its problems stop those instances like a bad manifest.
- `run_monitor`, a daemon per TrainingRun in flight, reconciles the run with the launcher and
  wakes its template when the run finishes. `run_deleted` (behind the `naming.FINALIZER`
  finalizer) cancels the run's job.

The launcher seam: `OperatorContext.launcher` (and `read_metrics`) -- when unset, the launcher
comes from `launcher.make_launcher(config)`. Tests inject a fake there; nothing else differs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from modelfleet.api.resources import (
    FINISHED_PHASES,
    GROUP,
    ModelInstance,
    ModelTemplate,
    TrainingRun,
)
from modelfleet.operator import kopf_compat, kube, metrics, naming
from modelfleet.operator import status as st
from modelfleet.operator.config import OperatorConfig

log = logging.getLogger(__name__)

TEMPLATES = f"modeltemplates.{GROUP}"
INSTANCES = f"modelinstances.{GROUP}"
RUNS = f"trainingruns.{GROUP}"
MAX_BACKOFF_SECONDS = 600.0  # a plan that keeps failing is retried at least every 10 minutes


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class OperatorContext:
    """What the handlers share: configuration, the API client, the launcher, the wake-up events.

    Passed to kopf as `memo.ctx`. `launcher`/`read_metrics` are the seam for tests (a fake
    launcher) and for `modelfleet local`; `server` points the API client at a given URL.
    """

    config: OperatorConfig
    server: str | None = None
    kubeconfig: str | None = None  # `modelfleet operator --kubeconfig/--context`; None: in-cluster or the default
    context: str | None = None
    launcher: Any = None
    read_metrics: Callable[..., Any] | None = None
    debounce_seconds: float = 0.5
    resync_seconds: float = 30.0
    api_client: Any = None
    _stores: dict[str, kube.KubeStore] = dataclasses.field(default_factory=dict)
    _wakeups: dict[tuple[str, str], asyncio.Event] = dataclasses.field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _annotate: Callable[[dict[str, Any]], dict[str, str]] | None = None
    # (namespace, template) -> (revision, monotonic time the operator first saw it)
    _revision_seen: dict[tuple[str, str], tuple[str, float, bool]] = dataclasses.field(default_factory=dict)
    _closed: bool = False
    plans: int = 0  # plan cycles completed (tests and the benchmark wait on it)
    # The data pre-flight, cached per instance change (plans run often; the I/O must not).
    data_checks: Any = dataclasses.field(default_factory=lambda: _data_checks())

    def start(self, settings: kopf.OperatorSettings) -> None:
        self._loop = asyncio.get_running_loop()
        if self.api_client is None:
            self.api_client = kube.make_api_client(self.server, kubeconfig=self.kubeconfig, context=self.context)
        if self.launcher is None:
            from modelfleet.operator.launcher import make_launcher

            self.launcher = make_launcher(self.config, api_client=self.api_client)
        self._annotate = _kopf_diffbase(settings)

    def close(self) -> None:
        """Stop writing: plans or reconciles still running in worker threads write nothing more."""
        self._closed = True
        for store in list(self._stores.values()):
            store.close()

    def store(self, namespace: str) -> kube.KubeStore:
        st = self._stores.get(namespace)
        if st is None:
            st = self._stores[namespace] = kube.KubeStore(
                self.api_client,
                namespace,
                finalizers=(naming.FINALIZER,),
                annotate=self._annotate,
                on_error=metrics.api_error,
            )
            if self._closed:
                st.close()
        return st

    def _event(self, namespace: str, template: str) -> asyncio.Event:
        ev = self._wakeups.get((namespace, template))
        if ev is None:
            ev = self._wakeups[(namespace, template)] = asyncio.Event()
        return ev

    def wake(self, namespace: str, template: str | None) -> None:
        """Ask the template's rollout daemon to plan again (safe from any thread)."""
        if not template or self._loop is None:
            return
        if self._loop.is_running() and _in_loop(self._loop):
            self._event(namespace, template).set()
        else:
            self._loop.call_soon_threadsafe(lambda: self._event(namespace, template).set())


def _data_checks() -> Any:
    from modelfleet.operator.datachecks import DataChecks

    return DataChecks()


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled-configuration annotation, holding a digest of the object, not a copy.

    kopf's default stores the whole spec (and labels, annotations) in an annotation, so an object
    whose spec is over half the API server's 256 KiB annotation budget can no longer be patched by
    kopf, and every TrainingRun (a resolved copy of its template) carried a second copy. Our
    change handlers only need to know *that* an object changed, never the diff (`old`/`new`/`diff`
    are unused), so a SHA-256 of kopf's essence is enough: a changed spec changes the digest.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        import hashlib
        import json

        essence = super().build(body=body, extra_fields=extra_fields)
        text = json.dumps(_integral(essence), sort_keys=True, separators=(",", ":"), default=str)
        return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


def _integral(value: Any) -> Any:
    """1.0 as 1: the API server gives back JSON numbers without a fraction as integers, so the body
    we create and the object kopf later reads must hash alike (kopf's own comparison is 1.0 == 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _kopf_diffbase(settings: kopf.OperatorSettings) -> Callable[[dict[str, Any]], dict[str, str]]:
    """kopf's last-handled-configuration annotation for a body we create.

    kopf stores it on the first sight of every object it has change handlers for (TrainingRuns
    have the on-delete one). Writing it into the run at creation saves that second write per run.
    """
    storage = settings.persistence.diffbase_storage

    def annotate(body: dict[str, Any]) -> dict[str, str]:
        kbody = kopf.Body(body)
        patch = kopf.Patch()
        try:
            storage.store(body=kbody, patch=patch, essence=storage.build(body=kbody))
        except Exception as exc:  # an unusual storage: let kopf write it itself (one patch more)
            log.warning("cannot pre-set kopf's diffbase annotation on %s: %s", body.get("metadata", {}).get("name"), exc)
            return {}
        return {k: v for k, v in (patch.get("metadata", {}).get("annotations") or {}).items() if v}

    return annotate


# --- status helpers ---------------------------------------------------------------------------


async def _write_problem(
    ctx: OperatorContext,
    kind: str,
    namespace: str,
    name: str,
    body: kopf.Body,
    reason: str,
    message: str,
) -> None:
    """Stalled condition + one Warning Event, only when it is news (no write on resume/no-op).

    The same shape the planner writes for a problem (`status.stalled`), so the two never fight.
    """
    generation = body.get("metadata", {}).get("generation")
    current = dict(body.get("status") or {})
    new = {
        "observedGeneration": generation,
        "conditions": st.stalled(reason, message, generation, utcnow(), current.get("conditions")),
    }
    if not st.status_changed(current, new):
        return
    store = ctx.store(namespace)
    await asyncio.to_thread(store.patch_status, kind, name, new)
    await asyncio.to_thread(
        store.record_event, kind, name, "Warning", reason, message, uid=body.get("metadata", {}).get("uid")
    )


# --- the core, through small adapters -------------------------------------------------------


def _problems(result: Any) -> list[tuple[str, str]]:
    """(reason, message) pairs from the core's `Problem`s."""
    out = []
    for p in result or []:
        field = getattr(p, "field", "") or ""
        message = getattr(p, "message", str(p))
        if field and field not in message:
            message = f"{field}: {message}"
        out.append((getattr(p, "reason", "Invalid"), message))
    return out


def _parse(cls: type, body: dict[str, Any]) -> tuple[Any | None, tuple[str, str] | None]:
    from pydantic import ValidationError

    from modelfleet.errors import validation_message

    try:
        return cls.model_validate(_wire(body)), None
    except ValidationError as exc:
        return None, ("InvalidSpec", validation_message(exc))


def _wire(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the API models read it: our fields, without kopf's and the server's extras."""
    meta = body.get("metadata") or {}
    out = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations", "generation", "uid") if k in meta},
        "spec": body.get("spec"),
    }
    status = dict(body.get("status") or {})
    status.pop("kopf", None)
    if status:
        out["status"] = status
    return out


def validate_template(body: dict[str, Any]) -> tuple[ModelTemplate | None, list[tuple[str, str]]]:
    template, err = _parse(ModelTemplate, body)
    if err:
        return None, [err]
    from modelfleet.operator import validation

    return template, _problems(validation.validate_template(template))


def validate_instance(
    body: dict[str, Any], template: ModelTemplate | None
) -> tuple[ModelInstance | None, list[tuple[str, str]]]:
    """Problems of an instance; with `template` None, that is `TemplateNotFound`."""
    instance, err = _parse(ModelInstance, body)
    if err:
        return None, [err]
    from modelfleet.operator import validation

    return instance, _problems(validation.validate_instance(instance, template))


# --- registration ----------------------------------------------------------------------------


def _first(values: Any) -> dict[str, Any] | None:
    for v in values or ():
        return v
    return None


def register(registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Register every handler of the operator into `registry` (a fresh one per operator run)."""
    # Our indexes put kopf's readiness gate in front of every handler; without this fix the gate
    # is O(n^2) in the objects listed at startup (minutes at a few thousand instances).
    kopf_compat.install()

    @kopf.on.startup(registry=registry, id="operator_startup")
    async def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        ctx: OperatorContext = memo.ctx
        # Our finalizer is the run's job-cancel finalizer; runs are created with it already set.
        settings.persistence.finalizer = naming.FINALIZER
        # A digest, not a copy of the object: objects near the annotation limit stay patchable.
        settings.persistence.diffbase_storage = DigestDiffBaseStorage()
        # kopf would post an Event per handler call; we post our own, meaningful ones.
        settings.posting.enabled = False
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = max(4, settings.execution.max_workers or 0)
        if ctx.config.peering_lifetime:
            settings.peering.lifetime = ctx.config.peering_lifetime
        ctx.start(settings)

    @kopf.on.cleanup(registry=registry, id="operator_cleanup")
    async def operator_cleanup(memo: kopf.Memo, **_: Any) -> None:
        memo.ctx.close()
        client = memo.ctx.api_client
        if client is not None:
            await asyncio.to_thread(client.close)

    # --- indexes: what a plan needs, without a list call per event ---------------------------

    @kopf.index(TEMPLATES, registry=registry, id="templates_by_name")
    def templates_by_name(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
        return {(namespace, name): dict(body)}

    @kopf.index(INSTANCES, registry=registry, id="instances_by_template")
    def instances_by_template(namespace: str, spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict:
        return {(namespace, (spec.get("templateRef") or {}).get("name")): dict(body)}

    @kopf.index(RUNS, registry=registry, id="runs_by_instance")
    def runs_by_instance(namespace: str, spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict:
        return {(namespace, spec.get("instance")): dict(body)}

    # --- ModelTemplate -----------------------------------------------------------------------

    @kopf.on.create(TEMPLATES, registry=registry, id="template_changed")
    @kopf.on.update(TEMPLATES, registry=registry, id="template_changed")
    @kopf.on.resume(TEMPLATES, registry=registry, id="template_changed")
    async def template_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        memo.ctx.wake(namespace, name)

    @kopf.daemon(TEMPLATES, registry=registry, cancellation_timeout=5.0, id="template_rollout")
    async def template_rollout(
        namespace: str,
        name: str,
        body: kopf.Body,
        memo: kopf.Memo,
        stopped: kopf.DaemonStopped,
        instances_by_template: kopf.Index,
        runs_by_instance: kopf.Index,
        **_: Any,
    ) -> None:
        ctx: OperatorContext = memo.ctx
        wakeup = ctx._event(namespace, name)
        wakeup.set()  # plan once on start (and after an operator restart)
        delay: float | None = ctx.resync_seconds
        failures = 0  # plans failed in a row: the backoff doubles with each
        # kopf cancels a deleted template's daemon at once: clean up in `finally`.
        try:
            while not stopped:
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                if stopped:
                    break
                # Debounce: let a burst of instance/run events land in the indexes first.
                await asyncio.sleep(ctx.debounce_seconds)
                wakeup.clear()
                try:
                    requeue = await _plan_and_apply(ctx, namespace, name, dict(body), instances_by_template, runs_by_instance)
                    failures = 0
                except kube.StoreClosed:
                    return  # the operator is stopping
                except Exception as exc:  # one bad plan must not kill the daemon: say so, back off, retry
                    log.exception("planning %s/%s failed", namespace, name)
                    metrics.reconcile_error("plan")
                    failures += 1
                    requeue = min(ctx.resync_seconds * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
                    try:
                        await asyncio.to_thread(_plan_failed, ctx, namespace, dict(body), exc, requeue)
                    except kube.StoreClosed:
                        return
                    except Exception:
                        log.exception("recording the failed plan of %s/%s failed", namespace, name)
                ctx.plans += 1
                delay = min(x for x in (requeue, ctx.resync_seconds) if x is not None)
        finally:
            ctx._wakeups.pop((namespace, name), None)
            metrics.forget_template(namespace, name)

    @kopf.on.delete(TEMPLATES, registry=registry, optional=True, id="template_deleted")
    async def template_deleted(
        namespace: str, name: str, memo: kopf.Memo, instances_by_template: kopf.Index, **_: Any
    ) -> None:
        # Its instances say TemplateNotFound at once; their in-flight runs see the template gone
        # on their next poll and cancel their jobs (run_monitor), which is also what happens after
        # an operator restart, when this handler may never have run.
        ctx: OperatorContext = memo.ctx
        for body in list(instances_by_template.get((namespace, name), ())):
            _, problems = await asyncio.to_thread(validate_instance, dict(body), None)
            if problems:
                reason, message = problems[0]
                await _write_problem(ctx, "ModelInstance", namespace, body["metadata"]["name"], body, reason, message)

    # --- ModelInstance -----------------------------------------------------------------------

    @kopf.on.create(INSTANCES, registry=registry, id="instance_changed")
    @kopf.on.update(INSTANCES, registry=registry, id="instance_changed")
    @kopf.on.resume(INSTANCES, registry=registry, id="instance_changed")
    async def instance_changed(
        namespace: str,
        name: str,
        body: kopf.Body,
        spec: kopf.Spec,
        memo: kopf.Memo,
        templates_by_name: kopf.Index,
        **_: Any,
    ) -> None:
        ctx: OperatorContext = memo.ctx
        template_name = (spec.get("templateRef") or {}).get("name")
        template_body = _first(templates_by_name.get((namespace, template_name), ()))
        template = None
        if template_body is not None:
            template, template_problems = await asyncio.to_thread(validate_template, template_body)
            if template_problems:
                template = None  # the template carries its own Stalled condition
        if template_body is not None and template is None:
            return  # the template is invalid and says so itself; its fix re-plans this instance
        instance, problems = await asyncio.to_thread(validate_instance, dict(body), template)
        if problems:
            reason, message = problems[0]
            await _write_problem(ctx, "ModelInstance", namespace, name, body, reason, message)
            return  # recorded; a user's edit (a new generation) brings us back, not a retry
        ctx.wake(namespace, template_name)

    @kopf.on.delete(INSTANCES, registry=registry, optional=True, id="instance_deleted")
    async def instance_deleted(namespace: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
        memo.ctx.wake(namespace, (spec.get("templateRef") or {}).get("name"))

    # --- TrainingRun -------------------------------------------------------------------------

    def _in_flight(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
        return (status or {}).get("phase") not in FINISHED_PHASES and not meta.get("deletionTimestamp")

    @kopf.daemon(RUNS, registry=registry, when=_in_flight, cancellation_timeout=5.0, id="run_monitor")
    async def run_monitor(
        namespace: str,
        name: str,
        body: kopf.Body,
        memo: kopf.Memo,
        stopped: kopf.DaemonStopped,
        templates_by_name: kopf.Index,
        **_: Any,
    ) -> None:
        ctx: OperatorContext = memo.ctx
        while not stopped:
            raw = dict(body)
            template_name = naming.template_name(raw.get("metadata", {}))
            template_body = _first(templates_by_name.get((namespace, template_name), ()))
            try:
                phase, requeue = await _reconcile_run(ctx, namespace, raw, template_body)
            except kube.StoreClosed:
                return  # the operator is stopping
            except Exception:
                log.exception("reconciling run %s/%s failed", namespace, name)
                metrics.reconcile_error("run")
                phase, requeue = None, ctx.config.poll_seconds
            if phase in FINISHED_PHASES:
                ctx.wake(namespace, template_name)
                return
            await stopped.wait(requeue if requeue is not None else ctx.config.poll_seconds)

    @kopf.on.delete(RUNS, registry=registry, id="run_deleted")
    async def run_deleted(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        ctx: OperatorContext = memo.ctx
        status = body.get("status") or {}
        if status.get("phase") not in FINISHED_PHASES and status.get("appHandle"):
            await asyncio.to_thread(_cancel_job, ctx, dict(body))
        ctx.wake(namespace, naming.template_name(body.get("metadata", {})))

    return registry


def register_login(registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """kopf's login from the operator's own kubeconfig/context (or in-cluster ServiceAccount).

    A plain `kopf.OperatorRegistry` has none of the login handlers kopf's default registry has;
    this one reads the same Configuration as the operator's ApiClient, so kopf and our writes
    authenticate alike. kopf calls it again when the credentials stop working (a rotated token).
    """

    @kopf.on.login(registry=registry, id="operator_login")
    def operator_login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        ctx: OperatorContext = memo.ctx
        try:
            cfg = kube.load_configuration(ctx.kubeconfig, ctx.context)
        except Exception as exc:  # kubernetes' ConfigException, a missing file, a bad context
            raise kopf.LoginError(f"cannot load cluster credentials: {exc}") from exc
        return kube.connection_info(cfg, trust_env=settings.networking.trust_env)

    return registry


# --- the work itself (runs in worker threads) ---------------------------------------------------


async def _plan_and_apply(
    ctx: OperatorContext,
    namespace: str,
    name: str,
    template_body: dict[str, Any],
    instances_index: kopf.Index,
    runs_index: kopf.Index,
) -> float | None:
    instance_bodies = list(instances_index.get((namespace, name), ()))
    run_bodies = [r for i in instance_bodies for r in runs_index.get((namespace, i["metadata"]["name"]), ())]
    return await asyncio.to_thread(_plan_and_apply_sync, ctx, namespace, template_body, instance_bodies, run_bodies)


def _plan_and_apply_sync(
    ctx: OperatorContext,
    namespace: str,
    template_body: dict[str, Any],
    instance_bodies: list[dict[str, Any]],
    run_bodies: list[dict[str, Any]],
) -> float | None:
    from modelfleet.operator import apply, planner

    store = ctx.store(namespace)
    name = template_body["metadata"]["name"]
    # The indexes lag behind our own writes under load; read what we wrote, not an old copy.
    template_body = store.fresher("ModelTemplate", template_body)
    instance_bodies = [store.fresher("ModelInstance", b) for b in instance_bodies]
    run_bodies = [store.fresher("TrainingRun", b) for b in run_bodies]
    names = {i["metadata"]["name"] for i in instance_bodies}
    seen = {r["metadata"]["name"] for r in run_bodies}
    run_bodies += [
        store.fresher("TrainingRun", r, indexed=False)
        for r in store.not_yet_indexed("TrainingRun", seen)
        if (r.get("spec") or {}).get("instance") in names
    ]
    template, err = _parse(ModelTemplate, template_body)
    if template is None:
        # Not even readable (the planner validates everything readable itself).
        reason, message = err or ("InvalidSpec", "unreadable template")
        generation = template_body.get("metadata", {}).get("generation")
        current = dict(template_body.get("status") or {})
        new = {
            "observedGeneration": generation,
            "conditions": st.stalled(reason, message, generation, utcnow(), current.get("conditions")),
        }
        if st.status_changed(current, new):
            store.patch_status("ModelTemplate", name, new)
            store.record_event("ModelTemplate", name, "Warning", reason, message, uid=template_body["metadata"].get("uid"))
        return None

    # An unreadable instance or run is left out of the plan; the instance's own handler has
    # already given it a Stalled condition.
    instances = [i for i in (_parse(ModelInstance, b)[0] for b in instance_bodies) if i is not None]
    runs = [r for r in (_parse(TrainingRun, b)[0] for b in run_bodies) if r is not None]

    data_problems = ctx.data_checks.problems(template, instances, runs)  # I/O only for changed instances
    started = time.perf_counter()
    plan = planner.plan_template(
        template,
        instances,
        runs,
        utcnow(),
        output_uri=ctx.config.output_uri,
        image=ctx.config.trainer_image,
        data_problems=data_problems,
    )
    metrics.PLANNER_SECONDS.observe(time.perf_counter() - started)
    apply.apply_plan(plan, store, launcher=ctx.launcher)
    metrics.observe_plan(namespace, name, plan, instances)
    _observe_rollout(ctx, namespace, name, plan, runs)
    return plan.requeue_after


def _plan_failed(ctx: OperatorContext, namespace: str, template_body: dict[str, Any], exc: Exception, retry: float) -> None:
    """A plan that could not be applied: a condition and a Warning on the template, once per cause.

    The API server rejecting a write (4xx other than a conflict or throttling) will not go away by
    itself: `Stalled=True` (`ApplyRejected`). Anything else may be transient: `Reconciling=True`
    (`ApplyFailed`). Either way the daemon backs off (doubling up to `MAX_BACKOFF_SECONDS`).
    """
    store = ctx.store(namespace)
    meta = template_body.get("metadata", {})
    name, generation = meta["name"], meta.get("generation")
    status = getattr(exc, "status", None)
    rejected = isinstance(status, int) and 400 <= status < 500 and status not in (409, 429)
    reason = "ApplyRejected" if rejected else "ApplyFailed"
    detail = kube.api_message(exc) if status is not None else f"{type(exc).__name__}: {exc}"
    message = f"applying the plan failed ({status or type(exc).__name__}): {detail}; retrying in {retry:.0f}s"
    current = dict(store.fresher("ModelTemplate", template_body).get("status") or {})
    old = st.find(current.get("conditions"), "Ready") or {}
    if old.get("reason") == reason and (old.get("message") or "").split("; retrying")[0] == message.split("; retrying")[0]:
        return  # the same failure again: the condition already says so
    conds = (
        st.stalled(reason, message, generation, utcnow(), current.get("conditions"))
        if rejected
        else st.conditions(("False", reason, message), ("True", reason, message), ("False", reason, ""), generation, utcnow(), current.get("conditions"))
    )
    store.patch_status("ModelTemplate", name, {"observedGeneration": generation, "conditions": conds})
    store.record_event("ModelTemplate", name, "Warning", reason, message, uid=meta.get("uid"))


def _observe_rollout(ctx: OperatorContext, namespace: str, name: str, plan: Any, runs: list[Any]) -> None:
    """Runs by phase, and the propagation latency once every instance is promoted."""
    status = plan.template_status or {}
    revision = status.get("revision")
    if not revision:
        return
    key = (namespace, name)
    seen = ctx._revision_seen.get(key)
    if seen is None or seen[0] != revision:
        seen = ctx._revision_seen[key] = (revision, time.monotonic(), False)
    phases: dict[str, int] = {}
    for run in runs:
        phase = (run.status.phase if run.status else None) or "Pending"
        phases[phase] = phases.get(phase, 0) + 1
    metrics.set_runs(namespace, name, phases)
    total, up = status.get("instances"), status.get("upToDate")
    if not seen[2] and total and up is not None and up >= total - (status.get("blocked") or 0) and status.get("revision") == revision:
        metrics.PROPAGATION_SECONDS.observe(time.monotonic() - seen[1])
        ctx._revision_seen[key] = (revision, seen[1], True)


async def _reconcile_run(
    ctx: OperatorContext, namespace: str, body: dict[str, Any], template_body: dict[str, Any] | None
) -> tuple[str | None, float | None]:
    return await asyncio.to_thread(_reconcile_run_sync, ctx, namespace, body, template_body)


def _reconcile_run_sync(
    ctx: OperatorContext, namespace: str, body: dict[str, Any], template_body: dict[str, Any] | None
) -> tuple[str | None, float | None]:
    from modelfleet.api.resources import RolloutSpec
    from modelfleet.operator import planner
    from modelfleet.operator import runs as core_runs

    store = ctx.store(namespace)
    # The daemon's body may not show our last status write yet; never act on an older one.
    body = store.fresher("TrainingRun", body, indexed=False)
    run, err = _parse(TrainingRun, body)
    name = body["metadata"]["name"]
    if run is None:
        reason, message = err or ("InvalidSpec", "unparseable run")
        generation = body["metadata"].get("generation")
        conditions = st.stalled(reason, message, generation, utcnow(), (body.get("status") or {}).get("conditions"))
        store.patch_status(
            "TrainingRun",
            name,
            {"observedGeneration": generation, "conditions": conditions, "phase": "Failed", "reason": reason, "message": message},
        )
        return "Failed", None
    template = naming.template_name(body["metadata"])
    if template_body is None and template and planner.LABEL_WAVE in (body["metadata"].get("labels") or {}):
        # The planner's run of a template that is gone (deleted, also while we were down): nobody
        # will promote it, so its job is cancelled and deleted instead of training for nothing.
        update = core_runs.cancel_run(
            run, ctx.launcher, utcnow(), reason="TemplateNotFound", message=f"{name}: ModelTemplate {template!r} was deleted"
        )
        if update.status_patch:
            store.patch_status("TrainingRun", name, update.status_patch)
        for ev in update.events or ():
            store.record_event(ev.kind, ev.name, ev.type, ev.reason, ev.message)
        return "Cancelled", None
    policy = RolloutSpec()
    if template_body is not None:
        template, _ = _parse(ModelTemplate, template_body)
        if template is not None:
            policy = template.spec.rollout
    kwargs: dict[str, Any] = {"policy": policy}
    if ctx.read_metrics is not None:
        kwargs["read_metrics"] = ctx.read_metrics
    update = core_runs.reconcile_run(
        run, ctx.launcher, utcnow(), poll_seconds=ctx.config.poll_seconds, progress_seconds=ctx.config.progress_seconds, **kwargs
    )
    phase = run.status.phase if run.status else None
    if update.status_patch:
        store.patch_status("TrainingRun", name, update.status_patch)
        metrics.observe_run(run, update.status_patch)
        phase = update.status_patch.get("phase", phase)
    for ev in update.events or ():
        store.record_event(ev.kind, ev.name, ev.type, ev.reason, ev.message)
    return phase, update.requeue_after


def _cancel_job(ctx: OperatorContext, body: dict[str, Any]) -> None:
    from modelfleet.operator import runs as core_runs

    run, _ = _parse(TrainingRun, body)
    if run is None:
        return
    # The run is going away: cancel its job; its status is not worth a write any more.
    metrics.observe_run(run, core_runs.cancel_run(run, ctx.launcher, utcnow()).status_patch)
