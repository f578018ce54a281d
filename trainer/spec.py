"""The torch-free training spec: architecture, techniques, recipe, data and the resolved spec.

This is where the trainer and the operator meet. The Kubernetes resources in `modelfleet.api`
embed these models; the operator resolves a template + instance into one `TrainingSpec` and the
trainer trains exactly that. Nothing here imports torch.

Field names are snake_case in Python and camelCase on the wire (YAML, JSON, CRDs).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Base for every wire model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    # Fields added after revisions were first computed: left out of every dump (so of every
    # revision and checkpoint fingerprint) while they hold their default, so a spec that never
    # sets them keeps its revision and an operator upgrade retrains nothing.
    _later_fields: ClassVar[frozenset[str]] = frozenset()

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        out = handler(self)
        if self._later_fields and isinstance(out, dict):
            for name, alias, default in _later_defaults(type(self)):
                if getattr(self, name) == default:
                    out.pop(alias if info.by_alias else name, None)
        return out


@functools.cache
def _later_defaults(cls: type[SpecModel]) -> tuple[tuple[str, str, Any], ...]:
    # Once per class: pydantic's get_default inspects the field each call, and every revision
    # dumps one DataSpec per instance per plan.
    fields = cls.model_fields
    return tuple(
        (name, fields[name].alias or name, fields[name].get_default(call_default_factory=True))
        for name in sorted(cls._later_fields)
    )


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

InteractionKind = Literal["dot", "dcnv2", "lowrank", "attention", "concat", "fm"]
CROSS_KINDS = ("dcnv2", "lowrank")


class EmbeddingSpec(SpecModel):
    """One embedding table per categorical feature (all stored as one tensor)."""

    _later_fields = frozenset({"init_std", "l2"})

    dim: int = Field(16, ge=2, le=1024, description="Embedding dimension of every sparse feature.")
    buckets: int = Field(
        100_000, ge=2, le=100_000_000, description="Hash buckets per categorical feature."
    )
    init_std: float = Field(
        1e-4, gt=0, le=1, description="Std of the normal initialisation of the embedding (and wide) tables."
    )
    l2: float = Field(
        1e-5,
        ge=0,
        le=1,
        description=(
            "L2 penalty on the embedding (and wide) vectors a batch looks up: l2 * sum of their "
            "squares, averaged over the batch, added to the training loss."
        ),
    )


class InteractionSpec(SpecModel):
    """How feature embeddings interact. Techniques may replace it (e.g. `dcnv2-cross`)."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.structure) || self.structure == 'stacked' || self.kind in ['dcnv2', 'lowrank']",
                    "structure 'parallel' applies to the cross kinds (dcnv2, lowrank) only",
                    ".structure",
                )
            ]
        }
    }
    _later_fields = frozenset({"structure"})

    kind: InteractionKind = Field(
        "dot",
        description=(
            "dot (DLRM), dcnv2 (full-rank cross), lowrank (cross with W = U V), attention, concat, or "
            "fm (DeepFM: a factorization-machine term over the sparse embeddings added to the logit, "
            "the over-arch reading the concatenated features)."
        ),
    )
    layers: int = Field(2, ge=1, le=16, description="Cross layers (dcnv2, lowrank) or attention blocks.")
    rank: int = Field(16, ge=1, le=1024, description="Rank of the low-rank cross.")
    heads: int = Field(2, ge=1, le=32, description="Attention heads.")
    structure: Literal["stacked", "parallel"] = Field(
        "stacked",
        description=(
            "Cross kinds only. stacked: the over-arch MLP reads the cross output; parallel: the cross "
            "and the over-arch both read the concatenated features and the heads read both outputs "
            "(DeepCTR's DCN)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> InteractionSpec:
        if self.structure == "parallel" and self.kind not in CROSS_KINDS:
            raise ValueError(
                f"interaction.structure 'parallel' applies to the cross kinds (dcnv2, lowrank) only, "
                f"not to kind {self.kind!r}"
            )
        return self


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

    _later_fields = frozenset({"wide"})

    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec)
    bottom_mlp: list[LayerWidth] = Field(
        default_factory=lambda: [64, 16],
        max_length=16,
        description=(
            "Dense (bottom) MLP layer widths; empty: the numeric features enter the interaction as "
            "they are (projected to embedding.dim for dot and attention when the widths differ)."
        ),
    )
    interaction: InteractionSpec = Field(default_factory=InteractionSpec)
    over_arch: list[LayerWidth] = Field(
        default_factory=lambda: [64, 32],
        max_length=16,
        description="Over-arch MLP layer widths above the interaction.",
    )
    wide: bool = Field(
        False,
        description=(
            "Add a linear (wide) part to every task's logit: one weight per categorical value and "
            "one per numeric feature (Wide&Deep, DeepFM, DeepCTR's DCN)."
        ),
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

    _later_fields = frozenset({"embedding_updates"})

    optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(512, ge=1, le=1_048_576)
    steps: int | None = Field(None, ge=1, le=100_000_000, description="Training steps; wins over epochs.")
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the training data when steps is unset.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU; bf16: bf16 autocast on CUDA and CPU."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    eval_batch_size: int = Field(4096, ge=1, le=1_048_576)
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints.")
    max_bad_row_fraction: float = Field(
        0.01, ge=0, le=1, description="Malformed rows skipped before the run fails."
    )
    embedding_updates: Literal["auto", "sparse", "dense"] = Field(
        "auto",
        description=(
            "sparse: only the embedding rows a batch looked up are updated (lazy Adam for adam/adamw); "
            "dense: every row, by the recipe's optimizer; auto: sparse when the tables have more rows "
            "than one batch can touch (batchSize x sparse features), else dense. Several worker "
            "processes always update densely."
        ),
    )


# --- data ------------------------------------------------------------------------------------

DataFormat = Literal["criteo", "csv", "parquet", "synthetic"]
# Criteo files have no header: the label, 13 integer and 26 categorical columns, tab-separated.
CRITEO_DENSE_COLUMNS = [f"I{i}" for i in range(1, 14)]
CRITEO_SPARSE_COLUMNS = [f"C{i}" for i in range(1, 27)]


class SyntheticSpec(SpecModel):
    """A seeded generator with a known signal, for tests and demos."""

    rows: int = Field(20_000, ge=100, le=100_000_000)
    dense: int = Field(13, ge=0, le=1024)
    sparse: int = Field(26, ge=0, le=1024)
    cardinality: int = Field(1000, ge=2, le=10_000_000)
    positive_rate: float = Field(0.25, gt=0, lt=1)
    seed: int = Field(0, ge=0)


# Each encoding kind's own field (hash's is optional: the embedding's buckets by default); the
# server's CEL rules and the model's check are made from this table, with the same messages.
ENCODING_FIELDS = {"hash": "buckets", "identity": "cardinality", "vocabulary": "maxSize"}


def _needs(kind: str) -> str:
    return f"kind {kind} needs {ENCODING_FIELDS[kind]}"


def _applies(kind: str) -> str:
    return f"{ENCODING_FIELDS[kind]} applies to kind {kind} only"


BUCKETIZE_ONE_OF = "set exactly one of buckets (fitted quantiles) and boundaries"
LABEL_VALUES_DISJOINT = "a value cannot be both positive and negative"


class SparseEncoding(SpecModel):
    """How one categorical column becomes embedding ids in [0, table size)."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                *(cel_rule(f"self.kind != '{k}' || has(self.{f})", _needs(k), f".{f}")
                  for k, f in ENCODING_FIELDS.items() if k != "hash"),
                *(cel_rule(f"self.kind == '{k}' || !has(self.{f})", _applies(k), f".{f}")
                  for k, f in ENCODING_FIELDS.items()),
            ]
        }
    }

    column: str = Field(..., min_length=1, description="A column of data.sparseColumns.")
    kind: Literal["hash", "identity", "vocabulary"] = Field(
        "hash",
        description=(
            "hash: the value's text hashed into `buckets` ids (collisions possible); identity: the "
            "value is already an integer id in [0, cardinality), anything else (out of range, "
            "missing) gets the one extra id `cardinality`; vocabulary: the `maxSize` most frequent "
            "values of the train split get ids 0..maxSize-1 (by count, then value), every other "
            "value the extra id `maxSize`."
        ),
    )
    buckets: int | None = Field(
        None, ge=2, le=100_000_000, description="hash: ids per column (default architecture.embedding.buckets)."
    )
    cardinality: int | None = Field(None, ge=1, le=100_000_000, description="identity: number of valid ids.")
    max_size: int | None = Field(None, ge=1, le=10_000_000, description="vocabulary: values kept.")
    min_count: int = Field(
        1, ge=1, le=1_000_000_000, description="vocabulary: values seen fewer times in the train split share the extra id."
    )

    @model_validator(mode="after")
    def _check(self) -> SparseEncoding:
        for kind, alias in ENCODING_FIELDS.items():
            value = getattr(self, type(self).field_name(alias))
            if kind == self.kind and value is None and kind != "hash":
                raise ValueError(_needs(kind))
            if kind != self.kind and value is not None:
                raise ValueError(f"{_applies(kind)}, not to kind {self.kind}")
        return self

    @classmethod
    def field_name(cls, alias: str) -> str:
        return next(n for n, f in cls.model_fields.items() if (f.alias or n) == alias)

    def table_size(self, default_buckets: int) -> int:
        """Embedding rows of this column: ids are emitted in [0, table_size)."""
        if self.kind == "identity":
            return self.cardinality + 1  # type: ignore[operator]
        if self.kind == "vocabulary":
            return self.max_size + 1  # type: ignore[operator]
        return self.buckets or default_buckets


class Bucketize(SpecModel):
    """A numeric column also fed as the embedding id of its bucket (one more sparse feature)."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule("has(self.buckets) != has(self.boundaries)", BUCKETIZE_ONE_OF),
            ]
        }
    }

    column: str = Field(..., min_length=1, description="A numeric column of the files.")
    buckets: int | None = Field(
        None, ge=2, le=100_000,
        description=(
            "Buckets of equal frequency: boundaries are the quantiles of a seeded sample of the train "
            "split (data.fitSampleRows); tied quantiles merge, so fewer buckets may be used."
        ),
    )
    boundaries: list[float] | None = Field(
        None, min_length=1, max_length=100_000,
        description="Increasing boundaries b: bucket i holds b[i-1] <= x < b[i] (ids 0..len(b)).",
    )

    @model_validator(mode="after")
    def _check(self) -> Bucketize:
        if (self.buckets is None) == (self.boundaries is None):
            raise ValueError(BUCKETIZE_ONE_OF)
        b = self.boundaries or []
        if any(hi <= lo for lo, hi in zip(b, b[1:], strict=False)):
            raise ValueError(f"boundaries must increase strictly, got {b}")
        return self

    def table_size(self) -> int:
        return self.buckets if self.buckets is not None else len(self.boundaries or []) + 1


LabelText = Annotated[str, Field(max_length=256)]  # bounded: the API server costs CEL rules by size


class LabelValues(SpecModel):
    """How text labels ('yes'/'no', '>50K'/'<=50K') map to 1 and 0."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule("self.positive.all(v, !(v in self.negative))", LABEL_VALUES_DISJOINT, ".negative"),
            ]
        }
    }

    positive: list[LabelText] = Field(..., min_length=1, max_length=64, description="Values that mean 1, compared as text.")
    negative: list[LabelText] = Field(
        ..., min_length=1, max_length=64,
        description="Values that mean 0. A row whose label is in neither list is malformed.",
    )

    @model_validator(mode="after")
    def _check(self) -> LabelValues:
        both = sorted(set(self.positive) & set(self.negative))
        if both:
            raise ValueError(f"{LABEL_VALUES_DISJOINT}: {both}")
        return self


class DataSpec(SpecModel):
    """Where an instance's data lives and which columns it uses."""

    _later_fields = frozenset({"encodings", "bucketize", "label_values", "fit_sample_rows"})
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
        "log",
        description=(
            "Normalisation of numeric features: log sign(x)*log1p(|x|); standard (x-mean)/std, "
            "fitted on a seeded sample of the whole train split (data.fitSampleRows); none."
        ),
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
    encodings: list[SparseEncoding] = Field(
        default_factory=list,
        max_length=1024,
        description=(
            "Per-column encoding of data.sparseColumns (hash, identity, vocabulary); a column not "
            "listed is hashed into architecture.embedding.buckets."
        ),
        json_schema_extra=list_map("column"),
    )
    bucketize: list[Bucketize] = Field(
        default_factory=list,
        max_length=1024,
        description="Numeric columns also fed as embeddings of their bucket (sparse features after sparseColumns).",
        json_schema_extra=list_map("column"),
    )
    label_values: LabelValues | None = Field(
        None, description="Map text labels to 1/0; unset: labels must be the numbers 0 and 1 (or booleans)."
    )
    fit_sample_rows: int = Field(
        65_536,
        ge=1_000,
        le=10_000_000,
        description=(
            "Rows of the seeded uniform sample of the whole train split that fits denseTransform "
            "standard and bucketize quantiles (vocabularies count every row)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.format == "synthetic":
            if self.synthetic is None:
                self.synthetic = SyntheticSpec()
        elif self.train_uri is None:
            raise ValueError(TRAIN_URI_REQUIRED)
        sparse = self.sparse_column_names()
        for key, items in (("encodings", self.encodings), ("bucketize", self.bucketize)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.column in seen:
                    raise ValueError(f"data.{key}[{i}].column: {item.column!r} is listed twice")
                seen.add(item.column)
                if key == "encodings" and item.column not in sparse:
                    raise ValueError(
                        f"data.encodings[{i}].column: {item.column!r} is not one of data.sparseColumns {sparse}"
                    )
        if self.format == "synthetic" and (self.encodings or self.bucketize or self.label_values):
            raise ValueError("data.encodings, data.bucketize and data.labelValues do not apply to synthetic data")
        return self

    def sparse_column_names(self) -> list[str]:
        """The categorical columns read from the files (criteo: C1..C26 when none are named)."""
        if self.format == "criteo" and not self.sparse_columns:
            return CRITEO_SPARSE_COLUMNS[:]
        return list(self.sparse_columns)

    def dense_column_names(self) -> list[str]:
        """The numeric columns read from the files (criteo: I1..I13 when none are named)."""
        if self.format == "criteo" and not self.dense_columns:
            return CRITEO_DENSE_COLUMNS[:]
        return list(self.dense_columns)

    def encoding(self, column: str) -> SparseEncoding:
        """The encoding of a sparse column (hash into the embedding's buckets when not listed)."""
        return next((e for e in self.encodings if e.column == column), SparseEncoding(column=column))


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
    baseline_uri: str | None = Field(
        None,
        description=(
            "Output URI of the model this run is to be compared with (the instance's promoted model "
            "when the run was created): the trainer scores both on the same eval examples and "
            "reports the paired NE change with its interval in metrics.json `comparison`."
        ),
    )
    gate_confidence: float | None = Field(
        None, ge=0.5, lt=1, description="Confidence of the NE intervals (the template's rollout.gate.confidence); 0.95 when unset."
    )

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
