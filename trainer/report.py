"""What a training run leaves behind, as the trainer and the operator both read it (torch-free).

- `ExitCode`: the trainer's process exit status. Bad input (the spec, the data, its format, its
  labels) and deterministic failures get codes of their own, so a scheduler can fail the job at
  once instead of retrying it (Kubernetes `podFailurePolicy` `FailJob` on `PERMANENT_EXIT_CODES`;
  the local launcher does the same); everything else is `TRANSIENT` and may be retried. The
  container exits with the failed worker's code (`modelfleet.trainer.launch` replaces torchrun,
  which exits 1 whatever its workers exit with).
- `REASONS`: the CamelCase reason the operator records for each code (run, instance, template).
- `TrainerError`: an error the trainer classifies (code, field, message); `cli.run` turns it into
  the exit code and, when permanent, `<outputUri>/failure.json` (`FailureReport`).
- `TrainingReport`: metrics.json, written by the trainer through this model, read by the operator.
- File names under a run's `outputUri`.
"""

from __future__ import annotations

import json
import uuid
from enum import IntEnum
from typing import Any

from pydantic import Field

from modelfleet.trainer.spec import SpecModel

METRICS_FILE = "metrics.json"  # written last, only by a run that succeeded
FAILURE_FILE = "failure.json"  # {code, reason, field, message}: why a run failed for good


class ExitCode(IntEnum):
    OK = 0
    TRANSIENT = 1  # anything unexpected: may succeed when tried again
    INVALID_SPEC = 2  # the resolved spec cannot be trained (field named)
    DATA_NOT_FOUND = 3  # no such file, empty file, unsupported URI scheme
    DATA_FORMAT = 4  # the files are not what spec.data.format says, or do not parse
    INVALID_LABELS = 5  # a label column is missing, not binary, or single-class where that matters
    DIVERGED = 6  # loss became NaN/inf: deterministic, trying again diverges again
    CHECKPOINT_MISMATCH = 7  # a checkpoint of another spec lies at the output URI


REASONS: dict[ExitCode, str] = {
    ExitCode.TRANSIENT: "JobFailed",
    ExitCode.INVALID_SPEC: "InvalidSpec",
    ExitCode.DATA_NOT_FOUND: "DataNotFound",
    ExitCode.DATA_FORMAT: "DataFormatError",
    ExitCode.INVALID_LABELS: "InvalidLabels",
    ExitCode.DIVERGED: "TrainingDiverged",
    ExitCode.CHECKPOINT_MISMATCH: "CheckpointMismatch",
}

# Exit codes that must never be retried: the same input fails the same way.
PERMANENT_EXIT_CODES: tuple[int, ...] = tuple(int(c) for c in ExitCode if c not in (ExitCode.OK, ExitCode.TRANSIENT))


def reason_for(exit_code: int | None) -> str | None:
    """The reason of a permanent exit code, None for success, transient or unknown codes."""
    if exit_code is None or exit_code not in PERMANENT_EXIT_CODES:
        return None
    return REASONS[ExitCode(exit_code)]


def code_for(reason: str) -> ExitCode:
    """The exit code of a reason (`REASONS`' inverse); unknown reasons are transient."""
    return next((c for c, r in REASONS.items() if r == reason), ExitCode.TRANSIENT)


class TrainerError(RuntimeError):
    """A failure the trainer has classified: its exit code, the field it is about (a dotted path
    from the manifest's root, `spec.data.trainUri`, `spec.recipe.batchSize`; None when no field
    is to blame) and a one-line message that names that field."""

    def __init__(self, code: ExitCode, field: str | None, message: str):
        super().__init__(message)
        self.code, self.field, self.message = ExitCode(code), field, message

    @property
    def permanent(self) -> bool:
        return int(self.code) in PERMANENT_EXIT_CODES

    def failure(self) -> FailureReport:
        return FailureReport(code=int(self.code), reason=REASONS.get(self.code, "JobFailed"),
                             field=self.field, message=self.message)


# --- the files ---------------------------------------------------------------------------------


class FailureReport(SpecModel):
    """`<outputUri>/failure.json`: why a run failed for good (one line of JSON)."""

    code: int = Field(..., ge=1, le=255, description="The trainer's exit code (ExitCode).")
    reason: str = Field(..., description="CamelCase reason of the code, e.g. DataFormatError.")
    field: str | None = Field(None, description="The field at fault, e.g. spec.data.format.")
    message: str = Field(..., description="One line naming the field, what is wrong and what is allowed.")


class BadRow(SpecModel):
    """A malformed row: where it is and what is wrong with it."""

    file: str = Field(..., description="The file the row is in.")
    row: int = Field(..., ge=1, description="Text: its line (the header is line 1). Parquet: its row, from 1.")
    message: str = Field(..., description="What is wrong with it, naming the column.")

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.message}"


class SourceReport(SpecModel):
    """One data URI as the run read it (its most complete read: train splits are re-read per epoch)."""

    uri: str
    rows_read: int = Field(0, description="Rows read, malformed ones included.")
    bad_rows: int = Field(0, description="Malformed rows skipped (within recipe.maxBadRowFraction).")
    first_bad_row: BadRow | None = None


class TaskMetrics(SpecModel):
    ne: float | None = None
    logloss: float | None = None
    auc: float | None = None
    calibration: float | None = None
    examples: int = 0


class TrainingReport(TaskMetrics):
    """`<outputUri>/metrics.json`: the held-out metrics of the first task and what the run did."""

    flops_per_example: int | None = Field(None, description="Forward FLOPs/example of the model (cost model).")
    params: int | None = None
    steps: int = 0
    train_examples: int = Field(0, description="Examples trained on by this job (since a resume).")
    train_examples_per_second: float | None = None
    eval_examples: int = Field(0, description="Held-out examples evaluated (= examples).")
    resumed_from_step: int | None = None
    instance: str | None = None
    revision: str | None = None
    bad_rows: int = Field(0, description="Malformed rows skipped, over every data URI read.")
    first_bad_row: BadRow | None = None
    data: list[SourceReport] = Field(default_factory=list, description="Per data URI read.")
    tasks: dict[str, TaskMetrics] | None = Field(None, description="Per task, for multi-task models.")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def write_atomic(output_uri: str, name: str, text: str) -> None:
    """Write `<output_uri>/<name>` through a temporary name, so a reader (or a second rank writing
    the same failure) never sees half a file."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(output_uri)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    tmp = f"{root}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(tmp, "w") as fh:
        fh.write(text)
    fs.mv(tmp, f"{root}/{name}")


def write_failure(output_uri: str, error: TrainerError) -> None:
    write_atomic(output_uri, FAILURE_FILE, error.failure().model_dump_json(by_alias=True) + "\n")


def read_failure(output_uri: str) -> FailureReport | None:
    """`<output_uri>/failure.json`, None when there is none (or it cannot be read)."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(output_uri)
        with fs.open(root.rstrip("/") + "/" + FAILURE_FILE, "r") as fh:
            return FailureReport.model_validate(json.loads(fh.readline()))
    except (OSError, ValueError):
        return None
