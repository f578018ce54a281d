"""Every registered technique changes the model (or its training) as declared, and its declared
cost delta matches what torch measures on the built model.

FLOPs are measured with torch.utils.flop_counter.FlopCounterMode on one forward pass: it counts
matrix products as 2 FLOPs per multiply-add and elementwise ops as 0, the catalogue's convention,
so estimates and measurements must agree exactly (no tolerance needed).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modelfleet.trainer.components.blocks import CrossNetwork, SelfAttentionBlock
from modelfleet.trainer.components.model import RankingModel
from modelfleet.trainer.techniques.catalogue import CATALOGUE, ModelPlan, plan_cost, resolve_plan
from modelfleet.trainer.train import EMA, lr_lambda, task_losses, task_weight_vector, train_step

BATCH = 7
N_DENSE, N_SPARSE, BUCKETS = 3, 4, 50


def measure(plan: ModelPlan) -> tuple[int, int]:
    """(trainable params, forward FLOPs per example) of the model built from `plan`."""
    torch.manual_seed(0)
    model = RankingModel(plan)
    dense = torch.randn(BATCH, plan.n_dense)
    sparse = torch.randint(0, plan.architecture.embedding.buckets, (BATCH, plan.n_sparse))
    with FlopCounterMode(display=False) as counter:
        model(dense, sparse)
    flops = counter.get_total_flops()
    assert flops % BATCH == 0
    return sum(p.numel() for p in model.parameters()), flops // BATCH


def plans(make_spec, technique: dict, **arch):
    base_arch = {
        "embedding": {"dim": 8, "buckets": BUCKETS},
        "bottomMlp": [16, 8],
        "overArch": [16, 8],
        "tasks": [{"name": "click"}, {"name": "buy", "labelColumn": "buy"}],
        **arch,
    }
    data = {"format": "synthetic", "synthetic": {"rows": 1000, "dense": N_DENSE, "sparse": N_SPARSE}}
    before = resolve_plan(make_spec(architecture=base_arch, data=data))
    after = resolve_plan(make_spec(architecture=base_arch, data=data, techniques=[technique]))
    return before, after


# Default-params example of each technique (with non-default params where that is the point).
EXAMPLES = {
    "dcnv2-cross": {"name": "dcnv2-cross", "params": {"layers": 3}},
    "lowrank-cross": {"name": "lowrank-cross", "params": {"layers": 2, "rank": 5}},
    "attention-interaction": {"name": "attention-interaction", "params": {"layers": 2, "heads": 4}},
    "mlp-layernorm": {"name": "mlp-layernorm", "params": {"where": "both"}},
    "dropout": {"name": "dropout", "params": {"p": 0.3}},
    "embedding-dim-scale": {"name": "embedding-dim-scale", "params": {"factor": 1.5}},
    "focal-loss": {"name": "focal-loss", "params": {"gamma": 2.0, "alpha": 0.25}},
    "label-smoothing": {"name": "label-smoothing", "params": {"epsilon": 0.1}},
    "lr-warmup-cosine": {"name": "lr-warmup-cosine", "params": {"warmupSteps": 10, "minLrRatio": 0.1, "decayFraction": 1}},
    "grad-clip": {"name": "grad-clip", "params": {"maxNorm": 0.01}},
    "ema": {"name": "ema", "params": {"decay": 0.9}},
    "task-weighting": {"name": "task-weighting", "params": {"weights": {"buy": 3.0}}},
}


def test_every_registered_technique_has_an_example_and_a_behaviour_check():
    assert set(EXAMPLES) == set(CATALOGUE) == set(BEHAVIOUR)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_declared_cost_delta_matches_measured(make_spec, name):
    before, after = plans(make_spec, EXAMPLES[name])
    declared = CATALOGUE[name].cost_delta(before, EXAMPLES[name].get("params"))
    p0, f0 = measure(before)
    p1, f1 = measure(after)
    assert (declared.params, declared.flops_per_example) == (p1 - p0, f1 - f0)
    # and the whole-model estimates are exact, not only the deltas
    assert (plan_cost(after).params, plan_cost(after).flops_per_example) == (p1, f1)


@pytest.mark.parametrize("kind", ["dot", "dcnv2", "lowrank", "attention", "concat"])
@pytest.mark.parametrize("bottom", [[16, 8], [16, 12]], ids=["bottom=dim", "bottom!=dim"])
def test_every_interaction_costs_what_it_is_estimated_to(make_spec, kind, bottom):
    _, plan = plans(make_spec, {"name": "dropout"}, bottomMlp=bottom, interaction={"kind": kind, "rank": 3})
    p, f = measure(plan)
    assert (plan_cost(plan).params, plan_cost(plan).flops_per_example) == (p, f)


# --- what each technique changes ----------------------------------------------------------------


def _modules(plan, cls):
    return [m for m in RankingModel(plan).modules() if isinstance(m, cls)]


def check_dcnv2(before, after):
    net = RankingModel(after).interaction
    assert isinstance(net, CrossNetwork) and len(net.maps) == 3
    flat = N_SPARSE * 8 + 8
    assert all(isinstance(m, nn.Linear) and m.weight.shape == (flat, flat) for m in net.maps)
    assert not _modules(before, CrossNetwork)


def check_lowrank(before, after):
    net = RankingModel(after).interaction
    assert isinstance(net, CrossNetwork) and len(net.maps) == 2
    assert [m[0].weight.shape[0] for m in net.maps] == [5, 5]  # rank-5 factorisation


def check_attention(before, after):
    blocks = _modules(after, SelfAttentionBlock)
    assert len(blocks) == 2 and all(b.heads == 4 for b in blocks)


def check_layernorm(before, after):
    assert not _modules(before, nn.LayerNorm)
    widths = [m.normalized_shape[0] for m in _modules(after, nn.LayerNorm)]
    assert widths == [16, 8, 16, 8]  # bottom [16, 8] then over-arch [16, 8]


def check_dropout(before, after):
    drops = _modules(after, nn.Dropout)
    assert len(drops) == 4 and all(d.p == 0.3 for d in drops)
    model = RankingModel(after)
    x, ids = torch.randn(64, N_DENSE), torch.randint(0, BUCKETS, (64, N_SPARSE))
    assert not torch.equal(model(x, ids), model(x, ids))  # stochastic while training
    model.eval()
    assert torch.equal(model(x, ids), model(x, ids))  # off at evaluation


def check_embedding_scale(before, after):
    assert RankingModel(before).embeddings.dim == 8
    assert RankingModel(after).embeddings.dim == 12


def _logits_labels():
    torch.manual_seed(1)
    return torch.randn(32, 2) * 3, (torch.rand(32, 2) < 0.3).float()


def check_focal(before, after):
    logits, y = _logits_labels()
    plain = task_losses(logits, y, before)
    focal = task_losses(logits, y, after)
    p = torch.sigmoid(logits)
    p_t = p * y + (1 - p) * (1 - y)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    expected = (ce * (1 - p_t) ** 2 * (0.25 * y + 0.75 * (1 - y))).mean(0)
    torch.testing.assert_close(focal, expected)
    assert (focal < plain).all()


def check_label_smoothing(before, after):
    logits, y = _logits_labels()
    expected = nn.functional.binary_cross_entropy_with_logits(logits, y * 0.9 + 0.05, reduction="none").mean(0)
    torch.testing.assert_close(task_losses(logits, y, after), expected)
    assert not torch.allclose(task_losses(logits, y, before), expected)


def check_warmup_cosine(before, after):
    f = lr_lambda(after, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1)
    g = lr_lambda(before, total_steps=110)
    assert {g(s) for s in (0, 9, 60, 110)} == {1.0}


def _one_step(plan):
    torch.manual_seed(0)
    model = RankingModel(plan, sparse_embeddings=True)  # clipping must include sparse gradients
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves weights alone
    x, ids = torch.randn(64, N_DENSE) * 50, torch.randint(0, BUCKETS, (64, N_SPARSE))
    y = (torch.rand(64, 2) < 0.5).float()
    train_step(model, opt, plan, task_weight_vector(plan), x, ids, y)
    assert model.embeddings.weight.grad.is_sparse
    norms = [(p.grad.coalesce().values() if p.grad.is_sparse else p.grad).norm() for p in model.parameters()]
    return torch.linalg.vector_norm(torch.stack(norms))


def check_grad_clip(before, after):
    assert _one_step(before) > 0.01
    assert _one_step(after) == pytest.approx(0.01, rel=1e-4)


def check_ema(before, after):
    assert before.ema_decay is None and after.ema_decay == 0.9
    model = RankingModel(after)
    ema = EMA(model, after.ema_decay)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for s, p0 in zip(ema.shadow, start, strict=True):
        torch.testing.assert_close(s, p0 + 0.1)  # 0.9 * old + 0.1 * new
    ema.swap()
    for p, p0 in zip(model.parameters(), start, strict=True):
        torch.testing.assert_close(p.detach(), p0 + 0.1)


def check_task_weighting(before, after):
    assert task_weight_vector(before).tolist() == [1.0, 1.0]
    assert task_weight_vector(after).tolist() == [1.0, 3.0]


BEHAVIOUR = {
    "dcnv2-cross": check_dcnv2,
    "lowrank-cross": check_lowrank,
    "attention-interaction": check_attention,
    "mlp-layernorm": check_layernorm,
    "dropout": check_dropout,
    "embedding-dim-scale": check_embedding_scale,
    "focal-loss": check_focal,
    "label-smoothing": check_label_smoothing,
    "lr-warmup-cosine": check_warmup_cosine,
    "grad-clip": check_grad_clip,
    "ema": check_ema,
    "task-weighting": check_task_weighting,
}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_technique_changes_the_model_as_declared(make_spec, name):
    before, after = plans(make_spec, EXAMPLES[name])
    assert CATALOGUE[name].slot
    BEHAVIOUR[name](before, after)
