"""The technique catalogue: torch-free, validates names and params naming the field, estimates cost."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from modelfleet.trainer.spec import TechniqueRef, TrainingSpec
from modelfleet.trainer.techniques.catalogue import (
    CATALOGUE,
    Cost,
    TechniqueError,
    estimate_cost,
    resolve_plan,
    validate_techniques,
)


def test_catalogue_and_component_import_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from modelfleet.trainer.techniques import catalogue, cli
        from modelfleet.trainer import component
        from modelfleet.trainer.spec import TrainingSpec
        spec = TrainingSpec.model_validate({
            "instance": "a", "revision": "r", "event": "click", "outputUri": "/tmp/x",
            "architecture": {}, "techniques": [{"name": "dcnv2-cross"}],
            "data": {"format": "criteo", "trainUri": "/d"}})
        print(catalogue.estimate_cost(spec).flops_per_example)
        print(len(cli.rows()))
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        """
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    flops, rows = out.stdout.split()
    assert int(flops) > 0 and int(rows) == len(CATALOGUE)


def test_at_least_eight_techniques_with_slots_and_params_models():
    assert len(CATALOGUE) >= 8
    for name, t in CATALOGUE.items():
        assert t.name == name and t.slot and t.description
        t.params_model()  # every technique has usable defaults


def test_unknown_technique_lists_the_known_ones():
    with pytest.raises(TechniqueError) as err:
        validate_techniques([TechniqueRef(name="dropout"), TechniqueRef(name="dcn-v3")])
    assert err.value.field == "techniques[1].name"
    assert "dcn-v3" in str(err.value)
    for name in CATALOGUE:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "lowrank-cross", "params": {"rank": 0}}, "techniques[0].params.rank"),
        ({"name": "dropout", "params": {"p": 1.5}}, "techniques[0].params.p"),
        ({"name": "dcnv2-cross", "params": {"layrs": 2}}, "techniques[0].params.layrs"),
        ({"name": "lr-warmup-cosine", "params": {"warmupSteps": "soon"}}, "techniques[0].params.warmupSteps"),
        ({"name": "task-weighting", "params": {"weights": {"click": -1}}}, "techniques[0].params.weights.click"),
    ],
)
def test_bad_params_name_the_field_and_what_is_allowed(ref, field):
    with pytest.raises(TechniqueError) as err:
        validate_techniques([TechniqueRef.model_validate(ref)])
    assert err.value.field == field
    assert str(err.value).startswith(field)
    assert "takes:" in str(err.value)


def test_duplicate_technique_is_rejected():
    with pytest.raises(TechniqueError) as err:
        validate_techniques([TechniqueRef(name="ema"), TechniqueRef(name="ema")])
    assert err.value.field == "techniques[1].name"


def test_task_weighting_for_a_missing_task_names_it(make_spec):
    spec = make_spec(techniques=[{"name": "dropout"}, {"name": "task-weighting", "params": {"weights": {"buy": 2}}}])
    with pytest.raises(TechniqueError) as err:
        resolve_plan(spec)
    assert err.value.field == "techniques[1].params.weights.buy"


def test_attention_heads_must_divide_the_embedding_dim(make_spec):
    spec = make_spec(techniques=[{"name": "attention-interaction", "params": {"heads": 3}}])
    with pytest.raises(TechniqueError) as err:
        resolve_plan(spec)
    assert err.value.field == "architecture.interaction.heads"


def _spec(fmt: str, **data) -> TrainingSpec:
    return TrainingSpec.model_validate(
        {
            "instance": "a", "revision": "r", "event": "y", "outputUri": "/o",
            "architecture": {"embedding": {"dim": 4, "buckets": 10}, "bottomMlp": [4], "overArch": []},
            "data": {"format": fmt, **data},
        }
    )


def test_feature_counts_come_from_the_data_spec():
    # embeddings are sparse * buckets * dim; so the cost tells the feature counts apart
    assert estimate_cost(_spec("criteo", trainUri="/d")).params == estimate_cost(
        _spec("parquet", trainUri="/d", denseColumns=[f"i{i}" for i in range(13)],
              sparseColumns=[f"c{i}" for i in range(26)])
    ).params
    syn = estimate_cost(_spec("synthetic", synthetic={"dense": 2, "sparse": 5}))
    syn6 = estimate_cost(_spec("synthetic", synthetic={"dense": 2, "sparse": 6}))
    assert syn6.params - syn.params > 4 * 10  # one more 10x4 table, and a wider interaction


def test_technique_order_matters_only_where_slots_overlap(make_spec):
    a = make_spec(techniques=[{"name": "dropout"}, {"name": "dcnv2-cross"}])
    b = make_spec(techniques=[{"name": "dcnv2-cross"}, {"name": "dropout"}])
    assert estimate_cost(a) == estimate_cost(b)
    assert isinstance(estimate_cost(a), Cost)


def test_techniques_command_lists_every_technique(capsys):
    from modelfleet.cli import main

    assert main(["techniques", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(CATALOGUE)
    dcn = next(r for r in rows if r["name"] == "dcnv2-cross")
    assert dcn["slot"] == "interaction" and dcn["flopsPerExampleDelta"] > 0 and "layers" in dcn["params"]
    assert main(["techniques"]) == 0
    assert "lowrank-cross" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("first", "second"),
    [("attention-interaction", "dcnv2-cross"), ("dcnv2-cross", "lowrank-cross"), ("lowrank-cross", "attention-interaction")],
)
def test_two_interaction_techniques_are_rejected_naming_both(first, second):
    with pytest.raises(TechniqueError) as err:
        validate_techniques([TechniqueRef(name=first), TechniqueRef(name="dropout"), TechniqueRef(name=second)])
    assert err.value.field == "techniques"
    assert first in str(err.value) and second in str(err.value) and "interaction" in str(err.value)


def test_the_operator_reports_a_slot_clash_as_the_templates_problem():
    from modelfleet.api.resources import ModelTemplate
    from modelfleet.operator.validation import validate_template

    t = ModelTemplate.model_validate({
        "apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelTemplate", "metadata": {"name": "t"},
        "spec": {"techniques": [{"name": "dcnv2-cross"}, {"name": "lowrank-cross"}]},
    })
    [problem] = validate_template(t)
    assert problem.reason == "InvalidTechnique" and problem.field == "spec.techniques"
    assert "'dcnv2-cross' and 'lowrank-cross'" in problem.message


def test_techniques_apply_in_catalogue_order_whatever_the_listed_order(make_spec):
    names = ["ema", "embedding-dim-scale", "dropout", "lr-warmup-cosine", "dcnv2-cross", "mlp-layernorm"]
    plans = {
        repr(resolve_plan(make_spec(techniques=[{"name": n} for n in order])))
        for order in (names, names[::-1], sorted(names))
    }
    assert len(plans) == 1
    assert list(CATALOGUE).index("dcnv2-cross") < list(CATALOGUE).index("ema")
