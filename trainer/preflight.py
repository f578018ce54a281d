"""Cheap checks of an instance's data before any run is queued (torch-free; `plan`, `local`, the
operator and the trainer's launcher call it).

    check_data(data, label_columns, *, base_dir=None, label_fields=None) -> DataCheck
    check_spec_data(spec, *, base_dir=None) -> DataCheck      # the same, for a TrainingSpec

Reads only what is cheap to read: file listings, the first bytes of each file (format and
compression from the magic bytes), Parquet footers (schema, row counts) and the first block of
a CSV/TSV file (its header and first rows), never a whole file. Checks, per data URI:

- the URI's scheme is one this installation can read (`supported_schemes()`);
- the files exist and none is empty (0 bytes, or no rows);
- the bytes are what `spec.data.format` says (Parquet's `PAR1` magic vs text, UTF-8 text);
- the columns the spec names (dense, sparse, encodings, bucketize, labels) exist in the file's
  schema (Parquet footer, CSV header, criteo's fixed layout);
- label columns hold 0/1 numbers, or values `spec.data.labelValues` maps; dense columns are not
  plainly text.

Each problem names the field of the ModelInstance it is about (`spec.data.trainUri`,
`spec.data.denseColumns[3]`, `spec.event`, ...) and carries the reason the trainer would exit
with (`modelfleet.trainer.report.REASONS`). The helpers (`open_uri`, `list_files`, `sniff`,
`check_bytes`) raise `DataError` and are what the trainer's readers use, so both say the same.
"""

from __future__ import annotations

import codecs
import functools
import os
from dataclasses import dataclass, field
from typing import Any

from modelfleet.trainer.report import REASONS, ExitCode, TrainerError, code_for
from modelfleet.trainer.spec import CRITEO_DENSE_COLUMNS, CRITEO_SPARSE_COLUMNS, DataSpec, TrainingSpec

# Footers read per URI at most; a URI with more files is checked on its first and last file.
MAX_FOOTERS = 256
HEAD_BYTES = 4096
CSV_BLOCK_BYTES = 1 << 20
# fsspec protocols that wrap another filesystem (caching, chaining) rather than hold data.
_WRAPPERS = {"async_wrapper", "asyncwrapper", "blockcache", "cached", "dir", "filecache", "generic",
             "reference", "simplecache"}
_MAGIC = ((b"PAR1", "parquet"), (b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
          (b"(\xb5/\xfd", "zstd"), (b"PK\x03\x04", "zip"))
_COMPRESSED = {"gzip", "bz2", "xz", "zstd"}


class DataError(TrainerError):
    """Data that cannot be trained on: code (DATA_NOT_FOUND, DATA_FORMAT, INVALID_LABELS), the
    field at fault and a one-line message naming it and the file."""


@dataclass(frozen=True)
class DataProblem:
    reason: str  # DataNotFound, DataFormatError, InvalidLabels
    field: str  # dotted path from the ModelInstance's root, e.g. spec.data.trainUri
    message: str  # starts with `field`

    @property
    def code(self) -> ExitCode:
        return code_for(self.reason)

    def error(self) -> DataError:
        return DataError(self.code, self.field, self.message)


@dataclass
class DataCheck:
    problems: list[DataProblem] = field(default_factory=list)
    train_rows: int | None = None  # when the files say so cheaply (Parquet footers)
    eval_rows: int | None = None

    def raise_first(self) -> None:
        """Raise the first problem as a TrainerError (the trainer stops at the first)."""
        if self.problems:
            raise self.problems[0].error()


def _problem(code: ExitCode, field_path: str, message: str) -> DataProblem:
    return DataProblem(REASONS[code], field_path, f"{field_path}: {message}")


def fail(code: ExitCode, field_path: str, message: str) -> DataError:
    """A DataError whose message starts with the field, as every data error does."""
    return DataError(code, field_path, f"{field_path}: {message}")


def resolve_uri(uri: str, base_dir: str | None) -> str:
    """A relative path URI read against `base_dir` (the manifests' folder); others as written."""
    if base_dir and "://" not in uri and not os.path.isabs(uri):
        return os.path.normpath(os.path.join(base_dir, uri))
    return uri


@functools.cache
def supported_schemes() -> tuple[str, ...]:
    """URI schemes whose fsspec implementation imports here (what this installation can read)."""
    import fsspec
    from fsspec.registry import known_implementations, registry

    out = []
    for name in sorted(set(known_implementations) | set(registry)):
        if name in _WRAPPERS:
            continue
        try:
            fsspec.get_filesystem_class(name)
        except (ImportError, ValueError, AttributeError, RuntimeError):
            continue
        out.append(name)
    return tuple(out)


def open_uri(uri: str, where: str):
    """(filesystem, path) of a URI; an unknown or uninstalled scheme is a DataNotFound naming
    `where` and the schemes that are supported."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as exc:
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(
            ExitCode.DATA_NOT_FOUND, where,
            f"{uri!r}: scheme {scheme!r} is not supported here ({detail}); supported: {', '.join(supported_schemes())}",
        ) from None


def list_files(fs, path: str, uri: str, where: str) -> list[str]:
    """The data files of a path: a file, a directory (recursively, without hidden `.`/`_` files)
    or a glob, sorted. None found is a DataNotFound."""
    try:
        if any(ch in path for ch in "*?["):
            files = [p for p in sorted(fs.glob(path)) if not fs.isdir(p)]
        elif fs.isdir(path):
            files = sorted(p for p in fs.find(path) if not os.path.basename(p).startswith((".", "_")))
            if not files:
                raise fail(ExitCode.DATA_NOT_FOUND, where, f"{uri!r} is an empty directory")
        elif fs.exists(path):
            files = [path]
        else:
            files = []
    except OSError as exc:
        raise fail(ExitCode.DATA_NOT_FOUND, where, f"{uri!r} cannot be read: {exc}") from None
    if not files:
        raise fail(ExitCode.DATA_NOT_FOUND, where, f"{uri!r}: no such file or directory")
    return files


@dataclass(frozen=True)
class Sniff:
    """What a file's first bytes say it is."""

    size: int
    kind: str  # parquet, text, binary, empty, or a compression (gzip, bz2, xz, zstd, zip)
    head: bytes  # the first bytes (decompressed when `compression` is set)
    compression: str | None = None  # fsspec's name for it
    inner: str | None = None  # kind of the decompressed bytes

    def describe(self) -> str:
        if self.compression:
            return f"{self.kind}-compressed {self.inner or 'data'}"
        if self.kind == "text":
            first = self.head.split(b"\n", 1)[0][:60].decode("utf-8", "replace")
            return f"text starting {first!r}"
        return {"binary": "binary data", "empty": "empty"}.get(self.kind, f"a {self.kind} file")


def _kind(head: bytes) -> str:
    if not head:
        return "empty"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"\x00" in head:
        return "binary"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "binary"
    return "text"


def sniff(fs, path: str) -> Sniff:
    """Read the first bytes of a file (and, when they are a known compression, the first bytes
    of what they decompress to)."""
    import fsspec.compression

    size = fs.size(path) or 0
    with fs.open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    kind = _kind(head)
    if kind in _COMPRESSED:
        name = "xz" if kind == "xz" else kind
        if name not in fsspec.compression.compr:
            return Sniff(size, kind, head)
        with fs.open(path, "rb", compression=name) as fh:
            inner = fh.read(HEAD_BYTES)
        return Sniff(size, kind, inner, compression=name, inner=_kind(inner))
    return Sniff(size, kind, head)


def check_bytes(data_format: str, path: str, s: Sniff, where: str) -> None:
    """The file is not empty and its bytes are what `spec.data.format` says."""
    if s.size == 0 or s.kind == "empty":
        raise fail(ExitCode.DATA_NOT_FOUND, where, f"{path} is empty (0 bytes)")
    if data_format == "parquet":
        if s.kind != "parquet":
            hint = " (set spec.data.format: csv or criteo)" if (s.inner or s.kind) == "text" else ""
            raise fail(ExitCode.DATA_FORMAT, "spec.data.format",
                       f"'parquet', but {path} is not a Parquet file (no PAR1 magic bytes): it is {s.describe()}{hint}")
        return
    inner = s.inner if s.compression else s.kind
    if inner == "parquet":
        raise fail(ExitCode.DATA_FORMAT, "spec.data.format",
                   f"{data_format!r}, but {path} is a Parquet file (set spec.data.format: parquet)")
    if s.kind in _COMPRESSED and not s.compression:
        raise fail(ExitCode.DATA_FORMAT, "spec.data.format",
                   f"{data_format!r}: {path} is {s.kind}-compressed and this installation cannot decompress {s.kind}")
    if inner != "text":
        raise fail(ExitCode.DATA_FORMAT, "spec.data.format",
                   f"{data_format!r} files are UTF-8 text, but {path} is {s.describe()}")


# --- per format -----------------------------------------------------------------------------


@dataclass
class _Columns:
    """The columns a spec reads, each with the field that names it."""

    wanted: list[tuple[str, str]]  # (column, field)
    labels: list[tuple[str, str]]
    dense: list[tuple[str, str]]


def _columns(data: DataSpec, label_columns: list[str], label_fields: list[str]) -> _Columns:
    dense = [(c, f"spec.data.denseColumns[{i}]") for i, c in enumerate(data.dense_columns)]
    if data.format == "criteo" and not data.dense_columns:
        dense = [(c, "spec.data.denseColumns") for c in CRITEO_DENSE_COLUMNS]
    sparse = [(c, f"spec.data.sparseColumns[{i}]") for i, c in enumerate(data.sparse_columns)]
    buckets = [(b.column, f"spec.data.bucketize[{i}].column") for i, b in enumerate(data.bucketize)]
    labels = list(zip(label_columns, label_fields, strict=True))
    seen: set[str] = set()
    wanted = []
    for col, where in [*labels, *dense, *sparse, *buckets]:
        if col not in seen:
            seen.add(col)
            wanted.append((col, where))
    return _Columns(wanted, labels, dense)


def _missing(cols: _Columns, names: list[str], path: str, delimiter: str | None = None) -> DataProblem | None:
    missing = [(c, w) for c, w in cols.wanted if c not in names]
    if not missing:
        return None
    if delimiter is not None and len(names) == 1 and any(sep in names[0] for sep in "\t;|,".replace(delimiter, "")):
        return _problem(
            ExitCode.DATA_FORMAT, "spec.data.delimiter",
            f"the header of {path} is one column ({names[0][:60]!r}): its fields are not separated by "
            f"{delimiter!r}; set spec.data.delimiter",
        )
    col, where = missing[0]
    code = ExitCode.INVALID_LABELS if (col, where) in cols.labels else ExitCode.DATA_FORMAT
    more = f" (also missing: {', '.join(repr(c) for c, _ in missing[1:])})" if len(missing) > 1 else ""
    shown = names if len(names) <= 40 else [*names[:40], "..."]
    return _problem(code, where, f"column {col!r} is not in {path}{more}; the file has: {shown}")


def _text_values(values: list[Any], limit: int = 5) -> str:
    uniq = sorted({str(v) for v in values if v is not None})
    return ", ".join(repr(v) for v in uniq[:limit]) + (", ..." if len(uniq) > limit else "")


def _label_problem(data: DataSpec, col: str, where: str, path: str, text: list[Any] | None) -> DataProblem | None:
    """A label column whose values are text: fine when labelValues maps them, else named."""
    if text is None:
        return None
    if data.label_values is None:
        return _problem(
            ExitCode.INVALID_LABELS, where,
            f"label column {col!r} of {path} holds text ({_text_values(text)}), not the numbers 0 and 1; "
            "map its values with spec.data.labelValues {positive: [...], negative: [...]}",
        )
    known = set(data.label_values.positive) | set(data.label_values.negative)
    seen = {str(v) for v in text if v is not None}
    if seen and not seen & known:
        return _problem(
            ExitCode.INVALID_LABELS, "spec.data.labelValues",
            f"none of the values of label column {col!r} in the first rows of {path} ({_text_values(text)}) "
            f"is listed in positive {data.label_values.positive} or negative {data.label_values.negative}",
        )
    return None


def _parquet_file(fs, path: str, cols: _Columns, data: DataSpec) -> tuple[int, list[DataProblem]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            schema, meta = pf.schema_arrow, pf.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        return 0, [_problem(ExitCode.DATA_FORMAT, "spec.data.format", f"'parquet', but {path} cannot be read as Parquet: {exc}")]
    problems = []
    missing = _missing(cols, schema.names, path)
    if missing:
        problems.append(missing)
    for col, where in cols.labels:
        if col in schema.names and _is_text(schema.field(col).type):
            problem = _label_problem(data, col, where, path, _parquet_text_stats(meta, schema.names.index(col)))
            if problem:
                problems.append(problem)
    for col, where in cols.dense:
        if col in schema.names:
            t = schema.field(col).type
            if not (_is_text(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_decimal(t) or pa.types.is_null(t)):
                problems.append(_problem(ExitCode.DATA_FORMAT, where, f"column {col!r} of {path} is {t}, not a number"))
    return meta.num_rows, problems


def _is_text(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _parquet_text_stats(meta, index: int) -> list[Any]:
    """Values a string column's footer statistics show (min and max of each row group)."""
    values: list[Any] = []
    for g in range(min(meta.num_row_groups, 8)):
        st = meta.row_group(g).column(index).statistics
        if st is not None and st.has_min_max:
            values += [st.min, st.max]
    return values or ["text"]


def read_head_block(fs, path: str, s: Sniff, data: DataSpec, label: str):
    """The first block of a CSV/TSV file as a pyarrow RecordBatch, every column as text (header
    names for csv, criteo's fixed layout otherwise)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    criteo = data.format == "criteo"
    names = [label, *CRITEO_DENSE_COLUMNS, *CRITEO_SPARSE_COLUMNS] if criteo else None
    with fs.open(path, "rb", compression=s.compression) as fh:
        reader = pcsv.open_csv(
            fh,
            read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES, column_names=names),
            parse_options=pcsv.ParseOptions(delimiter=data.delimiter or ("\t" if criteo else ","),
                                            quote_char=False if criteo else '"',
                                            invalid_row_handler=lambda row: "skip"),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True, null_values=[""]),
        )
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            batch = pa.RecordBatch.from_pylist([], schema=reader.schema)
    return pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in batch.columns], names=batch.schema.names)


def _text_file(fs, path: str, s: Sniff, cols: _Columns, data: DataSpec, where: str) -> list[DataProblem]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if data.format == "criteo":
        first = s.head.split(b"\n", 1)[0].rstrip(b"\r")
        fields = first.count((data.delimiter or "\t").encode()) + 1
        if fields != 40:
            return [_problem(ExitCode.DATA_FORMAT, "spec.data.format",
                             f"'criteo' files have 40 tab-separated fields (label, I1..I13, C1..C26), "
                             f"but the first line of {path} has {fields}")]
        known = [c for c, _ in cols.labels[:1]] + CRITEO_DENSE_COLUMNS + CRITEO_SPARSE_COLUMNS
        bad = [(c, w) for c, w in cols.wanted if c not in known]
        if bad:
            col, where = bad[0]
            return [_problem(ExitCode.INVALID_LABELS if (col, where) in cols.labels else ExitCode.DATA_FORMAT,
                             where, f"{col!r} is not a criteo column (the label, I1..I13, C1..C26); "
                             "criteo files have one label column")]
    try:
        batch = read_head_block(fs, path, s, data, cols.labels[0][0] if cols.labels else "label")
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        return [_problem(ExitCode.DATA_FORMAT, "spec.data.format",
                         f"{data.format!r}: {path} does not parse: {str(exc).splitlines()[0]}")]
    delimiter = data.delimiter or ("\t" if data.format == "criteo" else ",")
    missing = _missing(cols, batch.schema.names, path, delimiter)
    if missing:
        return [missing]
    if batch.num_rows == 0:
        return [_problem(ExitCode.DATA_NOT_FOUND, where, f"{path} holds no rows"
                         + ("" if data.format == "criteo" else " (only a header line)"))]
    problems = []
    for col, where in cols.labels:
        values = batch.column(col)
        numeric = pc.match_substring_regex(values, NUMBER_PATTERN)
        if not pc.any(pc.fill_null(numeric, True)).as_py():
            problem = _label_problem(data, col, where, path, values.drop_null().to_pylist())
            if problem:
                problems.append(problem)
    for col, where in cols.dense:
        values = batch.column(col).drop_null()
        if len(values) and not pc.any(pc.match_substring_regex(values, NUMBER_PATTERN)).as_py():
            problems.append(_problem(
                ExitCode.DATA_FORMAT, where,
                f"column {col!r} of {path} holds text ({_text_values(values.to_pylist())}), not numbers; "
                "list it in spec.data.sparseColumns",
            ))
    return problems


# A number as text: what the readers accept in numeric columns (surrounding blanks allowed).
NUMBER_PATTERN = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|(?i:nan|inf|infinity))\s*$"


# --- the check ------------------------------------------------------------------------------


def _problem_of(exc: TrainerError, where: str) -> DataProblem:
    return DataProblem(REASONS[exc.code], exc.field or where, exc.message)


def _file(data: DataSpec, fs, path: str, cols: _Columns, where: str, header: bool) -> tuple[int, list[DataProblem]]:
    """(rows from the footer, problems) of one file: its bytes, and its footer or its header."""
    try:
        s = sniff(fs, path)
        check_bytes(data.format, path, s, where)
    except TrainerError as exc:
        return 0, [_problem_of(exc, where)]
    except OSError as exc:
        return 0, [_problem(ExitCode.DATA_NOT_FOUND, where, f"{path} cannot be read: {exc}")]
    if data.format == "parquet":
        return _parquet_file(fs, path, cols, data)
    return 0, _text_file(fs, path, s, cols, data, where) if header else []


def file_problems(spec: TrainingSpec, fs, path: str, where: str) -> list[DataProblem]:
    """What the pre-flight finds wrong with one file of a spec's data (the readers raise the first
    when a file does not read, so both say the same)."""
    cols = _columns(spec.data, spec.label_columns(), label_fields(spec))
    return _file(spec.data, fs, path, cols, where, header=True)[1]


def _check_uri(data: DataSpec, uri: str, where: str, base_dir: str | None, cols: _Columns) -> tuple[int | None, list[DataProblem]]:
    try:
        fs, path = open_uri(resolve_uri(uri, base_dir), where)
        files = list_files(fs, path, uri, where)
        sizes = [fs.size(p) or 0 for p in files]
    except TrainerError as exc:
        return None, [_problem_of(exc, where)]
    except OSError as exc:
        return None, [_problem(ExitCode.DATA_NOT_FOUND, where, f"{uri!r} cannot be read: {exc}")]
    parquet = data.format == "parquet"
    if not parquet:
        # an empty text file holds no rows and is skipped; a 0-byte Parquet file cannot be read
        nonempty = [p for p, n in zip(files, sizes, strict=True) if n]
        files = nonempty or files[:1]
    picked = files if len(files) <= MAX_FOOTERS else [files[0], files[-1]]
    problems: list[DataProblem] = []
    rows: int | None = 0 if parquet and len(files) <= MAX_FOOTERS else None
    for i, path in enumerate(picked):
        n, found = _file(data, fs, path, cols, where, header=i == 0)  # one header shows the layout
        rows = None if rows is None else rows + n
        problems += found
    if problems:
        return None, problems
    if rows == 0:
        problems.append(_problem(ExitCode.DATA_NOT_FOUND, where, f"{uri!r} holds no rows"))
    return rows, problems


def check_data(
    data: DataSpec, label_columns: list[str], *, base_dir: str | None = None, label_fields: list[str] | None = None
) -> DataCheck:
    """Problems with an instance's data that can be found cheaply, each naming its field.

    `label_columns` are the columns the tasks read their labels from (the instance's event first);
    `label_fields` the fields that name them (default `spec.event` for each)."""
    out = DataCheck()
    if data.format == "synthetic":
        return out
    cols = _columns(data, label_columns, label_fields or ["spec.event"] * len(label_columns))
    for key, uri in (("trainUri", data.train_uri), ("evalUri", data.eval_uri)):
        if not uri:
            continue
        rows, problems = _check_uri(data, uri, f"spec.data.{key}", base_dir, cols)
        out.problems += problems
        if key == "trainUri":
            out.train_rows = rows
        else:
            out.eval_rows = rows
    return out


def label_fields(spec: TrainingSpec) -> list[str]:
    """The field naming each task's label column: the event, or the task's own labelColumn."""
    return [
        "spec.event" if t.label_column is None else f"spec.architecture.tasks[{i}].labelColumn"
        for i, t in enumerate(spec.architecture.tasks)
    ]


def check_spec_data(spec: TrainingSpec, *, base_dir: str | None = None) -> DataCheck:
    return check_data(spec.data, spec.label_columns(), base_dir=base_dir, label_fields=label_fields(spec))
