"""The model side of training: row-wise embedding updates, when they are used, and EMA's warm-up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelfleet.trainer.components.model import RankingModel
from modelfleet.trainer.techniques.catalogue import resolve_plan
from modelfleet.trainer.train import EMA, Optimizers, RowWiseAdam, sparse_updates, task_weight_vector, train_step


def test_row_wise_adam_is_sparse_adam_done_with_index_ops():
    torch.manual_seed(0)
    start = torch.randn(50, 4)
    a, b = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    ours, theirs = RowWiseAdam([a], lr=0.01), torch.optim.SparseAdam([b], lr=0.01)
    for step in range(6):
        ids = torch.randint(0, 20, (32,))  # repeated rows in a batch, rows 20.. never touched
        for p, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            (nn.functional.embedding(ids, p, sparse=True) * (step + 1)).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.state[a]["exp_avg_sq"], theirs.state[b]["exp_avg_sq"])
    assert ours.state[a]["step"] == theirs.state[b]["step"] == 6
    assert torch.equal(a.detach()[20:], start[20:])  # lazy: untouched rows never move


@pytest.mark.parametrize(
    ("buckets", "mode", "world", "sparse"),
    [
        (500, "auto", 1, True),  # 4 x 500 rows > 256 x 4 a batch can touch
        (200, "auto", 1, False),  # 800 rows: a batch may touch all of them
        (200, "sparse", 1, True),
        (500, "dense", 1, False),
        (500, "sparse", 2, False),  # DDP takes dense gradients only
    ],
)
def test_embedding_updates_are_sparse_only_where_they_pay(make_spec, buckets, mode, world, sparse):
    spec = make_spec(architecture={"embedding": {"dim": 8, "buckets": buckets}},
                     recipe={"embeddingUpdates": mode, "batchSize": 256})
    plan = resolve_plan(spec)
    assert sparse_updates(plan, spec, world) is sparse
    model = RankingModel(plan, sparse_embeddings=sparse)
    opt = Optimizers(spec, model, plan, total_steps=10)
    assert len(opt.opts) == (2 if sparse else 1)
    ids = torch.zeros(8, plan.n_sparse, dtype=torch.int64)
    train_step(model, opt, plan, task_weight_vector(plan), torch.randn(8, plan.n_dense), ids, torch.ones(8, 1))
    assert model.embeddings.weight.grad is None or model.embeddings.weight.grad.is_sparse is sparse


def test_ema_warm_up_follows_the_weights_early_and_decays_to_its_rate():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, 0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # update 0: (1 + 0) / (10 + 0)
    for _ in range(20):  # a short run: the weights move by 1 each step
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update()
    # the average trails the live weights by a few steps, not by the whole run
    lag = (model.weight - ema.shadow[0]).abs().max().item()
    assert 1 < lag < 4
    ema.updates = 100_000
    assert ema.current_decay() == 0.999
    plain = EMA(nn.Linear(2, 1, bias=False), 0.999)
    assert plain.current_decay() == 0.999  # without warm-up: the decay as given


def test_ema_state_round_trips_and_reads_shadow_only_checkpoints():
    model = nn.Linear(2, 1)
    ema = EMA(model, 0.9, warmup=True)
    for _ in range(3):
        ema.update()
    other = EMA(nn.Linear(2, 1), 0.9, warmup=True)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 3 and all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow, strict=True))
    other.load_state_dict([s.clone() for s in ema.shadow])  # the older format: the shadow only
    assert other.updates == 0


def test_adaptive_grad_clip_cuts_spikes_relative_to_the_running_norm():
    from modelfleet.trainer.train import GradClip

    p = nn.Parameter(torch.zeros(4))
    clip = GradClip(max_norm=None, factor=2.0)
    seen = []
    for scale in [1.0] * 30 + [10.0] + [1.0] * 5:  # steady norms of 1, then one spike
        p.grad = torch.full((4,), scale / 2)  # global norm = scale
        clip([p])
        seen.append(p.grad.norm().item())
    assert int(clip.clipped) == 1  # the spike only: steady norms never exceed 2x their mean
    assert seen[30] == pytest.approx(2.0, rel=1e-3)  # cut to factor x the running mean of 1
    assert all(s == pytest.approx(1.0) for s in seen[:30] + seen[31:])
    again = GradClip(max_norm=None, factor=2.0)
    again.load_state_dict(clip.state_dict())
    assert again.steps == clip.steps and torch.equal(again.mean, clip.mean)


def test_grad_clip_default_is_adaptive_and_max_norm_fixes_the_cap(make_spec):
    adaptive = resolve_plan(make_spec(techniques=[{"name": "grad-clip"}]))
    assert (adaptive.grad_clip_norm, adaptive.grad_clip_factor) == (None, 2.0)
    fixed = resolve_plan(make_spec(techniques=[{"name": "grad-clip", "params": {"maxNorm": 0.5}}]))
    assert (fixed.grad_clip_norm, fixed.grad_clip_factor) == (0.5, None)


def test_resume_is_exact_with_the_stateful_techniques(make_spec):
    from modelfleet.trainer.train import train

    from pathlib import Path

    spec = make_spec(techniques=[{"name": "grad-clip"}, {"name": "ema"}, {"name": "lr-warmup-cosine"}])
    straight = train(spec)
    out = Path(spec.output_uri)  # as if the job had died after its step-40 checkpoint
    (out / "checkpoints" / "step-0000000060.pt").unlink()
    (out / "metrics.json").unlink()
    resumed = train(spec)
    assert resumed["resumedFromStep"] == 40
    for key in ("ne", "logloss", "auc", "calibration"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key


def test_default_schedule_warms_up_briefly_holds_the_peak_and_anneals_at_the_end(make_spec):
    import math

    from modelfleet.trainer.train import lr_lambda

    plan = resolve_plan(make_spec(techniques=[{"name": "lr-warmup-cosine"}]))
    f = lr_lambda(plan, total_steps=1000)  # warmup 2 % = 20 steps, decay over the last 20 % of 980
    assert f(0) == pytest.approx(1 / 20) and f(19) == pytest.approx(1.0)
    assert f(20) == f(500) == f(803) == 1.0  # held: a short run is not under-trained
    assert f(804 + 98) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 98 / 196)))
    assert f(1000) == pytest.approx(0.1)
    short = lr_lambda(plan, total_steps=30)  # a 30-step run: no 100-step warmup eating it
    assert short(0) == pytest.approx(1.0) and short(20) == 1.0
