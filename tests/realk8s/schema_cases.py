"""Good objects and how to send them to the real API server, shared by the schema tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelfleet.api.resources import BY_KIND

GROUP, VERSION = "modelfleet.dev", "v1alpha1"

TEMPLATE: dict[str, Any] = {
    "apiVersion": "modelfleet.dev/v1alpha1",
    "kind": "ModelTemplate",
    "metadata": {"name": "ctr"},
    "spec": {
        "architecture": {"bottomMlp": [64, 16], "tasks": [{"name": "click"}, {"name": "like", "labelColumn": "liked"}]},
        "techniques": [{"name": "dcnv2-cross", "params": {"layers": 2}}, {"name": "layer-norm"}],
        "rollout": {"maxConcurrentRuns": 4, "canary": {"count": 1}},
    },
}

INSTANCE: dict[str, Any] = {
    "apiVersion": "modelfleet.dev/v1alpha1",
    "kind": "ModelInstance",
    "metadata": {"name": "ctr-feed"},
    "spec": {
        "templateRef": {"name": "ctr"},
        "event": "click",
        "data": {"format": "parquet", "trainUri": "s3://bucket/feed/"},
        "resources": {"nnodes": 2, "gpusPerNode": 8},
    },
}

RUN: dict[str, Any] = {
    "apiVersion": "modelfleet.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "ctr-feed-0123456789"},
    "spec": {
        "instance": "ctr-feed",
        "revision": "0123456789",
        "training": {
            "instance": "ctr-feed",
            "revision": "0123456789",
            "event": "click",
            "architecture": {},
            "data": {"format": "synthetic"},
            "outputUri": "s3://bucket/out/ctr-feed-0123456789",
        },
    },
}

GOOD = {"ModelTemplate": TEMPLATE, "ModelInstance": INSTANCE, "TrainingRun": RUN}


def plural(kind: str) -> str:
    return BY_KIND[kind].plural


def with_(doc: dict[str, Any], path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """A copy of `doc` with the dotted `path` set to `value` (or deleted)."""
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


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
