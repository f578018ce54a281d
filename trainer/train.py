"""The training loop: one readable function, torchrun/DDP-aware through the environment.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process. On CUDA the
forward runs under bf16 autocast (recipe.precision auto/bf16), on CPU with bf16 only. Checkpoints go to
`<outputUri>/checkpoints/` every `recipe.checkpointEvery` steps and at the end; a restarted run
resumes from the latest one, replaying the same data order, so a resumed run equals an
uninterrupted one. Rank 0 evaluates and writes `metrics.json` and `spec.json`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import fsspec
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from modelfleet.trainer import comparison, evaluate, serving
from modelfleet.trainer.components.model import RankingModel
from modelfleet.trainer.data import DATA_LAYOUT, Chunk, Dataset, DataStats, DenseTransform, Features, batches
from modelfleet.trainer.preflight import check_spec_data
from modelfleet.trainer.progress import ProgressWriter
from modelfleet.trainer.report import METRICS_FILE, ExitCode, TrainerError, TrainingReport, write_atomic
from modelfleet.trainer.spec import TrainingSpec, short_hash
from modelfleet.trainer.techniques.catalogue import ModelPlan, plan_cost, resolve_plan


class TrainingError(TrainerError):
    """The run cannot go on (diverged: DIVERGED; a checkpoint of another run: CHECKPOINT_MISMATCH)."""


# --- pieces the techniques switch -------------------------------------------------------------


def task_losses(logits: torch.Tensor, labels: torch.Tensor, plan: ModelPlan) -> torch.Tensor:
    """Per-task mean training loss [n_tasks] (log loss, optionally focal and/or label-smoothed)."""
    logits = logits.float()
    y = labels
    if plan.label_smoothing:
        y = y * (1 - plan.label_smoothing) + plan.label_smoothing / 2
    ce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")  # [B, T]
    if plan.loss == "focal":
        p = torch.sigmoid(logits)
        p_t = p * y + (1 - p) * (1 - y)
        ce = ce * (1 - p_t).pow(plan.focal_gamma)
        if plan.focal_alpha is not None:
            ce = ce * (plan.focal_alpha * y + (1 - plan.focal_alpha) * (1 - y))
    return ce.mean(dim=0)


def task_weight_vector(plan: ModelPlan) -> torch.Tensor:
    return torch.tensor(
        [plan.task_weights.get(t.name, t.weight) for t in plan.architecture.tasks], dtype=torch.float32
    )


def lr_lambda(plan: ModelPlan, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a step (1.0 without the schedule technique)."""

    warmup = plan.warmup_steps
    if warmup is None:
        warmup = round(plan.warmup_fraction * total_steps)
    # the decay spans the last decay_fraction of the steps after warmup; the lr holds before it
    decay = max(1, round(plan.decay_fraction * (total_steps - warmup)))
    hold_until = total_steps - decay

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not plan.cosine_decay or step < hold_until:
            return 1.0
        progress = min(1.0, (step - max(warmup, hold_until)) / decay)
        return plan.min_lr_ratio + (1 - plan.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class EMA:
    """Exponential moving average of the float parameters.

    With `warmup`, update t uses min(decay, (1 + t) / (10 + t)) (TensorFlow's num_updates rule):
    early on the average follows the weights closely, so a run shorter than 1 / (1 - decay)
    steps does not evaluate weights that are mostly their initial values.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.params = [p for p in model.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - self.current_decay())
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and averaged weights (call again to undo)."""
        for p, s in zip(self.params, self.shadow, strict=True):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any] | list[torch.Tensor]) -> None:
        if isinstance(state, list):  # checkpoints written before the warm-up kept the shadow only
            state = {"shadow": state, "updates": 0}
        for s, v in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(v)
        self.updates = state["updates"]


class RowWiseAdam(torch.optim.Optimizer):
    """SparseAdam's update (lazy Adam: only the rows in the gradient move, and only their moments
    decay; bias correction by the global step) done with one coalesce, row gathers and
    index_copy/index_add instead of sparse-tensor arithmetic, which costs several times more."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 -- the Optimizer signature
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.coalesce()  # duplicate rows summed: the update is not linear
                rows, values = grad._indices()[0], grad._values()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step = state["step"]
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)


def sparse_updates(plan: ModelPlan, spec: TrainingSpec, world: int) -> bool:
    """Whether the embedding tables get sparse gradients and row-wise updates."""
    mode = spec.recipe.embedding_updates
    if world > 1 or not plan.n_sparse:  # DDP's gradient buckets take dense gradients only
        return False
    if mode != "auto":
        return mode == "sparse"
    # A batch touches at most batchSize x features rows: when the tables are not larger, updating
    # every row costs about as much and is the optimizer itself (Adam's momentum keeps moving rows
    # a batch did not touch, which lazy updates give up).
    return sum(plan.tables) > spec.recipe.batch_size * plan.n_sparse


class Optimizers:
    """The dense parameters' optimizer plus, for sparse embedding gradients, a row-wise one.

    Embedding tables dominate the parameter count but a batch touches few rows: with sparse
    gradients only those rows are updated (lazy Adam, as in most recommender trainers), which
    is most of the trainer's speed on CPU. Each optimizer gets its own LambdaLR schedule.
    """

    def __init__(self, spec: TrainingSpec, model: nn.Module, plan: ModelPlan, total_steps: int):
        r = spec.recipe
        sparse = model.sparse_parameters()
        ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if id(p) not in ids]
        kw = {"lr": r.learning_rate, "weight_decay": r.weight_decay}
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad,
               "sgd": torch.optim.SGD}[r.optimizer]
        self.opts: list[torch.optim.Optimizer] = [cls(dense, foreach=True, **kw)]
        if sparse:
            # torch's sparse-gradient optimizers take no weight decay on the sparse rows
            if r.optimizer in ("adam", "adamw"):
                self.opts.append(RowWiseAdam(sparse, lr=r.learning_rate))
            else:
                self.opts.append(cls(sparse, lr=r.learning_rate))
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(plan, total_steps)) for o in self.opts]
        self.clip = GradClip.of(plan)

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def schedule(self) -> None:
        for sch in self.schedulers:
            sch.step()

    def lr(self) -> float:
        return self.opts[0].param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"opts": [o.state_dict() for o in self.opts], "schedulers": [s.state_dict() for s in self.schedulers],
                "clip": self.clip.state_dict() if self.clip is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o, st in zip(self.opts, state["opts"], strict=True):
            o.load_state_dict(st)
        for sch, st in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(st)
        if self.clip is not None and state.get("clip") is not None:
            self.clip.load_state_dict(state["clip"])


def clip_grad_norm(params: list[torch.Tensor], max_norm: float | torch.Tensor) -> torch.Tensor:
    """Scale all gradients so their global L2 norm is at most max_norm (sparse ones included)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = [(g.coalesce().values() if g.is_sparse else g).norm() for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return total


class GradClip:
    """The grad-clip technique: a fixed cap (maxNorm), or `factor` x the running mean of the
    recent (clipped) norms, which triggers on spikes whatever the model's gradient scale. The
    running mean warms up like EMA's (min(0.98, (1 + t) / (10 + t))); the first step is not
    clipped. Tensors throughout, so no device sync per step."""

    def __init__(self, max_norm: float | None, factor: float | None):
        self.max_norm, self.factor = max_norm, factor
        self.mean = torch.zeros(())
        self.steps = 0
        self.clipped = torch.zeros((), dtype=torch.int64)

    @classmethod
    def of(cls, plan: ModelPlan) -> GradClip | None:
        if plan.grad_clip_norm is None and plan.grad_clip_factor is None:
            return None
        return cls(plan.grad_clip_norm, plan.grad_clip_factor)

    def __call__(self, params: list[torch.Tensor]) -> torch.Tensor:
        if self.max_norm is not None:
            cap: float | torch.Tensor = self.max_norm
        elif self.steps == 0:
            cap = math.inf
        else:
            cap = self.factor * self.mean
        total = clip_grad_norm(params, cap)
        self.mean = self.mean.to(total.device)
        self.clipped = self.clipped.to(total.device) + (total > cap).long()
        d = min(0.98, (1 + self.steps) / (10 + self.steps))
        self.mean = d * self.mean + (1 - d) * torch.minimum(total, torch.as_tensor(cap, device=total.device))
        self.steps += 1
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "steps": self.steps, "clipped": self.clipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.steps, self.clipped = state["mean"], state["steps"], state["clipped"]


def train_step(
    model: nn.Module,
    optimizer: Optimizers | torch.optim.Optimizer,
    plan: ModelPlan,
    weights: torch.Tensor,
    dense: torch.Tensor,
    sparse: torch.Tensor,
    labels: torch.Tensor,
    bf16: bool = False,
) -> torch.Tensor:
    """One optimizer step; returns the weighted loss. A non-finite loss changes nothing."""
    with torch.autocast(dense.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits, penalty = model(dense, sparse, penalty=True)
    loss = (task_losses(logits, labels, plan) * weights).sum()
    if not torch.isfinite(loss):
        return loss.detach()
    optimizer.zero_grad()
    (loss + penalty).backward()
    clip = optimizer.clip if isinstance(optimizer, Optimizers) else GradClip.of(plan)
    if clip is not None:
        clip(list(model.parameters()))
    optimizer.step()
    return loss.detach()


# --- checkpoints ------------------------------------------------------------------------------


OUTPUT_FIELD = "spec.training.outputUri"  # the TrainingRun field that places the checkpoints


def _resumable(spec: TrainingSpec) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the whole resolved spec (revision included)
    but where it is written, and how the data layer turns rows into ids."""
    wire = {k: v for k, v in spec.wire().items() if k != "outputUri"}
    return {"spec": wire, "dataLayout": DATA_LAYOUT}


def fingerprint(spec: TrainingSpec) -> str:
    return short_hash(_resumable(spec), 16)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _check_resumable(path: str, state: dict[str, Any], spec: TrainingSpec, world: int) -> None:
    """Refuse a checkpoint of another run, naming both runs and what differs."""
    if state.get("fingerprint") != fingerprint(spec):
        old = state.get("resumable") or {}
        mine, theirs = _flat(_resumable(spec)), _flat(old)
        differ = sorted(k.removeprefix("spec.") for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        shown = ", ".join(differ[:6]) + (", ..." if len(differ) > 6 else "") if old else "unknown (an older checkpoint)"
        who = f"{state.get('instance', '?')}@{state.get('revision', '?')}"
        raise TrainingError(
            ExitCode.CHECKPOINT_MISMATCH, OUTPUT_FIELD,
            f"{OUTPUT_FIELD}: checkpoint {path} was written by run {who} (spec fingerprint "
            f"{state.get('fingerprint', 'none')}), this is run {spec.instance}@{spec.revision} (fingerprint "
            f"{fingerprint(spec)}); they differ in: {shown}. A checkpoint resumes only into a run of the "
            "same resolved spec: give this run its own outputUri or delete that checkpoint",
        )
    if state.get("world", 1) != world:
        raise TrainingError(
            ExitCode.CHECKPOINT_MISMATCH, OUTPUT_FIELD,
            f"{OUTPUT_FIELD}: checkpoint {path} was written by {state.get('world', 1)} worker process(es), "
            f"this job has {world}; the data shards differ, so resume with the same nnodes x processes "
            "or give this run its own outputUri",
        )


def latest_checkpoint(output_uri: str) -> str | None:
    fs, root = fsspec.core.url_to_fs(output_uri.rstrip("/") + "/checkpoints")
    if not fs.exists(root):
        return None
    names = sorted(p for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1].startswith("step-"))
    return names[-1] if names else None


def _save(fs: fsspec.AbstractFileSystem, path: str, state: dict[str, Any], keep: int = 2) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    folder = path.rsplit("/", 1)[0]
    fs.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with fs.open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
    fs.mv(tmp, path)  # a crash mid-write never leaves a truncated "latest" checkpoint
    old = sorted(p for p in fs.ls(folder, detail=False) if p.rsplit("/", 1)[-1].startswith("step-"))
    for p in old[:-keep]:
        fs.rm(p)


# --- the loop ---------------------------------------------------------------------------------


def run_seed(spec: TrainingSpec) -> int:
    """recipe.seed mixed with the instance name: instances sharing a template's seed draw
    independent initialisations and data orders, so their noise does not move together."""
    digest = hashlib.blake2b(f"{spec.recipe.seed}/{spec.instance}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _log(msg: str) -> None:
    print(f"[modelfleet.train] {msg}", file=sys.stderr, flush=True)


class Progress:
    """A progress bar on a terminal, a log line every ~10 % otherwise."""

    def __init__(self, total: int, start: int, enabled: bool | None = None):
        self.total, self.tty = total, sys.stderr.isatty() if enabled is None else enabled
        self.every = max(1, total // 10)
        self.last = start

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.tty:
            width = 30
            done = int(width * step / max(1, self.total))
            bar = "#" * done + "." * (width - done)
            print(f"\r[{bar}] {step}/{self.total} loss {loss:.4f} {rate:,.0f} ex/s", end="", file=sys.stderr)
            if step >= self.total:
                print(file=sys.stderr)
        elif step - self.last >= self.every or step >= self.total:
            self.last = step
            _log(f"step {step}/{self.total} loss {loss:.4f} {rate:,.0f} examples/s")


def _to_tensors(b: Chunk, transform: DenseTransform, device: torch.device):
    return (
        torch.from_numpy(transform(b.dense)).to(device, non_blocking=True),
        torch.from_numpy(b.sparse).to(device, non_blocking=True),
        torch.from_numpy(b.labels).to(device, non_blocking=True),
    )


def _count_batches(data: Dataset, batch_size: int) -> int:
    rows = sum(len(c) for c in data.chunks())
    return math.ceil(rows / batch_size)


def predict(
    model: nn.Module, data: Dataset, transform: DenseTransform, batch_size: int, device: torch.device,
    autocast: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted probabilities and labels over a split: ([n, tasks], [n, tasks])."""
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for b in batches(data.chunks(), batch_size, rng=None):
            d, s, y = _to_tensors(b, transform, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(d, s)
            preds.append(torch.sigmoid(logits.float()).cpu().numpy())
            labels.append(y.cpu().numpy())
    model.train()
    if not preds:  # require_rows() found rows before training: the data changed under the run
        raise TrainingError(ExitCode.TRANSIENT, data.where, f"{data.where}: the held-out split became empty during the run")
    return np.concatenate(preds), np.concatenate(labels)


def train(spec: TrainingSpec, progress: bool | None = None) -> dict[str, Any]:
    """Train `spec`, evaluate on its held-out split and write the outputs. Returns metrics.json.

    Raises TrainerError (DataError, TrainingError) for what it can classify, before the first
    step for everything about the data that can be known then."""
    check_spec_data(spec).raise_first()  # cheap: listings, magic bytes, footers, headers
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    r = spec.recipe
    # CPU bf16 autocast only when asked for: it is not faster on every CPU (benchmarks/trainer.py --limit)
    use_bf16 = r.precision == "bf16" or (cuda and r.precision == "auto")

    seed = run_seed(spec)
    torch.manual_seed(seed)
    np.random.seed(seed)
    plan = resolve_plan(spec)
    cost = plan_cost(plan)
    fs, out = fsspec.core.url_to_fs(spec.output_uri)
    ckpt_dir = out.rstrip("/") + "/checkpoints"

    latest = latest_checkpoint(spec.output_uri)
    state: dict[str, Any] | None = None
    if latest is not None:
        with fs.open(latest, "rb") as fh:
            state = torch.load(io.BytesIO(fh.read()), map_location=device, weights_only=False)
        _check_resumable(latest, state, spec, world)
    stats = DataStats()
    if state is not None and state.get("features") is not None:
        features = Features.from_state(spec, state["features"])  # what the interrupted run fitted
    else:
        features = Features.fit(spec, Dataset(spec, "train", stats=stats))
    transform: DenseTransform = features.dense
    train_data = Dataset(spec, "train", rank, world, features=features, stats=stats)
    eval_data = Dataset(spec, "eval", features=features, stats=stats)
    # before any step: an empty or unreadable split fails now, not after training
    Dataset(spec, "train", features=features, stats=stats).require_rows()
    eval_data.require_rows()

    # sparse embedding gradients for one process only: DDP's gradient buckets take dense ones
    # (torch 2.13 fails with "Cannot access storage of SparseTensorImpl", on gloo and NCCL alike)
    model = RankingModel(plan, sparse_embeddings=sparse_updates(plan, spec, world)).to(device)
    ddp_model: nn.Module = (
        nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
        if world > 1
        else model
    )
    ema = EMA(model, plan.ema_decay, plan.ema_warmup) if plan.ema_decay else None
    weights = task_weight_vector(plan).to(device)

    if r.steps is not None:
        total_steps = r.steps
    else:
        total_steps = r.epochs * _count_batches(train_data, r.batch_size)
    optimizer = Optimizers(spec, model, plan, total_steps)

    step = epoch = skip = 0
    resumed_from = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        step, epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        torch.set_rng_state(state["torch_rng"])
        resumed_from = step
        _log(f"resumed from checkpoint {latest} at step {step}")

    def checkpoint(batch_in_epoch: int) -> None:
        if rank != 0:
            return
        _save(
            fs,
            f"{ckpt_dir}/step-{step:010d}.pt",
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema else None,
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "torch_rng": torch.get_rng_state(),
                "fingerprint": fingerprint(spec),
                "resumable": _resumable(spec),
                "instance": spec.instance,
                "revision": spec.revision,
                "world": world,
                "transform": transform.state(),
                "features": features.state(),
                "plan_cost": {"params": cost.params, "flopsPerExample": cost.flops_per_example},
            },
        )

    _log(
        f"training {spec.instance}@{spec.revision}: {cost.params:,} params, "
        f"{cost.flops_per_example:,} FLOPs/example, {total_steps} steps, world {world}, device {device}"
        + (", bf16 autocast" if use_bf16 else "")
    )
    bar = Progress(total_steps, step, progress)
    progress_file = ProgressWriter(spec.output_uri, total_steps, step, enabled=rank == 0)
    model.train()
    examples = 0
    loss_value = float("nan")
    start_step = step
    batch_in_epoch = skip
    t0 = time.perf_counter()
    while step < total_steps:
        rng = np.random.default_rng([seed, epoch, rank])
        seen = 0
        ended = True  # the epoch's data ran out (vs. the step budget)
        synced_end = False
        for i, b in enumerate(batches(train_data.chunks(), r.batch_size, rng)):
            seen += 1
            if i < skip:  # replay the data order up to where the checkpoint was taken
                continue
            if world > 1:
                # ranks may hold different row counts; all end the epoch when one runs dry
                flag = torch.ones(1, device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                if flag.item() == 0:
                    synced_end = True
                    break
            d, s, y = _to_tensors(b, transform, device)
            loss = train_step(ddp_model, optimizer, plan, weights, d, s, y, use_bf16)
            if not torch.isfinite(loss):
                raise TrainingError(
                    ExitCode.DIVERGED, "spec.recipe.learningRate",
                    f"spec.recipe.learningRate: loss is {loss.item()} at step {step + 1}; training diverged. "
                    "Lower recipe.learningRate, add grad-clip, or check the data for extreme values",
                )
            optimizer.schedule()
            if ema is not None:
                ema.update()
            step += 1
            batch_in_epoch = i + 1
            examples += len(b)
            loss_value = loss.item()
            bar.update(step, loss_value, examples / max(1e-9, time.perf_counter() - t0))
            progress_file.update(step, epoch, loss_value, examples * world)
            if step % r.checkpoint_every == 0 and step < total_steps:
                checkpoint(batch_in_epoch)
            if step >= total_steps:
                ended = False
                break
        if world > 1 and ended and not synced_end:
            flag = torch.zeros(1, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if seen == 0:  # require_rows() found rows before training: the data changed under the run
            raise TrainingError(ExitCode.TRANSIENT, "spec.data.trainUri",
                                "spec.data.trainUri: the training split became empty during the run")
        skip = 0
        if ended:
            epoch += 1
            batch_in_epoch = 0
    train_seconds = time.perf_counter() - t0
    if optimizer.clip is not None:
        _log(f"grad-clip: {int(optimizer.clip.clipped)} of {optimizer.clip.steps} steps clipped")
    if world > 1:  # report the job's examples, not rank 0's share
        total = torch.tensor([examples], dtype=torch.int64, device=device)
        dist.all_reduce(total)
        examples = int(total.item())
    if step > start_step:
        checkpoint(batch_in_epoch)

    result: dict[str, Any] = {}
    if rank == 0:
        if ema is not None:
            ema.swap()  # evaluate (and export) the averaged weights
        p, y = predict(model, eval_data, transform, r.eval_batch_size, device, use_bf16)
        where = spec.data.eval_uri or spec.data.train_uri or "the synthetic data"
        try:
            evaluate.check_defined(y[:, 0], f"the eval split of {where}")
        except evaluate.MetricUndefined as exc:
            field = "spec.data.evalUri" if spec.data.eval_uri else "spec.data.evalFraction"
            raise TrainingError(ExitCode.INVALID_LABELS, field, str(exc)) from None
        m = evaluate.metrics(p[:, 0], y[:, 0])
        sources = stats.reports()
        first_bad = next((s.first_bad_row for s in sources if s.first_bad_row is not None), None)
        report = TrainingReport(
            **comparison.gate_report(spec, p[:, 0], y[:, 0]),
            **m,
            flops_per_example=cost.flops_per_example,
            params=cost.params,
            steps=step,
            train_examples=examples,
            train_examples_per_second=round(examples / train_seconds, 1) if train_seconds > 0 else None,
            eval_examples=m["examples"],
            resumed_from_step=resumed_from,
            instance=spec.instance,
            revision=spec.revision,
            bad_rows=sum(s.bad_rows for s in sources),
            first_bad_row=first_bad,
            data=sources,
            tasks={t.name: evaluate.metrics(p[:, j], y[:, j]) for j, t in enumerate(plan.architecture.tasks)}
            if len(plan.architecture.tasks) > 1 else None,
        )
        result = report.dump()
        fs.makedirs(out, exist_ok=True)
        with fs.open(out.rstrip("/") + "/model.pt", "wb") as fh:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "transform": transform.state(), "features": features.state()}, buf)
            fh.write(buf.getvalue())
        serving.export(model, plan, spec, features, spec.output_uri)
        with fs.open(out.rstrip("/") + "/spec.json", "w") as fh:
            json.dump(spec.wire(), fh, indent=2, sort_keys=True)
        write_atomic(spec.output_uri, METRICS_FILE, json.dumps(result, indent=2))  # last: the run succeeded
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
