"""The standard CTR architectures, as settings of one architecture spec: each builds, has the
shapes and parameters it should, costs exactly what the torch-free cost model says (measured with
FlopCounterMode), and computes what its paper / DeepCTR says it computes."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modelfleet.trainer.components.blocks import CrossNetwork, EmbeddingTables, FactorizationMachine
from modelfleet.trainer.components.model import RankingModel
from modelfleet.trainer.spec import ArchitectureSpec, InteractionSpec
from modelfleet.trainer.techniques.catalogue import TechniqueError, plan_cost, resolve_plan, sparse_table_sizes

BATCH = 6
CARDINALITY = [4, 6, 10, 2]  # identity encodings: tables of cardinality + 1 rows
N_DENSE = 3

ARCHITECTURES = {
    "dlrm": {"interaction": {"kind": "dot"}, "bottomMlp": [16, 8]},
    "dlrm-raw-dense": {"interaction": {"kind": "dot"}, "bottomMlp": []},
    "dcnv2-stacked": {"interaction": {"kind": "dcnv2"}, "bottomMlp": [16, 8]},
    "dcnv2-stacked-raw": {"interaction": {"kind": "dcnv2"}, "bottomMlp": []},
    "dcnv2-parallel": {"interaction": {"kind": "dcnv2", "structure": "parallel"}, "bottomMlp": [16, 8]},
    "dcnv2-parallel-raw-wide": {  # DeepCTR's DCN (matrix)
        "interaction": {"kind": "dcnv2", "structure": "parallel"}, "bottomMlp": [], "wide": True,
    },
    "dcnv2-parallel-no-over": {"interaction": {"kind": "dcnv2", "structure": "parallel"}, "overArch": []},
    "lowrank-parallel": {"interaction": {"kind": "lowrank", "rank": 3, "structure": "parallel"}, "bottomMlp": []},
    "deepfm": {"interaction": {"kind": "fm"}, "bottomMlp": [], "wide": True},
    "deepfm-bottom": {"interaction": {"kind": "fm"}, "bottomMlp": [16, 8], "wide": True},
    "wide-and-deep": {"interaction": {"kind": "concat"}, "bottomMlp": [], "wide": True},
    "attention-raw": {"interaction": {"kind": "attention", "heads": 2}, "bottomMlp": []},
}


def spec_of(make_spec, arch: dict, techniques=None, n_sparse: int = len(CARDINALITY)):
    sparse = [f"c{i}" for i in range(n_sparse)]
    data = {
        "format": "parquet", "trainUri": "/nowhere", "denseColumns": [f"d{i}" for i in range(N_DENSE)],
        "sparseColumns": sparse,
        "encodings": [{"column": c, "kind": "identity", "cardinality": k}
                      for c, k in zip(sparse, CARDINALITY, strict=False)],
    }
    base = {"embedding": {"dim": 8, "buckets": 50}, "bottomMlp": [16, 8], "overArch": [16, 8],
            "tasks": [{"name": "click"}, {"name": "buy", "labelColumn": "buy"}]}
    return make_spec(architecture={**base, **arch}, data=data, techniques=techniques or [])


def inputs(plan, batch: int = BATCH, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, plan.n_dense, generator=g)
    sizes = torch.tensor(plan.tables)
    ids = (torch.rand(batch, plan.n_sparse, generator=g) * sizes).long()
    return dense, ids


def measure(model: nn.Module, plan) -> tuple[int, int]:
    dense, ids = inputs(plan)
    with FlopCounterMode(display=False) as counter:
        model(dense, ids)
    flops = counter.get_total_flops()
    assert flops % BATCH == 0
    return sum(p.numel() for p in model.parameters()), flops // BATCH


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_builds_and_costs_what_the_cost_model_says(make_spec, name):
    plan = resolve_plan(spec_of(make_spec, ARCHITECTURES[name]))
    assert plan.tables == tuple(k + 1 for k in CARDINALITY)  # per-feature sizes from the spec
    torch.manual_seed(0)
    model = RankingModel(plan)
    dense, ids = inputs(plan)
    logits, penalty = model(dense, ids, penalty=True)
    assert logits.shape == (BATCH, 2) and penalty.shape == ()
    assert torch.isfinite(logits).all()
    cost = plan_cost(plan)
    assert (cost.params, cost.flops_per_example) == measure(model, plan)


def test_tables_have_per_feature_sizes_and_one_gather_with_offsets(make_spec):
    plan = resolve_plan(spec_of(make_spec, {}))
    model = RankingModel(plan)
    table = model.embeddings
    assert isinstance(table, EmbeddingTables)
    assert table.weight.shape == (sum(k + 1 for k in CARDINALITY), 8)
    with torch.no_grad():
        table.weight.copy_(torch.arange(table.weight.shape[0]).float()[:, None].expand_as(table.weight))
    ids = torch.tensor([[0, 0, 0, 0], [4, 6, 10, 2]])  # the first and the last (extra) id of each
    rows = table(ids)[..., 0].long().tolist()
    assert rows == [[0, 5, 12, 23], [4, 11, 22, 25]]


def test_sparse_table_sizes_is_the_contract_the_model_is_built_from(make_spec):
    spec = spec_of(make_spec, {"wide": True})
    sizes = sparse_table_sizes(spec)
    model = RankingModel(resolve_plan(spec))
    # the wide weights ride in the embedding rows: one extra column per task
    assert model.embeddings.weight.shape == (sum(sizes), 8 + 2)


def test_fm_is_the_sum_of_pairwise_dot_products():
    torch.manual_seed(0)
    emb = torch.randn(5, 4, 3)
    brute = sum((emb[:, i] * emb[:, j]).sum(dim=1, keepdim=True) for i, j in itertools.combinations(range(4), 2))
    torch.testing.assert_close(FactorizationMachine()(emb), brute)


def test_deepfm_logit_is_wide_plus_fm_plus_deep(make_spec):
    plan = resolve_plan(spec_of(make_spec, ARCHITECTURES["deepfm"]))
    torch.manual_seed(0)
    model = RankingModel(plan)
    dense, ids = inputs(plan)
    looked = model.embeddings(ids)
    emb, wide_rows = looked[..., :8], looked[..., 8:]
    flat = torch.cat([dense, emb.flatten(1)], dim=1)  # no bottom MLP: raw numeric features
    deep = model.heads(model.over(flat))
    fm = FactorizationMachine()(emb)
    wide = model.wide.dense(dense) + wide_rows.sum(dim=1)
    torch.testing.assert_close(model(dense, ids), deep + fm + wide)


def test_dcn_parallel_crosses_the_raw_features_beside_the_deep_part(make_spec):
    plan = resolve_plan(spec_of(make_spec, ARCHITECTURES["dcnv2-parallel-raw-wide"]))
    torch.manual_seed(0)
    model = RankingModel(plan)
    n = N_DENSE + len(CARDINALITY) * 8
    assert isinstance(model.interaction, CrossNetwork) and model.bottom is None
    assert all(m.weight.shape == (n, n) for m in model.interaction.maps)
    assert model.over.net[0].in_features == n  # the deep part reads the same raw input
    assert model.heads.heads[0].in_features == n + 8  # [cross output ‖ deep output]
    dense, ids = inputs(plan)
    looked = model.embeddings(ids)
    x0 = torch.cat([dense, looked[..., :8].flatten(1)], dim=1)
    h = torch.cat([model.interaction(x0), model.over(x0)], dim=1)
    wide = model.wide.dense(dense) + looked[..., 8:].sum(dim=1)
    torch.testing.assert_close(model(dense, ids), model.heads(h) + wide)


def test_stacked_cross_keeps_its_meaning(make_spec):
    # an existing `kind: dcnv2` is still bottom MLP -> cross over [dense out ‖ embeddings] -> over-arch
    plan = resolve_plan(spec_of(make_spec, {"interaction": {"kind": "dcnv2"}}))
    model = RankingModel(plan)
    n = 8 + len(CARDINALITY) * 8
    assert model.interaction.maps[0].in_features == n and model.over.net[0].in_features == n
    assert model.heads.heads[0].in_features == 8 and model.wide is None


def test_l2_penalises_the_looked_up_rows_only(make_spec):
    spec = spec_of(make_spec, {"embedding": {"dim": 8, "buckets": 50, "l2": 0.01}, "wide": True})
    plan = resolve_plan(spec)
    model = RankingModel(plan, sparse_embeddings=True)
    dense, ids = inputs(plan)
    _, penalty = model(dense, ids, penalty=True)
    looked = model.embeddings(ids)
    torch.testing.assert_close(penalty, 0.01 * looked.pow(2).sum() / BATCH)
    penalty.backward()
    grad = model.embeddings.weight.grad.coalesce()
    touched = sorted(set((ids + model.embeddings.offsets).flatten().tolist()))
    assert grad.indices()[0].tolist() == touched  # sparse: no other row is touched
    off = spec_of(make_spec, {"embedding": {"dim": 8, "buckets": 50, "l2": 0}})
    _, zero = RankingModel(resolve_plan(off))(dense, ids, penalty=True)
    assert zero.item() == 0


def test_embedding_init_std_is_an_option_with_deepctrs_default(make_spec):
    emb = ArchitectureSpec().embedding
    assert (emb.init_std, emb.l2) == (1e-4, 1e-5)
    spec = make_spec(architecture={"embedding": {"dim": 16, "buckets": 5000, "initStd": 0.05}})
    weight = RankingModel(resolve_plan(spec)).embeddings.weight
    assert weight.std().item() == pytest.approx(0.05, rel=0.02)
    default = RankingModel(resolve_plan(make_spec(architecture={"embedding": {"dim": 16, "buckets": 5000}})))
    assert default.embeddings.weight.std().item() == pytest.approx(1e-4, rel=0.02)


def test_parallel_applies_to_cross_kinds_only():
    with pytest.raises(ValidationError, match="applies to the cross kinds"):
        InteractionSpec(kind="dot", structure="parallel")
    assert InteractionSpec(kind="lowrank", structure="parallel").structure == "parallel"


def test_cel_rejects_parallel_for_other_kinds_at_apply():
    from schema_tools import cel_errors, load_crds

    crd = load_crds()["ModelTemplate"]
    doc = {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelTemplate", "metadata": {"name": "t"},
           "spec": {"architecture": {"interaction": {"kind": "dot", "structure": "parallel"}}}}
    assert cel_errors(crd, doc) == [
        ".spec.architecture.interaction: structure 'parallel' applies to the cross kinds (dcnv2, lowrank) only"
    ]
    doc["spec"]["architecture"]["interaction"]["kind"] = "dcnv2"
    assert cel_errors(crd, doc) == []


@pytest.mark.parametrize(
    ("arch", "technique", "structure"),
    [
        ({"interaction": {"kind": "dot"}}, {"name": "dcnv2-cross"}, "stacked"),
        ({"interaction": {"kind": "dot"}}, {"name": "dcnv2-cross", "params": {"structure": "parallel"}}, "parallel"),
        ({"interaction": {"kind": "lowrank", "structure": "parallel"}}, {"name": "dcnv2-cross"}, "parallel"),
        ({"interaction": {"kind": "dcnv2", "structure": "parallel"}}, {"name": "attention-interaction"}, "stacked"),
    ],
    ids=["default-stacked", "param", "kept-from-a-cross", "reset-for-attention"],
)
def test_cross_techniques_set_the_structure(make_spec, arch, technique, structure):
    plan = resolve_plan(spec_of(make_spec, arch, [technique]))
    assert plan.architecture.interaction.structure == structure


def test_fm_needs_two_sparse_features(make_spec):
    with pytest.raises(TechniqueError) as err:
        resolve_plan(spec_of(make_spec, {"interaction": {"kind": "fm"}}, n_sparse=1))
    assert err.value.field == "architecture.interaction.kind" and "at least 2" in str(err.value)


def test_new_fields_at_their_defaults_leave_the_wire_form_and_revisions_alone():
    wire = ArchitectureSpec().model_dump(mode="json", by_alias=True)
    assert "wide" not in wire and "structure" not in wire["interaction"]
    assert "initStd" not in wire["embedding"] and "l2" not in wire["embedding"]
    changed = ArchitectureSpec(wide=True, embedding={"l2": 0.0}).model_dump(mode="json", by_alias=True)
    assert changed["wide"] is True and changed["embedding"]["l2"] == 0.0
