"""The technique catalogue: names, params models, slots and the cost model. Torch-free.

The operator imports this module to validate templates and to estimate a model's size and
forward FLOPs/example (serving budgets) without torch. The trainer builds its model from the
same `ModelPlan` this module produces, so the estimate and the trained model cannot drift apart.

Cost conventions (the FLOPs test measures the built model with torch's FlopCounterMode and
compares exactly):
- a multiply-add is 2 FLOPs; only matrix products count (linear layers, bmm/matmul);
- elementwise work (activations, norms, dropout, residual adds, bias adds) and embedding
  lookups count 0 FLOPs, as FlopCounterMode counts them;
- parameters are every trainable parameter of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.trainer.spec import (
    CROSS_KINDS,
    ArchitectureSpec,
    InteractionSpec,
    TechniqueRef,
    TrainingSpec,
)

CRITEO_DENSE = 13
CRITEO_SPARSE = 26


class TechniqueError(ValueError):
    """A technique reference is invalid. `field` is the dotted path of the bad value."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Cost:
    params: int
    flops_per_example: int

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.params - other.params, self.flops_per_example - other.flops_per_example)


# --- the resolved model plan ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPlan:
    """Everything that decides the model and its training, after techniques are applied."""

    n_dense: int
    n_sparse: int
    architecture: ArchitectureSpec
    table_sizes: tuple[int, ...] = ()  # rows per sparse feature; () = embedding.buckets each
    mlp_layernorm: frozenset[str] = frozenset()  # subset of {"bottom", "over"}
    dropout: float = 0.0
    loss: str = "bce"  # bce | focal
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    label_smoothing: float = 0.0
    warmup_steps: int | None = 0  # None: warmup_fraction of the run
    warmup_fraction: float = 0.0
    cosine_decay: bool = False
    min_lr_ratio: float = 0.0
    decay_fraction: float = 1.0
    grad_clip_norm: float | None = None  # a fixed cap
    grad_clip_factor: float | None = None  # else: a cap relative to the running mean norm
    ema_decay: float | None = None
    ema_warmup: bool = False
    task_weights: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.architecture.embedding.dim

    @property
    def tables(self) -> tuple[int, ...]:
        return self.table_sizes or (self.architecture.embedding.buckets,) * self.n_sparse


def feature_counts(spec: TrainingSpec) -> tuple[int, int]:
    """(dense, sparse) feature counts the data of this spec feeds the model: bucketized numeric
    columns are sparse features after data.sparseColumns."""
    data = spec.data
    if data.format == "synthetic":
        assert data.synthetic is not None
        return data.synthetic.dense, data.synthetic.sparse
    return len(data.dense_column_names()), len(data.sparse_column_names()) + len(data.bucketize)


def sparse_table_sizes(spec: TrainingSpec) -> list[int]:
    """Rows of each sparse feature's embedding table, in feature order: a pure function of the
    spec (no data is read), so the cost model, the model and the data layer agree. The data layer
    emits ids in [0, size) for feature i: hash `buckets`; identity cardinality + 1 (the last id
    for anything out of range); vocabulary maxSize + 1 (the last id for values outside it);
    bucketized numeric columns (after the categorical ones) len(boundaries) + 1."""
    data, buckets = spec.data, spec.architecture.embedding.buckets
    if data.format == "synthetic":
        return [buckets] * feature_counts(spec)[1]
    return [data.encoding(c).table_size(buckets) for c in data.sparse_column_names()] + [
        b.table_size() for b in data.bucketize
    ]


# --- the cost model ---------------------------------------------------------------------------


def _mlp_cost(in_dim: int, widths: list[int], layernorm: bool) -> tuple[int, int, int]:
    """(params, flops, out_dim) of Linear+ReLU layers (+ LayerNorm with affine params)."""
    params = flops = 0
    d = in_dim
    for w in widths:
        params += d * w + w
        flops += 2 * d * w
        if layernorm:
            params += 2 * w
        d = w
    return params, flops, d


def interaction_layout(plan: ModelPlan) -> dict[str, int]:
    """Widths both the cost model and the torch model use (one place, so they agree).

    flat = the concatenated [dense part ‖ sparse embeddings]; out = the interaction's output;
    over_in / head_in = what the over-arch MLP and the task heads read.
    """
    arch = plan.architecture
    d = arch.embedding.dim
    kind = arch.interaction.kind
    has_dense = plan.n_dense > 0
    # the dense part: the bottom MLP's output, or the raw (transformed) features without one
    bottom_out = (arch.bottom_mlp[-1] if arch.bottom_mlp else plan.n_dense) if has_dense else 0
    # dot/attention need the dense vector in embedding space: project it when widths differ.
    token_kinds = ("dot", "attention")
    project = has_dense and kind in token_kinds and bottom_out != d
    tokens = plan.n_sparse + (1 if has_dense else 0)
    flat = plan.n_sparse * d + bottom_out
    if kind == "dot":
        pairs = tokens * (tokens - 1) // 2
        out = pairs + (d if has_dense else 0)
    elif kind == "attention":
        out = tokens * d
    else:  # concat, fm, dcnv2, lowrank work on the flat vector
        out = flat
    parallel = arch.interaction.structure == "parallel"
    over_in = flat if parallel or kind == "fm" else out
    over_out = arch.over_arch[-1] if arch.over_arch else over_in
    return {
        "dim": d,
        "tokens": tokens,
        "bottom_out": bottom_out,
        "project": int(project),
        "flat": flat,
        "out": out,
        "over_in": over_in,
        "head_in": over_out + (out if parallel else 0),
    }


def plan_cost(plan: ModelPlan) -> Cost:
    arch = plan.architecture
    d = arch.embedding.dim
    n_tasks = len(arch.tasks)
    rows = sum(plan.tables)
    params = rows * d  # embedding lookups: 0 FLOPs
    flops = 0
    if plan.n_dense and arch.bottom_mlp:
        p, f, _ = _mlp_cost(plan.n_dense, arch.bottom_mlp, "bottom" in plan.mlp_layernorm)
        params += p
        flops += f
    lay = interaction_layout(plan)
    if lay["project"]:
        params += lay["bottom_out"] * d
        flops += 2 * lay["bottom_out"] * d
    it = arch.interaction
    t = lay["tokens"]
    if it.kind == "dot":
        flops += 2 * t * t * d  # one bmm of the [t, d] tokens with themselves
    elif it.kind == "dcnv2":
        n = lay["flat"]
        params += it.layers * (n * n + n)
        flops += it.layers * 2 * n * n
    elif it.kind == "lowrank":
        n, r = lay["flat"], it.rank
        params += it.layers * (n * r + r * n + n)
        flops += it.layers * 4 * n * r
    elif it.kind == "attention":
        # per block: qkv projection, scores, weighted values, output projection
        params += it.layers * (4 * d * d + 4 * d)
        flops += it.layers * (8 * t * d * d + 4 * t * t * d)
    # fm: sums and squares of the embeddings only (0 FLOPs, no params)
    p, f, _ = _mlp_cost(lay["over_in"], arch.over_arch, "over" in plan.mlp_layernorm)
    params += p
    flops += f
    params += n_tasks * (lay["head_in"] + 1)
    flops += n_tasks * 2 * lay["head_in"]
    if arch.wide:  # one weight per task per categorical value (a lookup) and per numeric feature
        params += (rows + plan.n_dense) * n_tasks
        flops += 2 * plan.n_dense * n_tasks
    return Cost(params=params, flops_per_example=flops)


# --- techniques -------------------------------------------------------------------------------


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Structure = Literal["stacked", "parallel"]
_STRUCTURE = (
    "stacked: the over-arch reads the cross output; parallel: both read the features, the heads "
    "read both. Unset: the architecture's structure if it already is a cross, else stacked."
)


class DCNv2CrossParams(Params):
    layers: int = Field(2, ge=1, le=8, description="Number of full-rank cross layers.")
    structure: Structure | None = Field(None, description=_STRUCTURE)


class LowRankCrossParams(Params):
    layers: int = Field(2, ge=1, le=8, description="Number of low-rank cross layers.")
    rank: int = Field(16, ge=1, le=1024, description="Rank of each cross layer's factorisation.")
    structure: Structure | None = Field(None, description=_STRUCTURE)


class AttentionParams(Params):
    layers: int = Field(1, ge=1, le=8, description="Self-attention blocks over the feature embeddings.")
    heads: int = Field(2, ge=1, le=32, description="Attention heads; must divide embedding.dim.")


class LayerNormParams(Params):
    where: Literal["bottom", "over", "both"] = Field(
        "over", description="Which MLPs get LayerNorm (over: the one every architecture has)."
    )


class DropoutParams(Params):
    p: float = Field(0.1, gt=0, lt=1, description="Dropout probability after each hidden MLP layer.")


class EmbeddingScaleParams(Params):
    factor: float = Field(2.0, gt=0, le=64, description="Multiplies embedding.dim (rounded, at least 2).")


class FocalLossParams(Params):
    gamma: float = Field(2.0, ge=0, le=10, description="Focusing exponent; 0 is plain log loss.")
    alpha: float | None = Field(None, gt=0, lt=1, description="Weight of positives (1-alpha for negatives).")


class LabelSmoothingParams(Params):
    epsilon: float = Field(0.01, gt=0, lt=0.5, description="Labels become y*(1-eps) + eps/2.")


class WarmupCosineParams(Params):
    warmup_steps: int | None = Field(
        None, ge=0, le=10_000_000, alias="warmupSteps", description="Warmup steps; unset: warmupFraction of the run."
    )
    warmup_fraction: float = Field(
        0.02, ge=0, lt=1, alias="warmupFraction",
        description="Warmup as a fraction of the run's steps, when warmupSteps is unset (fits runs of any length).",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, alias="minLrRatio", description="Final lr / peak lr.")
    decay_fraction: float = Field(
        0.2, gt=0, le=1, alias="decayFraction",
        description=(
            "The cosine decay spans this last fraction of the steps after warmup; the lr holds at its "
            "peak before it (1: cosine over the whole run)."
        ),
    )


class GradClipParams(Params):
    max_norm: float | None = Field(
        None, gt=0, le=1e6, alias="maxNorm",
        description="Fixed cap on the global gradient L2 norm; unset: factor x the running mean of recent norms.",
    )
    factor: float = Field(
        2.0, gt=1, le=100,
        description=(
            "Without maxNorm, clip where the norm exceeds factor x its running mean (of the last ~50 "
            "steps), which cuts spikes whatever the model's gradient scale."
        ),
    )


class EMAParams(Params):
    decay: float = Field(0.999, gt=0, lt=1, description="EMA decay; evaluation uses the averaged weights.")
    warmup: bool = Field(
        True,
        description=(
            "Use min(decay, (1 + t) / (10 + t)) at update t, so a short run averages its last tenth "
            "instead of staying near the initial weights."
        ),
    )


class TaskWeightingParams(Params):
    weights: dict[str, Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=dict, description="Task name -> loss weight (replaces that task's weight)."
    )


Applier = Callable[[ModelPlan, Any], ModelPlan]


# At most one technique per exclusive slot: two interactions cannot both replace the one there is.
EXCLUSIVE_SLOTS = frozenset({"interaction"})


@dataclass(frozen=True)
class Technique:
    name: str
    slot: str  # interaction | mlp | embedding | loss | schedule | optimizer | weights
    params_model: type[BaseModel]
    description: str
    apply: Applier = field(repr=False, compare=False)

    def cost_delta(self, base: ModelPlan, params: BaseModel | dict[str, Any] | None = None) -> Cost:
        """What this technique alone changes in `base`'s params and FLOPs/example."""
        if not isinstance(params, BaseModel):
            params = self.params_model.model_validate(params or {})
        return plan_cost(self.apply(base, params)) - plan_cost(base)


def _with_interaction(plan: ModelPlan, structure: str | None = None, **kw: Any) -> ModelPlan:
    arch = plan.architecture
    current = arch.interaction
    if structure is None:
        is_cross = kw["kind"] in CROSS_KINDS and current.kind in CROSS_KINDS
        structure = current.structure if is_cross else "stacked"
    inter = InteractionSpec.model_validate({**current.model_dump(), **kw, "structure": structure})
    return replace(plan, architecture=arch.model_copy(update={"interaction": inter}))


def _apply_layernorm(plan: ModelPlan, p: LayerNormParams) -> ModelPlan:
    where = {"bottom", "over"} if p.where == "both" else {p.where}
    return replace(plan, mlp_layernorm=plan.mlp_layernorm | where)


def _apply_embedding_scale(plan: ModelPlan, p: EmbeddingScaleParams) -> ModelPlan:
    arch = plan.architecture
    dim = max(2, min(1024, round(arch.embedding.dim * p.factor)))
    emb = arch.embedding.model_copy(update={"dim": dim})
    return replace(plan, architecture=arch.model_copy(update={"embedding": emb}))


def _apply_task_weighting(plan: ModelPlan, p: TaskWeightingParams) -> ModelPlan:
    return replace(plan, task_weights={**plan.task_weights, **p.weights})


_TECHNIQUES = [
    Technique(
        "dcnv2-cross", "interaction", DCNv2CrossParams,
        "DCNv2 full-rank cross layers x_{l+1} = x0 * (W x_l + b) + x_l replace the interaction.",
        lambda plan, p: _with_interaction(plan, p.structure, kind="dcnv2", layers=p.layers),
    ),
    Technique(
        "lowrank-cross", "interaction", LowRankCrossParams,
        "DCNv2 low-rank cross layers (W = U V, rank r) replace the interaction.",
        lambda plan, p: _with_interaction(plan, p.structure, kind="lowrank", layers=p.layers, rank=p.rank),
    ),
    Technique(
        "attention-interaction", "interaction", AttentionParams,
        "Multi-head self-attention blocks over the feature embeddings replace the interaction.",
        lambda plan, p: _with_interaction(plan, kind="attention", layers=p.layers, heads=p.heads),
    ),
    Technique(
        "mlp-layernorm", "mlp", LayerNormParams,
        "LayerNorm on every hidden layer's pre-activation in the over-arch and/or bottom MLP.",
        _apply_layernorm,
    ),
    Technique(
        "dropout", "mlp", DropoutParams,
        "Dropout after every hidden layer of the bottom and over-arch MLPs (training only).",
        lambda plan, p: replace(plan, dropout=p.p),
    ),
    Technique(
        "embedding-dim-scale", "embedding", EmbeddingScaleParams,
        "Scales the embedding dimension of every sparse feature.",
        _apply_embedding_scale,
    ),
    Technique(
        "focal-loss", "loss", FocalLossParams,
        "Focal loss (1-p_t)^gamma * log loss: down-weights easy examples.",
        lambda plan, p: replace(plan, loss="focal", focal_gamma=p.gamma, focal_alpha=p.alpha),
    ),
    Technique(
        "label-smoothing", "loss", LabelSmoothingParams,
        "Smooths binary labels towards 0.5 in the training loss.",
        lambda plan, p: replace(plan, label_smoothing=p.epsilon),
    ),
    Technique(
        "lr-warmup-cosine", "schedule", WarmupCosineParams,
        "Linear learning-rate warmup, the peak held, then a cosine decay to minLrRatio * lr at the last step.",
        lambda plan, p: replace(
            plan, warmup_steps=p.warmup_steps, warmup_fraction=p.warmup_fraction, cosine_decay=True,
            min_lr_ratio=p.min_lr_ratio, decay_fraction=p.decay_fraction,
        ),
    ),
    Technique(
        "grad-clip", "optimizer", GradClipParams,
        "Clips the global gradient norm before each optimizer step (at a fixed cap, or at a multiple of its running mean).",
        lambda plan, p: replace(plan, grad_clip_norm=p.max_norm, grad_clip_factor=None if p.max_norm else p.factor),
    ),
    Technique(
        "ema", "weights", EMAParams,
        "Keeps an exponential moving average of the weights; evaluates and saves the average.",
        lambda plan, p: replace(plan, ema_decay=p.decay, ema_warmup=p.warmup),
    ),
    Technique(
        "task-weighting", "loss", TaskWeightingParams,
        "Per-task loss weights for multi-task models (tasks share the bottom).",
        _apply_task_weighting,
    ),
]

# The catalogue's order is the order techniques are applied in, whatever order a spec lists them.
CATALOGUE: dict[str, Technique] = {t.name: t for t in _TECHNIQUES}
_ORDER = {name: i for i, name in enumerate(CATALOGUE)}


# --- validation -------------------------------------------------------------------------------


def _field_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_techniques(refs: list[TechniqueRef]) -> list[BaseModel]:
    """Validated params per reference, in order. Raises TechniqueError naming the bad field."""
    known = ", ".join(sorted(CATALOGUE))
    seen: set[str] = set()
    out: list[BaseModel] = []
    for i, ref in enumerate(refs):
        tech = CATALOGUE.get(ref.name)
        if tech is None:
            raise TechniqueError(
                f"techniques[{i}].name", f"unknown technique {ref.name!r}; known techniques: {known}"
            )
        if ref.name in seen:
            raise TechniqueError(f"techniques[{i}].name", f"technique {ref.name!r} is listed twice")
        seen.add(ref.name)
        if tech.slot in EXCLUSIVE_SLOTS:
            other = next(
                (r.name for r in refs[:i] if r.name in CATALOGUE and CATALOGUE[r.name].slot == tech.slot), None
            )
            if other is not None:
                raise TechniqueError(
                    "techniques",
                    f"{other!r} and {ref.name!r} both set the {tech.slot} (slot {tech.slot!r} takes one "
                    f"technique: {', '.join(n for n, t in CATALOGUE.items() if t.slot == tech.slot)}); keep one",
                )
        try:
            out.append(tech.params_model.model_validate(ref.params))
        except ValidationError as exc:
            err = exc.errors()[0]
            path = _field_path(f"techniques[{i}].params", tuple(err["loc"]))
            allowed = ", ".join(
                f"{f.alias or n}" for n, f in tech.params_model.model_fields.items()
            )
            raise TechniqueError(
                path, f"{err['msg']} (technique {ref.name!r} takes: {allowed or 'no params'})"
            ) from None
    return out


def _check_plan(plan: ModelPlan, spec: TrainingSpec | None) -> None:
    arch = plan.architecture
    if arch.interaction.kind == "attention" and arch.embedding.dim % arch.interaction.heads:
        raise TechniqueError(
            "architecture.interaction.heads",
            f"{arch.interaction.heads} heads do not divide embedding dim {arch.embedding.dim}",
        )
    tasks = {t.name for t in arch.tasks}
    for name in plan.task_weights:
        if name not in tasks:
            idx = next(
                (i for i, r in enumerate(spec.techniques) if r.name == "task-weighting"), 0
            ) if spec else 0
            raise TechniqueError(
                f"techniques[{idx}].params.weights.{name}",
                f"no task named {name!r}; tasks: {', '.join(sorted(tasks))}",
            )
    if arch.interaction.kind == "fm" and plan.n_sparse < 2:
        raise TechniqueError(
            "architecture.interaction.kind",
            f"fm crosses pairs of sparse features and this data has {plan.n_sparse}; name at least 2 "
            "sparseColumns or choose another kind (concat, dcnv2, ...)",
        )
    if plan.n_dense == 0 and plan.n_sparse == 0:
        raise TechniqueError("data", "no features: name denseColumns and/or sparseColumns")


def resolve_plan(spec: TrainingSpec) -> ModelPlan:
    """The model plan of a spec: its architecture and data, then its techniques in order."""
    params = validate_techniques(spec.techniques)
    n_dense, n_sparse = feature_counts(spec)
    plan = ModelPlan(
        n_dense=n_dense, n_sparse=n_sparse, architecture=spec.architecture,
        table_sizes=tuple(sparse_table_sizes(spec)),
    )
    for ref, p in sorted(zip(spec.techniques, params, strict=True), key=lambda rp: _ORDER[rp[0].name]):
        plan = CATALOGUE[ref.name].apply(plan, p)
    _check_plan(plan, spec)
    return plan


def estimate_cost(spec: TrainingSpec) -> Cost:
    """The whole model's params and forward FLOPs/example after the spec's techniques."""
    return plan_cost(resolve_plan(spec))


def params_schema(name: str) -> dict[str, Any]:
    return CATALOGUE[name].params_model.model_json_schema(by_alias=True)
