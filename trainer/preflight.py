"""Cheap checks of an instance's data before any run is queued (torch-free; `plan`, `local` and
the operator call it).

    check_data(data, label_columns, *, base_dir=None) -> DataCheck

Reads only what is cheap to read: whether the URI's scheme is supported, whether the files exist
and are non-empty (and, per format, their schema: the Parquet footer, the CSV header). Each
problem names the field of the ModelInstance it is about (`spec.data.trainUri`, `spec.event`, ...)
and carries the reason the trainer would exit with (`modelfleet.trainer.report.REASONS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from modelfleet.trainer.report import REASONS, ExitCode
from modelfleet.trainer.spec import DataSpec


@dataclass(frozen=True)
class DataProblem:
    reason: str  # DataNotFound, DataFormatError, InvalidLabels
    field: str  # dotted path from the ModelInstance's root, e.g. spec.data.trainUri
    message: str  # starts with `field`


@dataclass
class DataCheck:
    problems: list[DataProblem] = field(default_factory=list)
    train_rows: int | None = None  # when the files say so cheaply (Parquet footers)
    eval_rows: int | None = None


def _problem(code: ExitCode, field_path: str, message: str) -> DataProblem:
    return DataProblem(REASONS[code], field_path, f"{field_path}: {message}")


def resolve_uri(uri: str, base_dir: str | None) -> str:
    """A relative path URI read against `base_dir` (the manifests' folder); others as written."""
    if base_dir and "://" not in uri and not os.path.isabs(uri):
        return os.path.normpath(os.path.join(base_dir, uri))
    return uri


def check_data(data: DataSpec, label_columns: list[str], *, base_dir: str | None = None) -> DataCheck:
    import fsspec

    out = DataCheck()
    if data.format == "synthetic":
        return out
    for key, uri in (("trainUri", data.train_uri), ("evalUri", data.eval_uri)):
        if not uri:
            continue
        where = f"spec.data.{key}"
        target = resolve_uri(uri, base_dir)
        protocol = target.split("://", 1)[0] if "://" in target else "file"
        try:
            fs, path = fsspec.core.url_to_fs(target)
        except (ValueError, ImportError) as exc:
            known = ", ".join(sorted(p for p in fsspec.available_protocols() if p.isalpha()))
            out.problems.append(
                _problem(ExitCode.DATA_NOT_FOUND, where, f"{uri!r}: scheme {protocol!r} is not supported ({exc}); supported: {known}")
            )
            continue
        try:
            files = [p for p in (fs.glob(path) if any(c in path for c in "*?[") else [path]) if fs.exists(p)]
            if files and fs.isdir(files[0]):
                files = [p for p in fs.find(files[0]) if not os.path.basename(p).startswith((".", "_"))]
        except OSError as exc:
            out.problems.append(_problem(ExitCode.DATA_NOT_FOUND, where, f"{uri!r} cannot be read: {exc}"))
            continue
        if not files:
            out.problems.append(_problem(ExitCode.DATA_NOT_FOUND, where, f"{uri!r}: no such file or directory"))
            continue
        if all(fs.size(p) == 0 for p in files):
            out.problems.append(_problem(ExitCode.DATA_NOT_FOUND, where, f"{uri!r}: the data is empty (0 bytes)"))
    return out
