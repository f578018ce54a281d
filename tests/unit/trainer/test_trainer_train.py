"""The real training loop on tiny data: it learns, resumes exactly, stops on divergence, writes
the output layout, and the CLI prints metrics.json as its last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from modelfleet.api.resources import Metrics, ModelInstance, ModelTemplate
from modelfleet.cli import main
from modelfleet.trainer.report import ExitCode
from modelfleet.trainer.spec import TrainingSpec
from modelfleet.trainer.train import TrainingError, latest_checkpoint, train

ROOT = Path(__file__).resolve().parents[3]
METRIC_KEYS = {f.alias or n for n, f in Metrics.model_fields.items()}


def test_tiny_model_learns_and_writes_the_output_layout(make_spec):
    spec = make_spec(techniques=[{"name": "dcnv2-cross", "params": {"layers": 1}}])
    result = train(spec)
    assert result["ne"] < 0.95  # clearly better than predicting the base rate
    assert result["auc"] > 0.7
    assert 0.7 < result["calibration"] < 1.3
    out = Path(spec.output_uri)
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics == result
    Metrics.model_validate({k: metrics[k] for k in METRIC_KEYS})  # what the operator reads
    assert metrics["flopsPerExample"] > 0 and metrics["examples"] > 500 and metrics["steps"] == 60
    assert TrainingSpec.model_validate_json((out / "spec.json").read_text()) == spec
    assert latest_checkpoint(spec.output_uri).endswith("step-0000000060.pt")


def test_untrained_baseline_is_not_better_than_the_base_rate(make_spec):
    # the NE < 1 assertion above means something: one tiny step at lr ~0 leaves NE at about 1
    spec = make_spec(recipe={"steps": 1, "learningRate": 1e-9})
    assert train(spec)["ne"] > 0.97


def test_resume_continues_from_the_latest_checkpoint_exactly(tmp_path, make_spec):
    techniques = [{"name": "dropout", "params": {"p": 0.2}}, {"name": "ema", "params": {"decay": 0.9}}]
    spec = make_spec(techniques=techniques)
    straight = train(spec)
    assert straight["resumedFromStep"] is None
    # as if the job had died after its step-40 checkpoint (mid-epoch: 19 batches an epoch):
    # the same spec starts again and finds that checkpoint
    out = Path(spec.output_uri)
    (out / "checkpoints" / "step-0000000060.pt").unlink()
    (out / "metrics.json").unlink()
    resumed = train(spec)
    assert resumed["resumedFromStep"] == 40 and resumed["steps"] == 60
    # 20 batches of 256, one of them an epoch's smaller last batch
    assert 19 * 256 < resumed["trainExamples"] < 20 * 256 < straight["trainExamples"]
    for key in ("ne", "logloss", "auc", "calibration"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key


def test_sparse_embedding_updates_touch_only_the_looked_up_rows(make_spec):
    from modelfleet.trainer.components.model import RankingModel
    from modelfleet.trainer.techniques.catalogue import resolve_plan
    from modelfleet.trainer.train import Optimizers, task_weight_vector, train_step

    spec = make_spec()
    plan = resolve_plan(spec)
    model = RankingModel(plan, sparse_embeddings=True)
    opt = Optimizers(spec, model, plan, total_steps=10)
    assert len(opt.opts) == 2  # dense Adam + row-wise (lazy) Adam for the embedding table
    before = model.embeddings.weight.detach().clone()
    dense_before = [p.detach().clone() for n, p in model.named_parameters() if not n.startswith("embeddings")]
    ids = torch.zeros(32, plan.n_sparse, dtype=torch.int64)  # bucket 0 of every feature
    y = torch.ones(32, 1)
    train_step(model, opt, plan, task_weight_vector(plan), torch.randn(32, plan.n_dense), ids, y)
    changed = (model.embeddings.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [f * 500 for f in range(plan.n_sparse)]  # row 0 of each feature's table
    dense_after = [p.detach() for n, p in model.named_parameters() if not n.startswith("embeddings")]
    assert all(not torch.equal(a, b) for a, b in zip(dense_before, dense_after, strict=True))


def test_resume_refuses_a_checkpoint_of_another_model(make_spec):
    train(make_spec(recipe={"steps": 5}))
    with pytest.raises(TrainingError) as err:
        train(make_spec(recipe={"steps": 5}, architecture={"embedding": {"dim": 4, "buckets": 500}, "bottomMlp": [4]}))
    assert err.value.code == ExitCode.CHECKPOINT_MISMATCH and err.value.field == "spec.training.outputUri"
    assert "differ in: architecture.bottomMlp, architecture.embedding.dim." in str(err.value)


def test_resume_refuses_a_checkpoint_of_another_revision_with_the_same_model_shape(make_spec):
    # the case that used to resume: only the learning rate (and so the revision) changed
    first = make_spec(recipe={"steps": 5})
    train(first)
    other = make_spec(revision="r2", recipe={"steps": 5, "learningRate": 0.02})
    with pytest.raises(TrainingError) as err:
        train(other)
    msg = str(err.value)
    assert err.value.code == ExitCode.CHECKPOINT_MISMATCH
    assert "written by run tiny@r1" in msg and "this is run tiny@r2" in msg
    assert "differ in: recipe.learningRate, revision." in msg
    assert not (Path(other.output_uri) / "failure.json").exists()  # the CLI writes it, not train()


def test_resume_refuses_a_checkpoint_of_another_world_size(make_spec):
    spec = make_spec(recipe={"steps": 5})
    train(spec)
    path = latest_checkpoint(spec.output_uri)
    state = torch.load(path, weights_only=False)
    state["world"] = 2  # as if two DDP workers had written it: their data shards differ from ours
    torch.save(state, path)
    with pytest.raises(TrainingError, match="2 worker process") as err:
        train(spec)
    assert err.value.code == ExitCode.CHECKPOINT_MISMATCH


def test_non_finite_loss_stops_the_run_with_a_clear_failure(make_spec, tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("y,x\n" + "".join(f"{i % 2},1e30\n" for i in range(400)))
    spec = make_spec(
        event="y",
        data={"format": "csv", "trainUri": str(path), "denseColumns": ["x"], "denseTransform": "none"},
        recipe={"optimizer": "sgd", "learningRate": 10},
    )
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at step \d+; training diverged") as err:
        train(spec)
    assert err.value.code == ExitCode.DIVERGED


def test_multi_task_heads_share_the_bottom_and_report_each_task(make_spec):
    spec = make_spec(
        architecture={"tasks": [{"name": "click"}, {"name": "buy", "labelColumn": "buy", "weight": 0.5}]},
    )
    result = train(spec)
    assert set(result["tasks"]) == {"click", "buy"}
    assert all(m["ne"] < 1 for m in result["tasks"].values())


def test_cli_prints_metrics_as_the_last_line(make_spec, capsys):
    spec = make_spec(recipe={"steps": 10})
    assert main(["train", "--spec-json", json.dumps(spec.wire()), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads((Path(spec.output_uri) / "metrics.json").read_text())


def test_cli_reads_yaml_and_rejects_bad_specs_naming_the_field(make_spec, tmp_path, capsys):
    spec = make_spec(recipe={"steps": 3})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.wire()))
    assert main(["train", "--spec", str(path)]) == 0
    capsys.readouterr()
    bad = {**spec.wire(), "recipe": {"batchSize": 0}}
    assert main(["train", "--spec-json", json.dumps(bad)]) == 2
    assert "recipe.batchSize" in capsys.readouterr().err
    bad = {**spec.wire(), "techniques": [{"name": "wormhole"}]}
    assert main(["train", "--spec-json", json.dumps(bad)]) == 2
    err = capsys.readouterr().err
    assert "techniques[0].name" in err and "dcnv2-cross" in err


def _quickstart_spec(instance: str, out: Path) -> TrainingSpec:
    """Resolve the quickstart template and one instance the way the operator does (minimal)."""
    q = ROOT / "examples" / "quickstart"
    t = ModelTemplate.model_validate(yaml.safe_load((q / "template.yaml").read_text()))
    i = ModelInstance.model_validate(yaml.safe_load((q / f"instance-{instance}.yaml").read_text()))
    data = i.spec.data.model_copy(update={"train_uri": str(q / i.spec.data.train_uri)})
    return TrainingSpec(
        instance=i.metadata.name, revision="test", event=i.spec.event, architecture=t.spec.architecture,
        techniques=t.spec.techniques, recipe=t.spec.recipe.model_copy(update={"steps": 100}), data=data,
        output_uri=str(out),
    )


def test_quickstart_instance_trains_on_its_adult_slice(tmp_path):
    spec = _quickstart_spec("not-in-family", tmp_path / "out")
    result = train(spec)
    assert result["ne"] < 0.9 and result["auc"] > 0.75
    assert result["examples"] > 2000  # a 20 % held-out split of 12,583 rows


def test_trains_from_a_criteo_tsv_the_test_generates(make_spec, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    lines = []
    for _ in range(3000):
        c1 = int(rng.integers(0, 20))
        label = int(rng.random() < (0.8 if c1 < 5 else 0.1))  # C1 carries the signal
        ints = [str(int(rng.integers(0, 100))) for _ in range(13)]
        cats = [f"{c1:x}", *[f"{int(rng.integers(0, 50)):x}" for _ in range(25)]]
        lines.append("\t".join([str(label), *ints, *cats]))
    path = tmp_path / "day_0.gz"
    import gzip

    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    # mapped to a few columns: 25 noise features would let a tiny model memorise 2,400 rows
    data = {"format": "criteo", "trainUri": str(path), "denseColumns": ["I1", "I2"], "sparseColumns": ["C1", "C2"]}
    spec = make_spec(event="label", data=data, recipe={"steps": 40})
    result = train(spec)
    assert result["ne"] < 0.9 and result["examples"] > 400


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(capsys):
    from modelfleet.trainer.train import Progress

    bar = Progress(total=20, start=0, enabled=True)
    for step in range(1, 21):
        bar.update(step, 0.5, 1000.0)
    err = capsys.readouterr().err
    assert err.count("\r[") == 20 and "20/20" in err and "#" * 30 in err
    log = Progress(total=20, start=0, enabled=False)
    for step in range(1, 21):
        log.update(step, 0.5, 1000.0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("[modelfleet.train] step 20/20")
