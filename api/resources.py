"""The three resources of `modelfleet.dev/v1alpha1`: ModelTemplate, ModelInstance, TrainingRun.

These pydantic models are the one source of truth: the CRDs in crds/ are generated from them
(`modelfleet crds`), the operator parses what it watches with them, and `modelfleet local` reads
manifests with them. Cross-field rules that the API server can check are attached as CEL
(`x-kubernetes-validations`) through `json_schema_extra`; the same rules are enforced in Python
validators so `modelfleet local`/`plan` reject the same input.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from modelfleet.trainer.report import BadRow
from modelfleet.trainer.spec import (
    ArchitectureSpec,
    DataSpec,
    RecipeSpec,
    ResourcesSpec,
    SpecModel,
    TechniqueRef,
    TrainingSpec,
    cel_rule,
    list_map,
)

GROUP = "modelfleet.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "modelfleet"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Fields an instance may be allowed to override (dotted paths into the template's spec).
OVERRIDABLE_FIELDS = (
    "architecture.embedding.dim",
    "architecture.embedding.buckets",
    "architecture.bottomMlp",
    "architecture.overArch",
    "recipe.optimizer",
    "recipe.learningRate",
    "recipe.weightDecay",
    "recipe.batchSize",
    "recipe.steps",
    "recipe.epochs",
    "recipe.seed",
    "recipe.precision",
)


_list_map = list_map
_cel = cel_rule


# --- shared status pieces --------------------------------------------------------------------


class Condition(SpecModel):
    """A kstatus-style condition: Ready, Reconciling, Stalled (plus kind-specific ones)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field("", description="CamelCase machine-readable reason.")
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class Metrics(SpecModel):
    """Evaluation metrics of a trained model on held-out data."""

    ne: float | None = Field(None, description="Normalized entropy: log loss / entropy of the base rate.")
    logloss: float | None = None
    auc: float | None = None
    calibration: float | None = Field(None, description="Mean prediction / observed base rate.")
    flops_per_example: int | None = None
    examples: int | None = Field(None, description="Held-out examples evaluated.")
    bad_rows: int | None = Field(
        None, ge=0, description="Malformed rows the trainer skipped (within recipe.maxBadRowFraction), all data URIs."
    )
    first_bad_row: BadRow | None = Field(None, description="The first malformed row: file, row and what is wrong.")


# --- ModelTemplate ---------------------------------------------------------------------------


class CanarySpec(SpecModel):
    """How many instances train first; the rest wait until the canaries pass the gate."""

    count: int | None = Field(None, ge=0, le=10_000, description="Canary instances (wins over percent).")
    percent: int | None = Field(None, ge=0, le=100, description="Canary share of instances, rounded up.")


class GateSpec(SpecModel):
    """A new model is promoted only if its NE is not worse than the promoted one's by more than this."""

    metric: Literal["ne"] = "ne"
    tolerance: float = Field(
        0.0, ge=0, le=1, description="Allowed relative NE regression, e.g. 0.002 = 0.2 %."
    )
    max_ne: float | None = Field(
        None, gt=0, description="Absolute NE ceiling for a first model (no promoted model yet)."
    )


class RolloutSpec(SpecModel):
    """How a technique change rolls out across the template's instances."""

    max_concurrent_runs: int = Field(4, ge=1, le=10_000, description="Runs in flight at once.")
    canary: CanarySpec = Field(default_factory=lambda: CanarySpec(count=1))
    gate: GateSpec = Field(default_factory=GateSpec)
    failure_budget: int = Field(
        2, ge=0, le=10_000, description="Failed or gate-failed runs per revision before the rollout pauses."
    )
    max_retries: int = Field(2, ge=0, le=20, description="Retries of a failed run (new attempt).")
    backoff_seconds: int = Field(30, ge=1, le=86_400, description="First retry delay; doubles per attempt.")
    on_supersede: Literal["Cancel", "Finish"] = Field(
        "Cancel", description="What happens to a run whose revision is no longer wanted."
    )
    run_history_limit: int = Field(3, ge=0, le=100, description="Finished runs kept per instance.")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Finished runs older than this are deleted (beyond the newest)."
    )
    paused: bool = Field(False, description="Stop starting new runs; runs in flight finish.")


class ModelTemplateSpec(SpecModel):
    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.techniques) || self.techniques.all(a, self.techniques.exists_one(b, b.name == a.name))",
                    "technique names must be unique",
                    ".techniques",
                ),
                _cel(
                    "!has(self.rollout) || !has(self.rollout.canary) || !has(self.rollout.canary.count)"
                    " || self.rollout.canary.count <= self.rollout.maxConcurrentRuns",
                    "rollout.canary.count must not exceed rollout.maxConcurrentRuns",
                    ".rollout.canary.count",
                ),
            ]
        }
    }

    architecture: ArchitectureSpec = Field(default_factory=ArchitectureSpec)
    techniques: list[TechniqueRef] = Field(
        default_factory=list, max_length=64, json_schema_extra=_list_map("name")
    )
    recipe: RecipeSpec = Field(default_factory=RecipeSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    overridable: list[Literal[OVERRIDABLE_FIELDS]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="Fields (dotted paths) an instance may override."
    )
    image: str | None = Field(None, description="Trainer image; the operator's default when unset.")

    @model_validator(mode="after")
    def _check(self) -> ModelTemplateSpec:
        names = [t.name for t in self.techniques]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"techniques: technique names must be unique, repeated: {dupes}")
        c = self.rollout.canary.count
        if c is not None and c > self.rollout.max_concurrent_runs:
            raise ValueError(
                f"rollout.canary.count ({c}) must not exceed rollout.maxConcurrentRuns "
                f"({self.rollout.max_concurrent_runs})"
            )
        return self


class TechniqueAdoption(SpecModel):
    name: str
    instances: int = Field(0, description="Instances whose promoted model has this technique.")


class ModelTemplateStatus(SpecModel):
    observed_generation: int | None = None
    revision: str | None = Field(None, description="Hash of architecture, techniques and recipe.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_list_map("type"))
    instances: int = 0
    up_to_date: int = Field(0, description="Instances whose promoted model is at the current revision.")
    training: int = 0
    failed: int = 0
    blocked: int = 0
    wave: int = Field(0, description="Rollout wave: 0 none, 1 canary, 2+ waves after it.")
    rollout_phase: str | None = Field(None, description="Idle, Canary, Rolling, Paused or Complete.")
    techniques: list[TechniqueAdoption] = Field(default_factory=list)
    revision_changed_at: str | None = None


# --- ModelInstance ---------------------------------------------------------------------------


class TemplateRef(SpecModel):
    name: str = Field(..., min_length=1, max_length=253, pattern=NAME_PATTERN)


class ServingBudget(SpecModel):
    max_flops_per_example: int | None = Field(
        None, ge=1, description="Instances whose model would cost more are blocked before training."
    )


class ModelInstanceSpec(SpecModel):
    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _cel(
                    "self.templateRef.name == oldSelf.templateRef.name",
                    "templateRef is immutable; create a new ModelInstance instead",
                    ".templateRef",
                ),
            ]
        }
    }

    template_ref: TemplateRef
    event: str = Field(..., min_length=1, max_length=256, description="Label column (task/event) to predict.")
    data: DataSpec
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted template fields -> values; only those in the template's `overridable`.",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    serving_budget: ServingBudget = Field(default_factory=ServingBudget)
    suspend: bool = Field(False, description="Start no new runs for this instance.")


class ModelInstanceStatus(SpecModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_list_map("type"))
    template_revision: str | None = None
    target_revision: str | None = Field(None, description="The revision this instance should be at.")
    promoted_revision: str | None = None
    active_run: str | None = None
    metrics: Metrics | None = Field(None, description="Metrics of the promoted model.")
    model_uri: str | None = Field(None, description="Output URI of the promoted model.")
    techniques: list[str] = Field(default_factory=list, description="Techniques of the promoted model.")
    estimated_flops_per_example: int | None = None
    last_run_phase: str | None = None


# --- TrainingRun -----------------------------------------------------------------------------

RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Superseded", "Cancelled"]
FINISHED_PHASES = ("Succeeded", "Failed", "Superseded", "Cancelled")


class TrainingRunSpec(SpecModel):
    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                _cel("self == oldSelf", "a TrainingRun's spec is immutable; create a new run"),
            ]
        }
    }

    instance: str = Field(..., min_length=1, max_length=253, pattern=NAME_PATTERN)
    revision: str = Field(..., min_length=1, max_length=64)
    template_revision: str | None = None
    training: TrainingSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: str | None = None


class TrainingRunStatus(SpecModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_list_map("type"))
    phase: RunPhase | None = None
    app_handle: str | None = Field(None, description="TorchX app handle of the current attempt.")
    scheduler: str | None = None
    attempts: int = 0
    next_attempt_at: str | None = None
    start_time: str | None = None
    finish_time: str | None = None
    metrics: Metrics | None = None
    message: str | None = None
    reason: str | None = None


# --- the resources ---------------------------------------------------------------------------


class ObjectMeta(SpecModel):
    """The part of metadata modelfleet reads; everything else is kept as is."""

    model_config = SpecModel.model_config | {"extra": "allow"}

    name: str = Field(..., min_length=1, max_length=253, pattern=NAME_PATTERN)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


class Resource(SpecModel):
    model_config = SpecModel.model_config | {"extra": "ignore"}

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    singular: ClassVar[str]
    short_names: ClassVar[list[str]]
    printer_columns: ClassVar[list[dict[str, Any]]]

    api_version: Literal["modelfleet.dev/v1alpha1"] = API_VERSION
    metadata: ObjectMeta


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _ready(path: str = ".status.conditions[?(@.type==\"Ready\")].status") -> dict[str, Any]:
    return {"name": "Ready", "type": "string", "jsonPath": path}


def _reason() -> dict[str, Any]:
    return {
        "name": "Reason",
        "type": "string",
        "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason",
        "priority": 1,
    }


class ModelTemplate(Resource):
    kind_name: ClassVar[str] = "ModelTemplate"
    plural: ClassVar[str] = "modeltemplates"
    singular: ClassVar[str] = "modeltemplate"
    short_names: ClassVar[list[str]] = ["mt"]
    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
        {"name": "Up-To-Date", "type": "integer", "jsonPath": ".status.upToDate"},
        {"name": "Total", "type": "integer", "jsonPath": ".status.instances"},
        _ready(),
        _AGE,
        {"name": "Training", "type": "integer", "jsonPath": ".status.training", "priority": 1},
        {"name": "Failed", "type": "integer", "jsonPath": ".status.failed", "priority": 1},
        {"name": "Blocked", "type": "integer", "jsonPath": ".status.blocked", "priority": 1},
        {"name": "Phase", "type": "string", "jsonPath": ".status.rolloutPhase", "priority": 1},
        _reason(),
    ]

    kind: Literal["ModelTemplate"] = "ModelTemplate"
    spec: ModelTemplateSpec
    status: ModelTemplateStatus | None = None


class ModelInstance(Resource):
    kind_name: ClassVar[str] = "ModelInstance"
    plural: ClassVar[str] = "modelinstances"
    singular: ClassVar[str] = "modelinstance"
    short_names: ClassVar[list[str]] = ["mi"]
    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {"name": "Template", "type": "string", "jsonPath": ".spec.templateRef.name"},
        {"name": "Revision", "type": "string", "jsonPath": ".status.promotedRevision"},
        {"name": "NE", "type": "number", "jsonPath": ".status.metrics.ne"},
        _ready(),
        _AGE,
        {"name": "Target", "type": "string", "jsonPath": ".status.targetRevision", "priority": 1},
        {"name": "Run", "type": "string", "jsonPath": ".status.activeRun", "priority": 1},
        {"name": "AUC", "type": "number", "jsonPath": ".status.metrics.auc", "priority": 1},
        {"name": "Event", "type": "string", "jsonPath": ".spec.event", "priority": 1},
        _reason(),
    ]

    kind: Literal["ModelInstance"] = "ModelInstance"
    spec: ModelInstanceSpec
    status: ModelInstanceStatus | None = None


class TrainingRun(Resource):
    kind_name: ClassVar[str] = "TrainingRun"
    plural: ClassVar[str] = "trainingruns"
    singular: ClassVar[str] = "trainingrun"
    short_names: ClassVar[list[str]] = ["tr"]
    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {"name": "Instance", "type": "string", "jsonPath": ".spec.instance"},
        {"name": "Revision", "type": "string", "jsonPath": ".spec.revision"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "NE", "type": "number", "jsonPath": ".status.metrics.ne"},
        _AGE,
        {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "priority": 1},
        {"name": "App", "type": "string", "jsonPath": ".status.appHandle", "priority": 1},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
    ]

    kind: Literal["TrainingRun"] = "TrainingRun"
    spec: TrainingRunSpec
    status: TrainingRunStatus | None = None


RESOURCES: tuple[type[Resource], ...] = (ModelTemplate, ModelInstance, TrainingRun)
BY_KIND: dict[str, type[Resource]] = {r.kind_name: r for r in RESOURCES}
