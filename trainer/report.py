"""What a training run leaves behind, as the trainer and the operator both read it (torch-free).

- `ExitCode`: the trainer's process exit status. Bad input (the spec, the data, its format, its
  labels) and deterministic failures get codes of their own, so a scheduler can fail the job at
  once instead of retrying it (Kubernetes `podFailurePolicy` `FailJob` on `PERMANENT_EXIT_CODES`;
  the local launcher does the same); everything else is `TRANSIENT` and may be retried.
- `REASONS`: the CamelCase reason the operator records for each code (run, instance, template).
- File names under a run's `outputUri`.
"""

from __future__ import annotations

from enum import IntEnum

METRICS_FILE = "metrics.json"  # written last, only by a run that succeeded
FAILURE_FILE = "failure.json"  # {code, reason, field, message}: why a run failed for good
PREDICTIONS_FILE = "predictions.parquet"  # label, prediction per eval example, in eval order


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
