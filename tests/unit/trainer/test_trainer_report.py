"""What a run leaves behind: exit codes and reasons, failure.json, and metrics.json written through
TrainingReport with the bad-row counts and the first bad row, as the operator copies them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfleet.api.resources import Metrics
from modelfleet.operator.runs import _metrics
from modelfleet.trainer.report import (
    FAILURE_FILE,
    PERMANENT_EXIT_CODES,
    REASONS,
    ExitCode,
    FailureReport,
    TrainerError,
    TrainingReport,
    code_for,
    read_failure,
    reason_for,
    write_failure,
)
from modelfleet.trainer.train import train


def test_exit_codes_and_reasons_are_the_contract():
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0), ("TRANSIENT", 1), ("INVALID_SPEC", 2), ("DATA_NOT_FOUND", 3), ("DATA_FORMAT", 4),
        ("INVALID_LABELS", 5), ("DIVERGED", 6), ("CHECKPOINT_MISMATCH", 7),
    ]
    assert PERMANENT_EXIT_CODES == (2, 3, 4, 5, 6, 7)
    assert [reason_for(c) for c in (None, 0, 1, 4, 99)] == [None, None, None, "DataFormatError", None]
    assert all(code_for(REASONS[c]) == c for c in REASONS) and code_for("Whatever") == ExitCode.TRANSIENT


def test_failure_json_is_one_line_and_reads_back(tmp_path):
    err = TrainerError(ExitCode.DATA_FORMAT, "spec.data.format", "spec.data.format: 'csv', but x is a Parquet file")
    assert err.permanent and not TrainerError(ExitCode.TRANSIENT, None, "x").permanent
    write_failure(str(tmp_path / "out"), err)
    text = (tmp_path / "out" / FAILURE_FILE).read_text()
    assert json.loads(text) == {"code": 4, "reason": "DataFormatError", "field": "spec.data.format",
                                "message": "spec.data.format: 'csv', but x is a Parquet file"}
    assert text.endswith("}\n") and text.count("\n") == 1
    assert read_failure(str(tmp_path / "out")) == FailureReport.model_validate(json.loads(text))
    assert read_failure(str(tmp_path / "nowhere")) is None
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / FAILURE_FILE]  # no temp file left


def test_metrics_json_carries_bad_rows_and_the_operator_copies_them(make_spec, tmp_path):
    lines = ["y,x,c"] + [f"{i % 2},{i % 9},v{i % 4}" for i in range(1200)]
    lines[5] = "1,abc,v1"  # line 6: not a number
    lines[9] = "1,2"  # line 10: too few fields
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = make_spec(event="y", data={"format": "csv", "trainUri": str(path), "denseColumns": ["x"],
                                      "sparseColumns": ["c"]}, recipe={"steps": 3})
    result = train(spec)
    metrics = json.loads((Path(spec.output_uri) / "metrics.json").read_text())
    assert metrics == result
    report = TrainingReport.model_validate(metrics)
    assert (report.bad_rows, report.first_bad_row.file, report.first_bad_row.row) == (2, str(path), 6)
    assert report.first_bad_row.message == "column 'x': 'abc' is not a number"
    (source,) = report.data  # the split's both halves come from one file, counted once
    assert (source.uri, source.rows_read, source.bad_rows) == (str(path), 1200, 2)
    assert report.eval_examples == report.examples > 0 and report.train_examples == 3 * 256
    status = _metrics(metrics)
    assert status["badRows"] == 2 and status["firstBadRow"] == {"file": str(path), "row": 6,
                                                                "message": "column 'x': 'abc' is not a number"}
    Metrics.model_validate(status)


def test_metrics_of_a_clean_run_have_zero_bad_rows(make_spec):
    result = train(make_spec(recipe={"steps": 3}))
    assert result["badRows"] == 0 and result["firstBadRow"] is None
    assert result["data"] == []  # no files were read


@pytest.mark.parametrize("extra", [{"unknown": 1}])
def test_training_report_rejects_unknown_keys(extra):
    with pytest.raises(ValueError):
        TrainingReport.model_validate({"ne": 0.5, **extra})
