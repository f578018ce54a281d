"""Revisions and the resolved training spec of a (template, instance) pair.

A template's revision hashes only what changes the trained model: architecture, techniques
(sorted by name, with their params) and recipe. Labels, annotations, technique order and the
rollout policy do not change it, so they never retrain anything. An instance's desired revision
adds its own event, data and overrides to that.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelfleet.api.resources import ModelInstance, ModelTemplate, ModelTemplateSpec
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


def instance_revision(template: ModelTemplate, instance: ModelInstance) -> str:
    """The revision an instance should be trained at: template revision + its own inputs."""
    spec = instance.spec
    data = spec.data.model_dump(mode="json", by_alias=True)
    if data.get("version") is None:
        data.pop("version", None)  # unset: the same revision as before the field existed
    return short_hash(
        {
            "template": template_revision(template.spec),
            "event": spec.event,
            "data": data,
            "overrides": spec.overrides,
        }
    )


def resolve_training_spec(
    template: ModelTemplate, instance: ModelInstance, output_uri: str
) -> TrainingSpec:
    """The one fully resolved spec the trainer trains for this instance at its desired revision."""
    effective = apply_overrides(template.spec, instance.spec.overrides)
    return TrainingSpec(
        instance=instance.metadata.name,
        revision=instance_revision(template, instance),
        event=instance.spec.event,
        architecture=effective.architecture,
        techniques=sorted(effective.techniques, key=lambda t: t.name),
        recipe=effective.recipe,
        data=instance.spec.data,
        output_uri=output_uri,
        # the promoted model to be scored against (paired gate); not part of the revision
        baseline_uri=instance.status.model_uri if instance.status else None,
        gate_confidence=template.spec.rollout.gate.confidence,
    )
