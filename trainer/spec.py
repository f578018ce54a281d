"""The torch-free training spec: architecture, techniques, recipe, data and the resolved spec.

This is where the trainer and the operator meet. The Kubernetes resources in `modelfleet.api`
embed these models; the operator resolves a template + instance into one `TrainingSpec` and the
trainer trains exactly that. Nothing here imports torch.

Field names are snake_case in Python and camelCase on the wire (YAML, JSON, CRDs).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Base for every wire model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- CRD hints: what the API server checks at admission (api/crd.py carries them over) ---------
# A rule the server checks and pydantic checks too uses one message in both places.


def cel_rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL rule for `x-kubernetes-validations` (the API server checks it at apply)."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def list_map(key: str) -> dict[str, Any]:
    """Lists keyed by a field merge item by item under server-side apply (GitOps tools and the
    operator then own different items), and the API server rejects duplicate keys."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


TRAIN_URI_REQUIRED = "trainUri is required unless format is synthetic"  # DataSpec's CEL rule


# --- architecture -----------------------------------------------------------------------------

InteractionKind = Literal["dot", "dcnv2", "lowrank", "attention", "concat"]


class EmbeddingSpec(SpecModel):
    """Hashed embeddings, one table per categorical feature."""

    dim: int = Field(16, ge=2, le=1024, description="Embedding dimension of every sparse feature.")
    buckets: int = Field(
        100_000, ge=2, le=100_000_000, description="Hash buckets per categorical feature."
    )


class InteractionSpec(SpecModel):
    """How feature embeddings interact. Techniques may replace it (e.g. `dcnv2-cross`)."""

    kind: InteractionKind = Field("dot", description="dot (DLRM), dcnv2, lowrank, attention or concat.")
    layers: int = Field(2, ge=1, le=16, description="Cross layers (dcnv2, lowrank) or attention blocks.")
    rank: int = Field(16, ge=1, le=1024, description="Rank of the low-rank cross.")
    heads: int = Field(2, ge=1, le=32, description="Attention heads.")


class TaskSpec(SpecModel):
    """One prediction head. Several tasks share the bottom (multi-task)."""

    name: str = Field(..., pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="Task name, e.g. click.")
    label_column: str | None = Field(
        None, description="Label column of this task; the instance's `event` when unset."
    )
    weight: float = Field(1.0, gt=0, le=100, description="Weight of this task's loss.")


LayerWidth = Annotated[int, Field(ge=1, le=65536)]


class ArchitectureSpec(SpecModel):
    """The model, built from standard components."""

    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec)
    bottom_mlp: list[LayerWidth] = Field(
        default_factory=lambda: [64, 16],
        min_length=1,
        max_length=16,
        description="Dense (bottom) MLP layer widths; the last one must equal embedding.dim for dot interaction.",
    )
    interaction: InteractionSpec = Field(default_factory=InteractionSpec)
    over_arch: list[LayerWidth] = Field(
        default_factory=lambda: [64, 32],
        max_length=16,
        description="Over-arch MLP layer widths above the interaction.",
    )
    tasks: list[TaskSpec] = Field(
        default_factory=lambda: [TaskSpec(name="click")],
        min_length=1,
        max_length=8,
        description="Prediction heads.",
        json_schema_extra=list_map("name"),
    )

    @model_validator(mode="after")
    def _check(self) -> ArchitectureSpec:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: task names must be unique, got {names}")
        return self


# --- techniques ------------------------------------------------------------------------------


class TechniqueRef(SpecModel):
    """A technique by name, with its params (checked against the technique catalogue)."""

    name: str = Field(..., pattern=r"^[a-z][a-z0-9-]{0,62}$", description="Registered technique name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Technique parameters; see `modelfleet techniques`."
    )


# --- recipe ----------------------------------------------------------------------------------


class RecipeSpec(SpecModel):
    """How to train."""

    optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(512, ge=1, le=1_048_576)
    steps: int | None = Field(None, ge=1, le=100_000_000, description="Training steps; wins over epochs.")
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the training data when steps is unset.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    eval_batch_size: int = Field(4096, ge=1, le=1_048_576)
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints.")
    max_bad_row_fraction: float = Field(
        0.01, ge=0, le=1, description="Malformed rows skipped before the run fails."
    )


# --- data ------------------------------------------------------------------------------------

DataFormat = Literal["criteo", "csv", "parquet", "synthetic"]


class SyntheticSpec(SpecModel):
    """A seeded generator with a known signal, for tests and demos."""

    rows: int = Field(20_000, ge=100, le=100_000_000)
    dense: int = Field(13, ge=0, le=1024)
    sparse: int = Field(26, ge=0, le=1024)
    cardinality: int = Field(1000, ge=2, le=10_000_000)
    positive_rate: float = Field(0.25, gt=0, lt=1)
    seed: int = Field(0, ge=0)


class DataSpec(SpecModel):
    """Where an instance's data lives and which columns it uses."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule("self.format == 'synthetic' || has(self.trainUri)", TRAIN_URI_REQUIRED, ".trainUri")
            ]
        }
    }

    format: DataFormat = Field(..., description="criteo (TSV: label, 13 ints, 26 cats), csv, parquet or synthetic.")
    train_uri: str | None = Field(None, min_length=1, max_length=4096, description="fsspec URI of the training data (file, dir or glob).")
    eval_uri: str | None = Field(None, min_length=1, max_length=4096, description="fsspec URI of held-out data; else evalFraction of train.")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Held-out fraction when evalUri is unset.")
    dense_columns: list[str] = Field(default_factory=list, description="Numeric feature columns.")
    sparse_columns: list[str] = Field(default_factory=list, description="Categorical feature columns.")
    dense_transform: Literal["log", "standard", "none"] = Field(
        "log", description="Normalisation of numeric features."
    )
    delimiter: str | None = Field(None, max_length=1, description="Field separator (criteo: tab, csv: comma).")
    synthetic: SyntheticSpec | None = None
    version: str | None = Field(
        None,
        max_length=128,
        description=(
            "Opaque version of the data behind the URIs (a snapshot id, a date partition). The "
            "operator hashes the data spec, not the files: change this to retrain on new data "
            "at the same URIs."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.format == "synthetic":
            if self.synthetic is None:
                self.synthetic = SyntheticSpec()
        elif self.train_uri is None:
            raise ValueError(TRAIN_URI_REQUIRED)
        return self


# --- resources -------------------------------------------------------------------------------


class ResourcesSpec(SpecModel):
    """What one training job asks for."""

    nnodes: int = Field(1, ge=1, le=1024)
    gpus_per_node: int = Field(0, ge=0, le=16)
    cpu: int = Field(2, ge=1, le=512, description="CPU cores per node.")
    memory_mb: int = Field(4096, ge=256, le=4_194_304, description="Memory per node in MiB.")


# --- the resolved spec -----------------------------------------------------------------------


class TrainingSpec(SpecModel):
    """Everything one training run needs, fully resolved. Snapshot into the TrainingRun."""

    instance: str = Field(..., description="The ModelInstance this run trains.")
    revision: str = Field(..., description="The instance's desired revision this run trains.")
    event: str = Field(..., description="Label column of the first task (the instance's event).")
    architecture: ArchitectureSpec
    techniques: list[TechniqueRef] = Field(default_factory=list)
    recipe: RecipeSpec = Field(default_factory=RecipeSpec)
    data: DataSpec
    output_uri: str = Field(..., description="fsspec URI for checkpoints, metrics.json and the spec.")

    def label_columns(self) -> list[str]:
        return [t.label_column or self.event for t in self.architecture.tasks]


# --- hashing ---------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace. Pydantic models are dumped in wire form first."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(value: Any, length: int = 10) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]
