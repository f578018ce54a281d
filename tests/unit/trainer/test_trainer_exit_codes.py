"""`modelfleet train` on bad input: each case exits with its own ExitCode after one line on stderr
naming the field, writes <outputUri>/failure.json (a permanent failure), and stops before the
first training step when the data can tell. Real files, the real trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from modelfleet.cli import main
from modelfleet.trainer.report import FAILURE_FILE, REASONS, ExitCode, FailureReport, read_failure
from modelfleet.trainer.train import train

ROOT = Path(__file__).resolve().parents[3]


def _table(n: int = 400) -> pa.Table:
    return pa.table({"y": [i % 2 for i in range(n)], "x": [float(i % 7) for i in range(n)],
                     "c": [f"v{i % 5}" for i in range(n)], "income": ["<=50K", ">50K"] * (n // 2)})


def _wire(make_spec, tmp_path, uri, fmt="csv", event="y", **data) -> dict:
    spec = make_spec(event=event, data={"format": fmt, "trainUri": str(uri), "denseColumns": ["x"],
                                        "sparseColumns": ["c"], **data}, recipe={"steps": 5})
    return spec.wire()


def _train(wire: dict, capsys) -> tuple[int, str]:
    code = main(["train", "--spec-json", json.dumps(wire), "--no-progress"])
    return code, capsys.readouterr().err


def _failed(code: int, err: str, wire: dict, want: ExitCode, field: str, *words: str) -> FailureReport:
    assert code == want, err
    line = [ln for ln in err.splitlines() if ln.startswith("modelfleet train: error: ")]
    assert len(line) == 1 and line[0].startswith(f"modelfleet train: error: {field}: "), err
    assert "Traceback" not in err
    out = Path(wire["outputUri"])
    text = (out / FAILURE_FILE).read_text()
    assert text.count("\n") == 1  # one line of JSON
    failure = read_failure(str(out))
    assert failure == FailureReport(code=int(want), reason=REASONS[want], field=field,
                                    message=line[0].removeprefix("modelfleet train: error: "))
    for w in words:
        assert w in failure.message, (w, failure.message)
    assert not (out / "checkpoints").exists()  # stopped before the first step
    assert not (out / "metrics.json").exists()
    return failure


def test_missing_data_exits_3(make_spec, tmp_path, capsys):
    wire = _wire(make_spec, tmp_path, tmp_path / "nope.csv")
    _failed(*_train(wire, capsys), wire, ExitCode.DATA_NOT_FOUND, "spec.data.trainUri", "no such file")


def test_a_zero_byte_parquet_file_exits_3_naming_it(make_spec, tmp_path, capsys):
    (tmp_path / "d.parquet").write_bytes(b"")
    wire = _wire(make_spec, tmp_path, tmp_path / "d.parquet", "parquet")
    _failed(*_train(wire, capsys), wire, ExitCode.DATA_NOT_FOUND, "spec.data.trainUri", "d.parquet is empty (0 bytes)")


def test_an_empty_eval_file_exits_3_naming_eval_uri(make_spec, tmp_path, capsys):
    pcsv.write_csv(_table(), tmp_path / "train.csv")
    (tmp_path / "eval.csv").write_text("y,x,c\n")
    wire = _wire(make_spec, tmp_path, tmp_path / "train.csv", evalUri=str(tmp_path / "eval.csv"))
    f = _failed(*_train(wire, capsys), wire, ExitCode.DATA_NOT_FOUND, "spec.data.evalUri", "holds no rows")
    assert "set data.evalUri" not in f.message


@pytest.mark.parametrize(("writer", "fmt", "words"), [
    ("parquet", "csv", ["is a Parquet file (set spec.data.format: parquet)"]),
    ("csv", "parquet", ["is not a Parquet file", "text starting"]),
])
def test_format_mismatch_exits_4_naming_the_format(make_spec, tmp_path, capsys, writer, fmt, words):
    path = tmp_path / "data.bin"
    pq.write_table(_table(), path) if writer == "parquet" else pcsv.write_csv(_table(), path)
    wire = _wire(make_spec, tmp_path, path, fmt)
    _failed(*_train(wire, capsys), wire, ExitCode.DATA_FORMAT, "spec.data.format", *words)


def test_text_labels_exit_5_naming_the_column_and_values(make_spec, tmp_path, capsys):
    pcsv.write_csv(_table(), tmp_path / "d.csv")
    wire = _wire(make_spec, tmp_path, tmp_path / "d.csv", event="income")
    _failed(*_train(wire, capsys), wire, ExitCode.INVALID_LABELS, "spec.event", "'<=50K', '>50K'",
            "spec.data.labelValues")
    mapped = _wire(make_spec, tmp_path, tmp_path / "d.csv", event="income",
                   labelValues={"positive": [">50K"], "negative": ["<=50K"]})
    code, err = _train(mapped, capsys)
    assert code == 0, err


def test_divergence_exits_6(make_spec, tmp_path, capsys):
    path = tmp_path / "huge.csv"
    path.write_text("y,x\n" + "".join(f"{i % 2},1e30\n" for i in range(400)))
    spec = make_spec(event="y", data={"format": "csv", "trainUri": str(path), "denseColumns": ["x"],
                                      "denseTransform": "none"}, recipe={"optimizer": "sgd", "learningRate": 10})
    wire = spec.wire()
    code, err = _train(wire, capsys)
    assert code == ExitCode.DIVERGED, err
    failure = read_failure(wire["outputUri"])
    assert failure.reason == "TrainingDiverged" and failure.field == "spec.recipe.learningRate"


def test_a_checkpoint_of_another_revision_exits_7(make_spec, tmp_path, capsys):
    train(make_spec(recipe={"steps": 5}))
    wire = make_spec(revision="r2", recipe={"steps": 5, "learningRate": 0.02}).wire()
    code, err = _train(wire, capsys)
    assert code == ExitCode.CHECKPOINT_MISMATCH, err
    failure = read_failure(wire["outputUri"])
    assert failure.field == "spec.training.outputUri" and "tiny@r1" in failure.message and "tiny@r2" in failure.message


def test_invalid_specs_exit_2_naming_the_field(make_spec, tmp_path, capsys):
    wire = {**make_spec().wire(), "recipe": {"batchSize": 0}}
    code, err = _train(wire, capsys)
    assert code == ExitCode.INVALID_SPEC and "spec.recipe.batchSize: Input should be greater than or equal to 1" in err
    assert read_failure(wire["outputUri"]).field == "spec.recipe.batchSize"  # its outputUri is readable
    wire = {**make_spec().wire(), "techniques": [{"name": "wormhole"}]}
    code, err = _train(wire, capsys)
    assert code == ExitCode.INVALID_SPEC and "spec.techniques[0].name: unknown technique 'wormhole'" in err
    bad = {**make_spec().wire(), "data": {"format": "csv", "trainUri": "x.csv", "sparseColumns": ["a"],
                                          "encodings": [{"column": "a", "kind": "identity"}]}}
    code, err = _train(bad, capsys)
    assert code == ExitCode.INVALID_SPEC and "spec.data.encodings[0]: Value error, kind identity needs cardinality" in err


def test_unreadable_spec_files_exit_2_without_a_traceback(tmp_path, capsys):
    latin = tmp_path / "spec.yaml"
    latin.write_bytes("instance: caf\xe9\n".encode("latin-1"))
    assert main(["train", "--spec", str(latin)]) == ExitCode.INVALID_SPEC
    err = capsys.readouterr().err
    assert err.startswith("modelfleet train: error: --spec: cannot read the spec: ") and "codec can't decode" in err
    assert main(["train", "--spec", str(tmp_path / "missing.json")]) == ExitCode.INVALID_SPEC
    assert f"--spec: {str(tmp_path / 'missing.json')!r}: no such file" in capsys.readouterr().err
    assert main(["train", "--spec-json", "[1, 2"]) == ExitCode.INVALID_SPEC
    assert "--spec-json: cannot read the spec" in capsys.readouterr().err


def test_an_unexpected_failure_exits_1_and_writes_no_failure_file(make_spec, tmp_path):
    # the output URI lies under a regular file: the run cannot write there (an environment
    # problem, not the input's): exit 1, transient, worth a retry
    (tmp_path / "blocker").write_text("")
    spec = make_spec(outputUri=str(tmp_path / "blocker" / "out"), recipe={"steps": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-P", "-m", "modelfleet", "train", "--spec-json", json.dumps(spec.wire())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == ExitCode.TRANSIENT, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr  # unexpected: the traceback is what there is to go on
    assert read_failure(str(tmp_path / "blocker" / "out")) is None
