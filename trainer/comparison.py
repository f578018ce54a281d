"""The gate's evidence, written by the trainer: eval predictions and the paired comparison.

`gate_report(spec, p, y)` is the trainer's one call after evaluation. It writes
`<outputUri>/predictions.parquet` (label and prediction of the first task per eval example, in
the eval split's deterministic order) and returns what goes into metrics.json: the positives, the
NE's bootstrap interval (`neLow`, `neHigh`), the labels' hash and, when the spec names a baseline, `comparison` -- the paired
comparison with the baseline's stored predictions on the same examples, or the reason there is
none (no predictions stored, or a different eval set: the data changed). numpy + pyarrow only.
"""

from __future__ import annotations

import hashlib
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from modelfleet.trainer import evaluate
from modelfleet.trainer.report import PREDICTIONS_FILE
from modelfleet.trainer.spec import TrainingSpec

DEFAULT_CONFIDENCE = 0.95
RESAMPLES = 1000


def labels_hash(y: np.ndarray) -> str:
    """Identifies an eval set (with its count): the labels in eval order."""
    return hashlib.sha256(np.asarray(y, dtype=np.int8).tobytes()).hexdigest()[:16]


def write_predictions(output_uri: str, p: np.ndarray, y: np.ndarray) -> None:
    table = pa.table({"label": np.asarray(y, dtype=np.int8), "prediction": np.asarray(p, dtype=np.float32)})
    fs, root = fsspec.core.url_to_fs(output_uri)
    fs.makedirs(root, exist_ok=True)
    with fs.open(root.rstrip("/") + "/" + PREDICTIONS_FILE, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")


def read_predictions(output_uri: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions, labels) stored under a run's output URI; None when there are none."""
    try:
        fs, root = fsspec.core.url_to_fs(output_uri)
        with fs.open(root.rstrip("/") + "/" + PREDICTIONS_FILE, "rb") as fh:
            t = pq.read_table(fh)
    except (FileNotFoundError, OSError, pa.ArrowException):
        return None
    return t.column("prediction").to_numpy(), t.column("label").to_numpy()


def compare(baseline_uri: str, p: np.ndarray, y: np.ndarray, *, confidence: float, seed: int = 0) -> dict[str, Any]:
    """The `comparison` object of metrics.json: paired when both eval sets are the same examples."""
    out: dict[str, Any] = {"baselineUri": baseline_uri, "confidence": confidence, "paired": False}
    base = read_predictions(baseline_uri)
    if base is None:
        out["reason"] = f"the baseline wrote no {PREDICTIONS_FILE} under {baseline_uri}"
        return out
    p_base, y_base = base
    if len(y_base) != len(y) or labels_hash(y_base) != labels_hash(y):
        out["reason"] = (
            f"the eval sets differ ({len(y)} examples, labels {labels_hash(y)} vs the baseline's "
            f"{len(y_base)}, {labels_hash(y_base)}): the data changed, so no paired interval"
        )
        return out
    out.update(evaluate.paired_comparison(p, p_base, y, confidence=confidence, resamples=RESAMPLES, seed=seed))
    out["paired"] = True
    return out


def gate_report(spec: TrainingSpec, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Write the predictions; return metrics.json's NE interval and, with a baseline, `comparison`."""
    confidence = spec.gate_confidence or DEFAULT_CONFIDENCE
    write_predictions(spec.output_uri, p, y)
    lo, hi = evaluate.ne_interval(p, y, confidence=confidence, resamples=RESAMPLES)
    out: dict[str, Any] = {"positives": int(np.sum(y)), "neLow": lo, "neHigh": hi, "evalLabelsHash": labels_hash(y)}
    if spec.baseline_uri:
        out["comparison"] = compare(spec.baseline_uri, p, y, confidence=confidence)
    return out
