"""Validation beyond the CRD schema: what only the technique catalogue and the template know.

Public functions (stable; the kopf handlers, the planner, `modelfleet local` and `plan` call them):
- `validate_template(t: ModelTemplate) -> list[Problem]`: unknown techniques, bad technique
  params, architecture/technique combinations the catalogue rejects.
- `validate_instance(i: ModelInstance, t: ModelTemplate | None) -> list[Problem]`: a missing
  template (`TemplateNotFound`), overrides outside the template's allow-list or of the wrong type
  (`InvalidOverride`), and a resolved spec the catalogue rejects (`InvalidTechnique`).
- `check_instance(i, t, *, output_uri, estimate, template_valid) -> (problems, spec, cost)`: the
  same checks, returning the resolved spec and its estimated cost (one resolution, for the planner).
- `unknown_fields(body, model) -> list[str]`: the fields of the user's last `kubectl apply`
  (client-side) that `model` does not know -- the API server pruned them when the client asked
  for no strict field validation. Both checks above report them first (`UnknownFields`).
- `Problem(reason, field, message)`: `field` is the dotted path of the bad value as the user wrote
  it (`spec.techniques[1].params.rank`); `message` starts with that path, so it reads on its own in
  a condition or an Event.

The caller turns a problem into `Ready=False` + `Stalled=True` with that reason and message, and
one Warning Event, and does not retry: the object's next change is the next look.

The technique catalogue is imported lazily: it is torch-free, but it belongs to the trainer and
the operator must keep working (validating everything else) in a build without it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from modelfleet.api.resolve import OverrideError, resolve_training_spec
from modelfleet.api.resources import ModelInstance, ModelTemplate, Resource
from modelfleet.trainer.spec import TrainingSpec

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase: InvalidTechnique, InvalidOverride, TemplateNotFound, ...
    field: str  # dotted path of the bad value, from the object's root (spec....)
    message: str  # starts with `field`


def _problem(reason: str, field: str, message: str) -> Problem:
    return Problem(reason, field, message if message.startswith(field) else f"{field}: {message}")


def _catalogue():
    try:
        from modelfleet.trainer.techniques import catalogue
    except ImportError:  # a build without the trainer's catalogue: nothing more to check
        return None
    return catalogue


def _technique_problem(exc: Exception) -> Problem:
    field = getattr(exc, "field", "") or ""
    field = f"spec.{field}" if field and not field.startswith("spec.") else field or "spec.techniques"
    text = str(exc)
    raw_field = getattr(exc, "field", "")
    if raw_field and text.startswith(f"{raw_field}: "):
        text = text[len(raw_field) + 2 :]
    return _problem("InvalidTechnique", field, text)


def unknown_fields(body: Mapping[str, Any], model: type[BaseModel]) -> list[str]:
    """Dotted paths (`spec.servingBugdet`) in the last client-side apply that `model` lacks.

    A create or update without strict field validation (`--validate=false`, `kubectl patch`, most
    API clients) has unknown fields pruned before they are stored: the stored object cannot show
    them, and managedFields record only what was kept. kubectl's last-applied-configuration
    annotation is the one copy of what the user wrote; server-side apply rejects unknown fields
    itself. Without the annotation there is nothing left to find.
    """
    text = ((body.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    return list(_unknown_in(text, model)) if text else []


@functools.lru_cache(maxsize=4096)  # re-planned objects carry the same annotation every time
def _unknown_in(text: str, model: type[BaseModel]) -> tuple[str, ...]:
    try:
        applied = json.loads(text)
        model.model_validate({**applied, "metadata": {"name": "applied"}})
    except ValidationError as exc:
        paths = (
            "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
            for e in exc.errors()
            if e["type"] == "extra_forbidden"
        )
        return tuple(sorted(set(paths)))
    except (ValueError, TypeError):  # not JSON, or not an object: not what kubectl writes
        pass
    return ()


def _unknown_problem(obj: Resource) -> list[Problem]:
    paths = unknown_fields({"metadata": {"annotations": obj.metadata.annotations}}, type(obj))
    if not paths:
        return []
    return [
        _problem(
            "UnknownFields",
            paths[0],
            f"{', '.join(paths)}: not in the {obj.kind_name} schema; the API server dropped "
            f"{'them' if len(paths) > 1 else 'it'} (applied without strict field validation). "
            "Fix the manifest and apply it again",
        )
    ]


def validate_template(t: ModelTemplate) -> list[Problem]:
    unknown = _unknown_problem(t)
    if unknown:
        return unknown
    cat = _catalogue()
    if cat is None:
        return []
    try:
        cat.validate_techniques(t.spec.techniques)
    except cat.TechniqueError as exc:
        return [_technique_problem(exc)]
    return []


def validate_instance(i: ModelInstance, t: ModelTemplate | None) -> list[Problem]:
    return check_instance(i, t)[0]


def check_instance(
    i: ModelInstance,
    t: ModelTemplate | None,
    *,
    output_uri: str = "memory://validate",
    estimate: Callable[[TrainingSpec], Any] | None = None,
    template_valid: bool | None = None,
    base_dir: str | None = None,
) -> tuple[list[Problem], TrainingSpec | None, Any]:
    """(problems, resolved spec, estimated cost) in one resolution -- what the planner needs.

    `estimate` defaults to the catalogue's `estimate_cost`, which also validates the resolved spec;
    a custom one (tests) is called after the catalogue validated the spec. `template_valid=True`
    skips re-validating the template (the planner already did, once per plan). `base_dir`: where
    relative data URIs are read from (`resolve_training_spec`).
    """
    unknown = _unknown_problem(i)
    if unknown:
        return unknown, None, None
    if t is None:
        ns = i.metadata.namespace
        where = f" in namespace {ns!r}" if ns else ""
        return [
            _problem(
                "TemplateNotFound",
                "spec.templateRef.name",
                f"ModelTemplate {i.spec.template_ref.name!r} not found{where}",
            )
        ], None, None
    try:
        spec = resolve_training_spec(t, i, output_uri=output_uri, base_dir=base_dir)
    except OverrideError as exc:
        return [_problem("InvalidOverride", f"spec.overrides[{exc.field!r}]", str(exc).split(": ", 1)[-1])], None, None
    cat = _catalogue()
    if cat is None:
        return [], spec, estimate(spec) if estimate else None
    # Template-level technique errors are the template's problem, not this instance's.
    if template_valid is None:
        template_valid = not validate_template(t)
    if not template_valid:
        return [], spec, None
    try:
        # The resolved spec (overrides and the instance's data applied) must still build: e.g. an
        # overridden embedding dim that attention heads no longer divide, or a data slice without
        # features.
        if estimate is None:
            cost = cat.estimate_cost(spec)
        else:
            cat.resolve_plan(spec)
            cost = estimate(spec)
    except cat.TechniqueError as exc:
        return [_technique_problem(exc)], None, None
    return [], spec, cost
