"""Revisions and the resolved training spec of a (template, instance) pair.

A template's revision hashes only what changes the trained model: architecture, techniques
(sorted by name, with their params) and recipe. Labels, annotations, technique order and the
rollout policy do not change it, so they never retrain anything. An instance's desired revision
adds its own event, data and overrides to that.

Data URIs are hashed as written: a relative path (`data/train.csv`, relative to the manifests'
folder in `modelfleet local`) is resolved only in the spec the trainer reads (`base_dir`), so a
folder copied or moved elsewhere keeps every revision.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelfleet.api.resources import ModelInstance, ModelTemplate, ModelTemplateSpec
from modelfleet.trainer.preflight import resolve_uri
from modelfleet.trainer.spec import TrainingSpec, short_hash


class OverrideError(ValueError):
    """An instance override that is not allowed or does not fit the template."""

    def __init__(self, field: str, message: str):
        super().__init__(f"spec.overrides[{field!r}]: {message}")
        self.field = field


def _model_fields(spec: ModelTemplateSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, include={"architecture", "recipe"})


def template_revision(spec: ModelTemplateSpec) -> str:
    techniques = sorted(
        (t.model_dump(mode="json", by_alias=True) for t in spec.techniques), key=lambda t: t["name"]
    )
    return short_hash({**_model_fields(spec), "techniques": techniques})


def apply_overrides(spec: ModelTemplateSpec, overrides: dict[str, Any]) -> ModelTemplateSpec:
    """The template spec with an instance's allow-listed overrides applied (validated again)."""
    if not overrides:
        return spec
    allowed = set(spec.overridable)
    doc = spec.model_dump(mode="json", by_alias=True)
    for path, value in sorted(overrides.items()):
        if path not in allowed:
            raise OverrideError(
                path,
                "not overridable by this template; allowed: "
                + (", ".join(sorted(allowed)) if allowed else "none (template.spec.overridable is empty)"),
            )
        node = doc
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return ModelTemplateSpec.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise OverrideError(next(iter(sorted(overrides))), err["msg"]) from None


def instance_revision(template: ModelTemplate, instance: ModelInstance, *, template_rev: str | None = None) -> str:
    """The revision an instance should be trained at: template revision + its own inputs.

    `template_rev`: `template_revision(template.spec)` when the caller has it (one per plan, not
    one per instance)."""
    spec = instance.spec
    data = spec.data.model_dump(mode="json", by_alias=True)
    if data.get("version") is None:
        data.pop("version", None)  # unset: the same revision as before the field existed
    return short_hash(
        {
            "template": template_rev or template_revision(template.spec),
            "event": spec.event,
            "data": data,
            "overrides": spec.overrides,
        }
    )


def resolve_training_spec(
    template: ModelTemplate, instance: ModelInstance, output_uri: str, *, base_dir: str | None = None
) -> TrainingSpec:
    """The one fully resolved spec the trainer trains for this instance at its desired revision.

    `base_dir`: the folder relative data URIs are read from (the revision hashes them as written).
    """
    effective = apply_overrides(template.spec, instance.spec.overrides)
    data = instance.spec.data
    if base_dir:
        uris = {"train_uri": data.train_uri, "eval_uri": data.eval_uri}
        data = data.model_copy(update={k: resolve_uri(v, base_dir) for k, v in uris.items() if v})
    return TrainingSpec(
        instance=instance.metadata.name,
        revision=instance_revision(template, instance),
        event=instance.spec.event,
        architecture=effective.architecture,
        techniques=sorted(effective.techniques, key=lambda t: t.name),
        recipe=effective.recipe,
        data=data,
        output_uri=output_uri,
    )
