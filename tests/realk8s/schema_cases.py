"""Good objects and how to send them to the real API server, shared by the schema tests."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from schema_tools import GOOD, INSTANCE, RUN, TEMPLATE, with_  # noqa: F401 (the tests' good objects)

from modelfleet.api.resources import BY_KIND

GROUP, VERSION = "modelfleet.dev", "v1alpha1"


def plural(kind: str) -> str:
    return BY_KIND[kind].plural


def create(kube: Any, namespace: str, doc: dict[str, Any], *, field_validation: str = "Strict") -> dict[str, Any]:
    return client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural(doc["kind"]), doc, field_validation=field_validation
    )


def replace(kube: Any, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(kube).replace_namespaced_custom_object(
        GROUP, VERSION, namespace, plural(doc["kind"]), doc["metadata"]["name"], doc, field_validation="Strict"
    )


def get(kube: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, plural(kind), name)


def refusal(call: Any) -> tuple[int, list[tuple[str, str]], str]:
    """(HTTP status, [(field, message)] of every cause, the whole message) of a refused request."""
    try:
        call()
    except ApiException as exc:
        body = json.loads(exc.body)
        causes = [(c.get("field", ""), c.get("message", "")) for c in (body.get("details") or {}).get("causes", [])]
        return exc.status, causes, body.get("message", "")
    raise AssertionError("the API server accepted it")
