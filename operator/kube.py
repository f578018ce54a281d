"""The Kubernetes API as a `Store`: custom objects, their status subresource, and Events.

The planner's actions are applied through this store (`modelfleet.operator.apply.apply_plan`). It
uses the official `kubernetes` client (synchronous; the kopf handlers call it from a worker thread).
Every call is one API request; the store counts them per verb so the metrics and the propagation
benchmark can report API writes per instance.

Idempotence is what makes the operator restart-safe: creating an object that already exists (409)
is not an error -- the name is deterministic, so the existing object *is* the one we wanted -- and
deleting or patching one that is gone (404) is not an error either.

API verbs used (the chart's RBAC must allow them):
- modelfleet.dev modeltemplates, modelinstances, trainingruns: get, list, watch, patch (kopf)
- modelfleet.dev trainingruns: create, delete
- modelfleet.dev */status: patch
- core events: create (ours and kopf's)
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from modelfleet.api.resources import BY_KIND, GROUP, VERSION

log = logging.getLogger(__name__)

PLURALS: dict[str, str] = {kind: cls.plural for kind, cls in BY_KIND.items()}


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """The cluster's client Configuration: in-cluster (a pod's ServiceAccount) unless a kubeconfig
    file or context is named, else `$KUBECONFIG` / `~/.kube/config` with its current context.

    TLS verification and credentials are the kubeconfig's own (CA, client certificate, token,
    exec plugin); nothing here turns verification off.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    if not kubeconfig and not context:
        try:
            config.load_incluster_config(client_configuration=cfg)
            return cfg
        except config.ConfigException:
            pass
    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return cfg


def context_namespace(kubeconfig: str | None = None, context: str | None = None) -> str | None:
    """The namespace of the kubeconfig's context (`context`, else the current one), if it sets one."""
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # no kubeconfig at all: in a cluster, or nothing to say
        return None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or None


def make_api_client(server: str | None = None, *, kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient: `server` when given (tests: a plain-HTTP emulator), else `load_configuration`."""
    from kubernetes import client

    if server:
        cfg = client.Configuration()
        cfg.host = server
        cfg.verify_ssl = False
        api = client.ApiClient(cfg)
    else:
        api = client.ApiClient(load_configuration(kubeconfig, context))
    api.user_agent = user_agent()
    return api


def user_agent() -> str:
    """Ours, with the host (a pod's name) and process: audit logs tell replicas and restarts apart."""
    import os
    import socket

    from modelfleet import __version__

    return f"modelfleet-operator/{__version__} ({socket.gethostname()}; pid {os.getpid()})"


def connection_info(cfg: Any, *, trust_env: bool = False) -> Any:
    """kopf's credentials from the same client Configuration the operator's ApiClient uses.

    What kopf's own `login_via_client` does, but for the kubeconfig file and context given to
    `modelfleet operator` rather than only the default one.
    """
    import kopf

    # kubernetes >= 36 keeps the bearer token under BearerToken, older ones under authorization.
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        trust_env=trust_env,
    )


def api_message(exc: Any) -> str:
    """The API server's own message of a failed request (its Status body), else the exception."""
    import json

    try:
        return str(json.loads(exc.body).get("message"))
    except Exception:
        return str(getattr(exc, "body", "") or exc)


def _ours(status: Any) -> dict[str, Any]:
    """A status without kopf's own bookkeeping (`status.kopf`), which the operator never writes."""
    return {k: v for k, v in (status or {}).items() if k != "kopf"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StoreClosed(RuntimeError):
    """A write after the operator began to stop (a plan still running in a worker thread)."""


class KubeStore:
    """One namespace of the cluster, seen through the Store interface.

    `on_error(verb)` is called on every failed API call (metrics); `owner_refs` decides whether
    created runs are owned by their instance (cascade delete through the garbage collector).
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        *,
        finalizers: tuple[str, ...] = (),
        annotate: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        on_error: Callable[[str], None] | None = None,
    ):
        from kubernetes import client

        self.namespace = namespace
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._finalizers = finalizers
        self._annotate = annotate
        self._on_error = on_error
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # "create trainingruns", "patch modelinstances/status", ...
        self.closed = False  # set when the operator stops: a worker thread still running writes nothing
        # The status this operator last wrote, per (kind, name). The operator is the only writer of
        # status, so this is the truth until the watch stream (kopf's indexes) catches up; a plan
        # reads it instead of a lagging index, so it never re-sends a patch it already made.
        self.written_status: dict[tuple[str, str], dict[str, Any]] = {}
        # Objects this operator created that its indexes may not show yet.
        self.created: dict[tuple[str, str], dict[str, Any]] = {}

    def close(self) -> None:
        self.closed = True

    # --- bookkeeping -------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        if self.closed and not what.startswith(("get ", "list ")):
            raise StoreClosed(f"{what}: the operator is stopping")
        with self._lock:
            self.calls[what] += 1

    def _failed(self, verb: str, exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(verb)
        log.warning("Kubernetes API %s failed: %s", verb, exc)

    @property
    def writes(self) -> int:
        return sum(n for what, n in self.calls.items() if not what.startswith(("get ", "list ")))

    # --- the Store interface -----------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        plural = PLURALS[kind]
        self._count(f"get {plural}")
        try:
            return self._custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            self._failed("get", exc)
            raise

    def list(self, kind: str) -> list[dict[str, Any]]:
        plural = PLURALS[kind]
        self._count(f"list {plural}")
        out = self._custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        return list(out.get("items", []))

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create `body`; None when an object of that name already exists (it is the same one)."""
        from kubernetes.client.exceptions import ApiException

        plural = PLURALS[kind]
        body = dict(body)
        meta = dict(body.get("metadata") or {})
        meta.setdefault("namespace", self.namespace)
        if kind == "TrainingRun" and self._finalizers:
            # Set at creation so kopf need not add it with a second write.
            meta["finalizers"] = sorted(set(meta.get("finalizers") or []) | set(self._finalizers))
        body["metadata"] = meta
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        body.setdefault("kind", kind)
        if self._annotate is not None:
            meta["annotations"] = {**(meta.get("annotations") or {}), **self._annotate(body)}
        self._count(f"create {plural}")
        try:
            out = self._custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)
        except ApiException as exc:
            if exc.status == 409:
                return None
            self._failed("create", exc)
            raise
        with self._lock:
            self.created[(kind, meta["name"])] = out if isinstance(out, dict) else body
        return out

    def patch_status(self, kind: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the object is gone."""
        from kubernetes.client.exceptions import ApiException

        plural = PLURALS[kind]
        self._count(f"patch {plural}/status")
        try:
            out = self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, plural, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status == 404:
                with self._lock:
                    self.written_status.pop((kind, name), None)
                return None
            self._failed("patch", exc)
            raise
        if isinstance(out, dict):
            with self._lock:
                self.written_status[(kind, name)] = _ours(out.get("status"))
        return out

    def fresher(self, kind: str, body: dict[str, Any], *, indexed: bool = True) -> dict[str, Any]:
        """`body` (from a possibly lagging index or watch event) with the status we last wrote.

        Once the index shows that status, the entry is dropped (memory stays bounded by the lag).
        `indexed`: the body came from the index, so it no longer needs `created`'s copy.
        """
        key = (kind, body.get("metadata", {}).get("name"))
        with self._lock:
            if indexed:
                self.created.pop(key, None)
            written = self.written_status.get(key)
            if written is None:
                return body
            if _ours(body.get("status")) == written:
                del self.written_status[key]
                return body
        return {**body, "status": written}

    def not_yet_indexed(self, kind: str, seen: set[str]) -> list[dict[str, Any]]:
        """Objects of `kind` this operator created that are not among `seen` (the index's names)."""
        with self._lock:
            return [b for (k, name), b in self.created.items() if k == kind and name not in seen]

    def delete(self, kind: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        plural = PLURALS[kind]
        self._count(f"delete {plural}")
        try:
            self._custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            self._failed("delete", exc)
            raise

    def record_event(
        self, kind: str, name: str, type: str, reason: str, message: str, *, uid: str | None = None
    ) -> None:
        """A core/v1 Event about one of our objects. Best effort: an Event is never worth a retry."""
        from kubernetes.client.exceptions import ApiException

        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind,
                "name": name,
                "namespace": self.namespace,
                **({"uid": uid} if uid else {}),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "modelfleet-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "modelfleet-operator",
        }
        self._count("create events")
        try:
            self._core.create_namespaced_event(self.namespace, body)
        except (ApiException, ValueError) as exc:
            self._failed("create", exc)
