"""The serving artifact is the trained model: `modelfleet predict` on the eval file reproduces the
trainer's own eval predictions, for each data format and dense transform, without label columns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modelfleet.cli import main
from modelfleet.trainer import serving
from modelfleet.trainer.components.model import RankingModel
from modelfleet.trainer.data import Dataset, Features
from modelfleet.trainer.techniques.catalogue import resolve_plan
from modelfleet.trainer.train import predict, train

WORDS = ["red", "green", "blue", "1.50", "7", "x y", ""]  # "1.50" and "" test text parsing


def _rows(n: int, seed: int) -> dict[str, list]:
    r = np.random.default_rng(seed)
    a = r.integers(0, 50, n).astype(float)
    b = np.round(r.normal(0, 3, n), 3)
    c1 = r.choice(WORDS, n)
    c2 = r.integers(0, 30, n)
    logit = 0.05 * a - 0.4 * b + np.where(c1 == "red", 1.5, -0.5) + (c2 % 3 == 0)
    y = (r.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return {"y": y.tolist(), "a": a.tolist(), "b": b.tolist(), "c1": c1.tolist(), "c2": c2.tolist(),
            "y2": (1 - y).tolist()}


def _write_csv(path: Path, rows: dict[str, list], blank_dense_every: int = 7) -> None:
    names = list(rows)
    lines = [",".join(names)]
    for i in range(len(rows["a"])):
        fields = [str(rows[c][i]) for c in names]
        if i % blank_dense_every == 0:
            fields[names.index("a")] = ""  # a missing number reads as 0
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")


def _trainer_eval_predictions(spec) -> np.ndarray:
    """What the trainer computes on the eval split, from model.pt and the features it fitted."""
    plan = resolve_plan(spec)
    state = torch.load(Path(spec.output_uri, "model.pt"), weights_only=False)
    model = RankingModel(plan)
    model.load_state_dict(state["model"])
    features = Features.from_state(spec, state["features"])
    p, _ = predict(model, Dataset(spec, "eval", features=features), features.dense, 512, torch.device("cpu"), False)
    return p


def _predict_cli(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(["predict", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("transform", ["standard", "log"])
def test_predict_on_the_eval_csv_reproduces_the_trainers_eval_predictions(make_spec, tmp_path, capsys, transform):
    _write_csv(tmp_path / "train.csv", _rows(3000, 0))
    eval_rows = _rows(700, 1)
    _write_csv(tmp_path / "eval.csv", eval_rows)
    spec = make_spec(
        architecture={"embedding": {"dim": 8, "buckets": 200}, "bottomMlp": [8], "overArch": [8]},
        techniques=[{"name": "dcnv2-cross", "params": {"layers": 1}}],
        event="y",
        data={"format": "csv", "trainUri": str(tmp_path / "train.csv"), "evalUri": str(tmp_path / "eval.csv"),
              "denseColumns": ["a", "b"], "sparseColumns": ["c1", "c2"], "denseTransform": transform,
              # every encoding the data layer has: hash (c1), identity (c2), bucketized numbers (b)
              "encodings": [{"column": "c2", "kind": "identity", "cardinality": 25}],
              "bucketize": [{"column": "b", "buckets": 5}]},
        recipe={"steps": 40, "batchSize": 128, "learningRate": 0.02},
    )
    result = train(spec)
    assert result["ne"] < 0.95  # a model that learned: the comparison below is not of constants
    expected = _trainer_eval_predictions(spec)[:, 0]
    assert len(expected) == 700

    # the labels are not needed: score a copy of the eval file without them
    unlabeled = tmp_path / "unlabeled.csv"
    _write_csv(unlabeled, {k: v for k, v in eval_rows.items() if k not in ("y", "y2")})
    out = _predict_cli(capsys, "--model", spec.output_uri, "--data", str(unlabeled), "-o", "json")
    got = np.array([r["prediction"] for r in json.loads(out)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert got.std() > 0.01

    # CSV to stdout, through the serving folder itself, with an id column kept
    out = _predict_cli(capsys, "--model", spec.output_uri + "/serving", "--data", str(tmp_path / "eval.csv"), "--keep", "c1")
    table = pa.csv.read_csv(io.BytesIO(out.encode()), convert_options=pa.csv.ConvertOptions(strings_can_be_null=False))
    assert table.column_names == ["c1", "prediction"]
    np.testing.assert_allclose(table.column("prediction").to_numpy(), expected, atol=1e-6)
    assert table.column("c1").to_pylist()[:5] == [str(v) for v in eval_rows["c1"][:5]]


@pytest.mark.slow
def test_predict_on_parquet_with_nulls_and_two_tasks(make_spec, tmp_path, capsys):
    train_rows, eval_rows = _rows(3000, 2), _rows(500, 3)
    for rows in (train_rows, eval_rows):
        rows["c2"] = [None if i % 11 == 0 else v for i, v in enumerate(rows["c2"])]  # a null category
        rows["b"] = [None if i % 13 == 0 else v for i, v in enumerate(rows["b"])]
    pq.write_table(pa.table(train_rows), tmp_path / "train.parquet")
    pq.write_table(pa.table(eval_rows), tmp_path / "eval.parquet")
    spec = make_spec(
        architecture={"embedding": {"dim": 8, "buckets": 200}, "bottomMlp": [8], "overArch": [8],
                      "tasks": [{"name": "buy"}, {"name": "skip", "labelColumn": "y2"}]},
        event="y",
        data={"format": "parquet", "trainUri": str(tmp_path / "train.parquet"), "evalUri": str(tmp_path / "eval.parquet"),
              "denseColumns": ["a", "b"], "sparseColumns": ["c1", "c2"], "denseTransform": "standard",
              # a fitted vocabulary (its values outside the vocabulary share one id) and fixed boundaries
              "encodings": [{"column": "c1", "kind": "vocabulary", "maxSize": 4}],
              "bucketize": [{"column": "a", "boundaries": [10, 20, 30]}]},
        recipe={"steps": 30, "batchSize": 128, "learningRate": 0.02},
    )
    train(spec)
    expected = _trainer_eval_predictions(spec)
    out_file = tmp_path / "scores.parquet"
    assert main(["predict", "--model", spec.output_uri, "--data", str(tmp_path / "eval.parquet"), "--output", str(out_file)]) == 0
    got = pq.read_table(out_file)
    assert got.column_names == ["prediction_buy", "prediction_skip"]
    np.testing.assert_allclose(np.stack([got.column(c).to_numpy() for c in got.column_names], axis=1), expected, atol=1e-6)

    # the artifact stands alone: TorchScript, loaded without the model's code
    m = torch.jit.load(str(Path(spec.output_uri, "serving", serving.MODEL_FILE)))
    dense, sparse = serving.load(spec.output_uri).encode(pq.read_table(tmp_path / "eval.parquet"))
    np.testing.assert_allclose(m(torch.from_numpy(dense), torch.from_numpy(sparse)).numpy(), expected, atol=1e-6)


def test_predict_names_what_is_wrong(make_spec, tmp_path, capsys):
    spec = make_spec(recipe={"steps": 2})
    train(spec)  # synthetic data: an artifact, but no columns to read rows by
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n")
    cases = [
        (["--model", str(tmp_path / "nowhere"), "--data", str(rows)], "no serving artifact at"),
        (["--model", spec.output_uri, "--data", str(rows)], "trained on synthetic data"),
        (["--model", spec.output_uri, "--data", str(rows), "-o", "parquet"], "-o parquet needs --output"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("modelfleet predict: ") and message in err and len(err.strip().splitlines()) == 1

    # an artifact from another modelfleet: its description is refused by name, not by a traceback
    features = Path(spec.output_uri, "serving", serving.FEATURES_FILE)
    described = json.loads(features.read_text())
    del described["spec"]
    features.write_text(json.dumps(described))
    with pytest.raises(serving.ServingError, match=r"does not describe a model this modelfleet can serve \(KeyError: 'spec'\)"):
        serving.load(spec.output_uri)


def test_missing_columns_and_bad_numbers_are_named(make_spec, tmp_path):
    _write_csv(tmp_path / "train.csv", _rows(400, 0))
    spec = make_spec(event="y", recipe={"steps": 2},
                     data={"format": "csv", "trainUri": str(tmp_path / "train.csv"), "denseColumns": ["a"], "sparseColumns": ["c1"]})
    train(spec)
    model = serving.load(spec.output_uri)
    (tmp_path / "x.csv").write_text("a,d\n1,2\n")
    with pytest.raises(serving.ServingError, match=r"columns \['c1'\] not found; the header has \['a', 'd'\]"):
        serving.read_rows(str(tmp_path / "x.csv"), model)
    (tmp_path / "y.csv").write_text("a,c1\n1,u\nabc,v\n")
    with pytest.raises(serving.ServingError, match=r"row 2: column 'a': 'abc' is not a number"):
        model.predict(serving.read_rows(str(tmp_path / "y.csv"), model))
