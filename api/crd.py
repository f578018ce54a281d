"""CRD generation from the pydantic resources: structural OpenAPI v3 schemas for apiextensions/v1.

Pydantic's JSON schema is close to what Kubernetes wants; this module makes it structural:
every `$ref` inlined, titles dropped, `Optional[X]` turned into `nullable`, free-form dicts
marked `x-kubernetes-preserve-unknown-fields`, and the CEL rules the models carry kept.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from modelfleet.api.resources import CATEGORY, GROUP, RESOURCES, VERSION, Resource

_DROP = {"title"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **extra}, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _structural(node: Any) -> Any:
    """Rewrite one (already inlined) pydantic schema node into a structural Kubernetes schema."""
    if isinstance(node, list):
        return [_structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP}

    # Optional[X] -> X + nullable
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [b for b in any_of if b.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = {**non_null[0], **rest}
            if merged.get("default", 0) is None:
                merged.pop("default")
            merged["nullable"] = True
            return _structural(merged)
        raise ValueError(f"cannot make a structural schema of anyOf {any_of}")

    # JSON Schema's numeric exclusive bounds -> OpenAPI v3.0's boolean flags
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[flag] = node.pop(bound)
            node[bound] = True

    # Literal of strings -> enum with a type
    if "const" in node and "enum" not in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = "string" if all(isinstance(v, str) for v in node["enum"]) else "integer"

    if node.get("type") == "object":
        props = node.get("properties")
        additional = node.get("additionalProperties")
        if props is not None:
            node["properties"] = {k: _structural(v) for k, v in props.items()}
            node.pop("additionalProperties", None)  # extra="forbid": the API server prunes unknowns
        elif additional in (None, True, {}):
            # dict[str, Any]: free-form (technique params, overrides)
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
        else:
            node["additionalProperties"] = _structural(additional)
    elif node.get("type") == "array":
        node["items"] = _structural(node.get("items", {}))
    elif "type" not in node and not any(k.startswith("x-kubernetes") for k in node):
        # Any: keep whatever the user wrote
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def openapi_schema(resource: type[Resource]) -> dict[str, Any]:
    """The structural openAPIV3Schema of one resource (spec, status, apiVersion/kind/metadata)."""
    spec_model = resource.model_fields["spec"].annotation
    status_model = resource.model_fields["status"].annotation.__args__[0]  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    for name, model in (("spec", spec_model), ("status", status_model)):
        raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[union-attr]
        out[name] = _structural(_inline(raw, raw.get("$defs", {})))
    out["status"].pop("required", None)
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": out["spec"],
            "status": out["status"],
        },
    }
    # CEL reads metadata.name only at the root, and a fieldPath cannot point into metadata
    rule = resource.name_rule()
    if rule is not None:
        schema["x-kubernetes-validations"] = [rule]
    return schema


def crd(resource: type[Resource]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "modelfleet", "app.kubernetes.io/part-of": "modelfleet"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind_name,
                "listKind": f"{resource.kind_name}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(resource.printer_columns),
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


def crd_filename(resource: type[Resource]) -> str:
    return f"{GROUP}_{resource.plural}.yaml"


def render_crds() -> dict[str, str]:
    """File name -> YAML text of every CRD, exactly as `modelfleet crds` writes it."""
    header = "# Generated by `modelfleet crds` from modelfleet.api.resources; do not edit.\n"
    return {
        crd_filename(r): header + yaml.safe_dump(crd(r), sort_keys=False, width=100)
        for r in RESOURCES
    }


def write_crds(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_crds().items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written
