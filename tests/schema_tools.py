"""Check custom resources against the generated CRDs the way the API server does, offline.

The API server validates a custom resource against the CRD's structural openAPIV3Schema, rejects
unknown fields (kubectl's default server-side field validation is Strict), then runs the CEL
rules. jsonschema's Draft 4 validator speaks the OpenAPI 3.0 dialect (boolean exclusive bounds);
`nullable` and the pruning of unknown fields are translated here; CEL runs on cel-python.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"


def load_crds(folder: Path = CRD_DIR) -> dict[str, dict[str, Any]]:
    """kind -> CRD document."""
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[doc["spec"]["names"]["kind"]] = doc
    return out


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _strict(v) for k, v in node.items()}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    return node


def json_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return _strict(copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))


def schema_errors(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Schema violations as `path: message`, the path in the API server's dotted style."""
    validator = jsonschema.Draft4Validator(json_schema(crd))
    errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path)
        errors.append(f"{path.replace('.[', '[')}: {err.message}")
    return errors


def _rules(node: Any, path: str = ""):
    """(path, schema-node, rule) for every x-kubernetes-validations rule in a schema."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule
        for key, child in node.get("properties", {}).items():
            yield from _rules(child, f"{path}.{key}")


def _at(obj: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def cel_errors(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Messages of the CEL rules that fail; transition rules (oldSelf) run only with `old`."""
    env = celpy.Environment()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    failed = []
    for path, rule in _rules(schema):
        value = _at(obj, path)
        if value is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if "oldSelf" in rule["rule"]:
            old_value = _at(old, path) if old is not None else None
            if old_value is None:
                continue
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        result = env.program(env.compile(rule["rule"])).evaluate(activation)
        if not bool(result):
            failed.append(f"{path}: {rule['message']}")
    return failed


# --- good objects of each kind, and edits of them -------------------------------------------

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
