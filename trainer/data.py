"""Streaming data on pyarrow: CSV and Criteo TSV (`pyarrow.csv`, RFC 4180 quoting, compression
from the magic bytes), Parquet (`pyarrow.dataset`: a file, a folder or a glob) from any fsspec
URI, plus a seeded synthetic generator with a known signal. Vectorised end to end: a batch of
rows is decoded and encoded with pyarrow compute and numpy, never row by row.

Reading is three steps:
1. *read*: each file's bytes are checked against `data.format` (preflight.check_bytes), then
   streamed as Arrow record batches of the columns the spec names;
2. *decode*: labels, numbers and ids are parsed per column; a malformed row (wrong field count,
   a number that is not one, a label not 0/1 or not in `data.labelValues`) is counted, with the
   first one's file and row, and skipped; past `recipe.maxBadRowFraction` the run fails naming
   the column (`DataError`, exit code DATA_FORMAT or INVALID_LABELS);
3. *encode*: categorical columns become ids in [0, table size) per `data.encodings` (hash by
   default, identity, vocabulary) and bucketized numeric columns the id of their bucket, with
   what `Features.fit` learnt from the train split (vocabularies, quantile boundaries, the
   standard transform's mean and std from a seeded sample of the whole split).

The held-out split, when `data.evalUri` is unset, is a deterministic function of the row's
position among the valid rows, so train and eval never overlap and every rank agrees on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelfleet.trainer import preflight
from modelfleet.trainer.preflight import DataError
from modelfleet.trainer.report import BadRow, ExitCode, SourceReport
from modelfleet.trainer.spec import CRITEO_DENSE_COLUMNS, CRITEO_SPARSE_COLUMNS, TrainingSpec

CHUNK_ROWS = 8192  # rows per synthetic chunk (part of its seeding: do not change)
PARQUET_BATCH_ROWS = 65536  # decoding is faster in larger batches; CSV batches are one ~1 MiB block
CSV_BLOCK_BYTES = 1 << 20
MISSING = "\x00missing"  # the text a missing categorical value is hashed (or counted) as
# Bump when the ids or the decoding of the same data change: checkpoints record it.
DATA_LAYOUT = 2
_NUMBER = r"^[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|(?i:nan|inf|infinity))$"


@dataclass
class Chunk:
    dense: np.ndarray  # [n, n_dense] float32, raw (not yet normalised)
    sparse: np.ndarray  # [n, n_sparse] int64, feature i in [0, sparse_table_sizes(spec)[i])
    labels: np.ndarray  # [n, n_tasks] float32 in {0, 1}

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def concat(chunks: list[Chunk]) -> Chunk:
        return Chunk(
            np.concatenate([c.dense for c in chunks]),
            np.concatenate([c.sparse for c in chunks]),
            np.concatenate([c.labels for c in chunks]),
        )

    def take(self, idx: np.ndarray | slice) -> Chunk:
        return Chunk(self.dense[idx], self.sparse[idx], self.labels[idx])


@dataclass
class Columns:
    """The columns a spec reads and the field that names each (for messages)."""

    dense: list[str]
    sparse: list[str]
    labels: list[str]
    bucketize: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def wanted(self) -> list[str]:
        return list(dict.fromkeys([*self.labels, *self.dense, *self.sparse, *self.bucketize]))


def columns_for(spec: TrainingSpec) -> Columns:
    data = spec.data
    labels = spec.label_columns()
    dense, sparse = data.dense_column_names(), data.sparse_column_names()
    bucketize = [b.column for b in data.bucketize]
    fields: dict[str, str] = {}
    for i, c in enumerate(bucketize):
        fields[c] = f"spec.data.bucketize[{i}].column"
    for i, c in enumerate(sparse):
        fields[c] = f"spec.data.sparseColumns[{i}]" if data.sparse_columns else "spec.data.sparseColumns"
    for i, c in enumerate(dense):
        fields[c] = f"spec.data.denseColumns[{i}]" if data.dense_columns else "spec.data.denseColumns"
    label_fields: dict[str, str] = {}
    for c, f in zip(labels, preflight.label_fields(spec), strict=True):
        label_fields.setdefault(c, f)  # tasks sharing a label column: the first names it
    fields.update(label_fields)
    return Columns(dense=dense, sparse=sparse, labels=labels, bucketize=bucketize, fields=fields)


# --- bad rows ----------------------------------------------------------------------------------


class BadRows:
    """Counts the malformed rows of one read of one URI; fails once their share exceeds the
    allowed fraction, naming the column most of them are wrong in."""

    # Below this many rows a single bad row is too large a share to judge the fraction by.
    MIN_ROWS_TO_JUDGE = 1000

    def __init__(self, max_fraction: float, uri: str = "", label_fields: frozenset[str] = frozenset()):
        self.max_fraction, self.uri, self.label_fields = max_fraction, uri, label_fields
        self.bad = 0
        self.total = 0
        self.first: BadRow | None = None
        self.by_field: dict[str, int] = {}
        self.label_text: dict[str, set[str]] = {}  # label column -> text values seen

    def add(self, total: int, bad: int, first: BadRow | None = None) -> None:
        self.total += total
        self.bad += bad
        if bad and self.first is None:
            self.first = first
        if self.total >= self.MIN_ROWS_TO_JUDGE:
            self.check()

    def check(self) -> None:
        if not (self.total and self.bad / self.total > self.max_fraction):
            return
        where = max(self.by_field, key=self.by_field.get) if self.by_field else "spec.data.format"
        labels = where in self.label_fields or where == "spec.data.labelValues"
        detail = ""
        for col, seen in self.label_text.items():
            values = ", ".join(repr(v) for v in sorted(seen)[:5]) + (", ..." if len(seen) > 5 else "")
            if where == "spec.data.labelValues":
                detail = f"; label column {col!r} holds values in neither list: {values}"
            else:
                detail = (f"; label column {col!r} holds text ({values}), not the numbers 0 and 1: map its "
                          "values with spec.data.labelValues {positive: [...], negative: [...]}")
            break
        raise DataError(
            ExitCode.INVALID_LABELS if labels else ExitCode.DATA_FORMAT, where,
            f"{where}: {self.bad} of {self.total} rows of {self.uri} are malformed ({self.bad / self.total:.2%}), "
            f"more than recipe.maxBadRowFraction={self.max_fraction}{detail}; first bad row: {self.first}",
        )

    def report(self) -> SourceReport:
        return SourceReport(uri=self.uri, rows_read=self.total, bad_rows=self.bad, first_bad_row=self.first)


class DataStats:
    """Every read of every URI in one run; a URI's report is its most complete read (a train
    split is re-read every epoch, and a run may stop before reading all of it)."""

    def __init__(self) -> None:
        self.reads: dict[str, list[BadRows]] = {}

    def add(self, bad: BadRows) -> None:
        self.reads.setdefault(bad.uri, []).append(bad)

    def reports(self) -> list[SourceReport]:
        return [max(reads, key=lambda b: b.total).report() for reads in self.reads.values()]


# --- vectorised parsing ------------------------------------------------------------------------


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def to_float(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 with NaN where missing, mask of values that are text but not a number)."""
    arr = _plain(arr)
    n = len(arr)
    if not _is_text(arr.type):
        try:
            return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), np.float64), np.zeros(n, bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arr = pc.cast(arr, pa.string())
    try:
        values = pc.cast(arr, pa.float64())
        return np.asarray(values.to_numpy(zero_copy_only=False), np.float64), np.zeros(n, bool)
    except pa.ArrowInvalid:
        pass
    trimmed = pc.utf8_trim_whitespace(arr)
    ok = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER), True)
    values = pc.cast(pc.if_else(ok, trimmed, pa.scalar(None, pa.string())), pa.float64())
    bad = ~np.asarray(ok.to_numpy(zero_copy_only=False), bool)
    # "" is missing, not malformed (CSV readers already make it null)
    bad &= np.asarray(pc.fill_null(pc.not_equal(trimmed, ""), True).to_numpy(zero_copy_only=False), bool)
    return np.asarray(values.to_numpy(zero_copy_only=False), np.float64), bad


def as_text(arr: pa.Array) -> pa.Array:
    """The values as text, a missing value as MISSING."""
    arr = _plain(arr)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return pc.fill_null(arr, MISSING)


_P = 0x100000001B3  # odd, so invertible mod 2**64
_P_INV = pow(_P, -1, 1 << 64)


@functools.lru_cache(maxsize=4)
def _powers(n: int, base: int) -> np.ndarray:
    """base**0, base**1, ..., base**(n-1) mod 2**64."""
    out = np.ones(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        out[1:] = np.cumprod(np.full(n - 1, base, dtype=np.uint64))
    return out


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_text(arr: pa.Array, salt: int) -> np.ndarray:
    """A stable 64-bit hash of each string of a (non-null) string array, vectorised over its
    bytes: sum of (byte + 1) * P**position, mixed with the length and the salt.

    Positions are taken in the whole buffer (one multiply per byte, one reduceat) and each
    string's sum is shifted back to its own start with P's inverse, so no per-byte gather."""
    arr = _plain(arr)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]: offsets[-1]]
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    sums = np.zeros(n, dtype=np.uint64)
    if len(data):
        size = 1 << max(16, (len(data) - 1).bit_length())  # cached tables of a few sizes
        with np.errstate(over="ignore"):
            contrib = (data.astype(np.uint64) + np.uint64(1)) * _powers(size, _P)[: len(data)]
            nonempty = lengths > 0
            sums[nonempty] = np.add.reduceat(contrib, starts[nonempty]) * _powers(size, _P_INV)[starts[nonempty]]
    with np.errstate(over="ignore"):
        h = sums ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ _mix(np.uint64(salt + 1) * np.uint64(_P))
    return _mix(h)


def hash_ids(arr: pa.Array, salt: int, buckets: int) -> np.ndarray:
    return (hash_text(as_text(arr), salt) % np.uint64(buckets)).astype(np.int64)


# --- reading ----------------------------------------------------------------------------------


@dataclass
class RawBatch:
    """Arrow columns of some rows of one file, how to find a row's number in that file, and the
    rows the reader skipped since the previous batch (wrong field count: (line, message))."""

    batch: pa.RecordBatch
    file: str
    row_number: Callable[[int], int]
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _arrow_fs(fs):
    import fsspec.implementations.local
    import pyarrow.fs as pafs

    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _unreadable(spec: TrainingSpec, fs, path: str, where: str, fallback: DataError) -> DataError:
    """The pre-flight's account of a file that does not read (so both say the same)."""
    problems = preflight.file_problems(spec, fs, path, where)
    return problems[0].error() if problems else fallback


def _parquet_batches(uri: str, where: str, spec: TrainingSpec, cols: Columns) -> Iterator[RawBatch]:
    import pyarrow.dataset as pads

    fs, path = preflight.open_uri(uri, where)
    files = preflight.list_files(fs, path, uri, where)
    for f in files:
        preflight.check_bytes("parquet", f, preflight.sniff(fs, f), where)
    dataset = pads.dataset(files, format="parquet", filesystem=_arrow_fs(fs))
    wanted = cols.wanted()
    for frag in dataset.get_fragments():
        try:
            schema = frag.physical_schema
            if any(c not in schema.names for c in wanted):
                raise _unreadable(spec, fs, frag.path, where, DataError(
                    ExitCode.DATA_FORMAT, "spec.data", f"spec.data: columns missing in {frag.path}"))
            start = 0
            for rb in frag.to_batches(schema=schema, columns=wanted, batch_size=PARQUET_BATCH_ROWS):
                yield RawBatch(rb, frag.path, lambda i, s=start: s + i + 1)
                start += rb.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(ExitCode.DATA_FORMAT, "spec.data.format",
                            f"spec.data.format: 'parquet', but {frag.path} cannot be read as Parquet: {exc}") from None


def _line_of(k: int, header: int, skipped: list[int]) -> int:
    """The line of the k-th (0-based) delivered row, given the lines of the rows skipped before."""
    line = header + 1 + k
    for s in skipped:
        if s > line:
            break
        line += 1
    return line


def _text_batches(uri: str, where: str, spec: TrainingSpec, cols: Columns) -> Iterator[RawBatch]:
    import pyarrow.csv as pcsv

    data = spec.data
    criteo = data.format == "criteo"
    fs, path = preflight.open_uri(uri, where)
    files = preflight.list_files(fs, path, uri, where)
    sizes = [fs.size(f) or 0 for f in files]
    if not any(sizes):
        raise DataError(ExitCode.DATA_NOT_FOUND, where, f"{where}: {uri!r} is empty (0 bytes)")
    wanted = cols.wanted()
    header = 0 if criteo else 1
    names = [cols.labels[0], *CRITEO_DENSE_COLUMNS, *CRITEO_SPARSE_COLUMNS] if criteo else None
    for f, size in zip(files, sizes, strict=True):
        if not size:
            continue  # an empty text file holds no rows
        s = preflight.sniff(fs, f)
        preflight.check_bytes(data.format, f, s, where)
        skipped: list[int] = []  # lines of the rows skipped so far in this file
        pending: list[tuple[int, str]] = []  # ... and not yet handed out with a batch

        def on_invalid(row, skipped=skipped, pending=pending) -> str:
            line = row.number if row.number is not None else header + 1
            skipped.append(line)
            pending.append((line, f"{row.actual_columns} fields, expected {row.expected_columns}"))
            return "skip"

        def handed(pending=pending) -> list[tuple[int, str]]:
            out = pending[:]
            pending.clear()
            return out

        with fs.open(f, "rb", compression=s.compression) as fh:
            try:
                reader = pcsv.open_csv(
                    fh,
                    read_options=pcsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES, column_names=names),
                    parse_options=pcsv.ParseOptions(
                        delimiter=data.delimiter or ("\t" if criteo else ","),
                        quote_char=False if criteo else '"',
                        invalid_row_handler=on_invalid,
                    ),
                    convert_options=pcsv.ConvertOptions(
                        include_columns=wanted, column_types={c: pa.string() for c in wanted},
                        strings_can_be_null=True, quoted_strings_can_be_null=True, null_values=[""],
                    ),
                )
                start = 0
                for rb in reader:
                    yield RawBatch(rb, f, lambda i, s=start, sk=skipped: _line_of(s + i, header, sk), handed())
                    start += rb.num_rows
                if pending:
                    yield RawBatch(pa.RecordBatch.from_pylist([], schema=reader.schema), f, lambda i: i, handed())
            except pa.ArrowKeyError as exc:  # a column the spec names is not in the header
                raise _unreadable(spec, fs, f, where, DataError(
                    ExitCode.DATA_FORMAT, "spec.data", f"spec.data: {f}: {exc}")) from None
            except pa.ArrowInvalid as exc:
                msg = str(exc).splitlines()[0]
                raise DataError(ExitCode.DATA_FORMAT, "spec.data.format",
                                f"spec.data.format: {data.format!r}: {f} does not parse: {msg}") from None


# --- decoding ---------------------------------------------------------------------------------


@dataclass
class Decoded:
    """Valid rows, parsed: labels, raw numbers, the ids that need no fitting, and the values of
    the columns whose ids a fit decides (vocabularies, fitted bucket boundaries)."""

    labels: np.ndarray  # [n, tasks] float32
    dense: np.ndarray  # [n, dense] float32, missing = 0
    sparse: np.ndarray  # [n, sparse + bucketize] int64; vocabulary and bucketize columns filled by encode
    text: dict[int, pa.Array]  # sparse index -> values (vocabulary columns)
    nums: np.ndarray  # [n, bucketize] float64, missing = 0

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, keep: np.ndarray) -> Decoded:
        mask = pa.array(keep)
        return Decoded(self.labels[keep], self.dense[keep], self.sparse[keep],
                       {j: a.filter(mask) for j, a in self.text.items()}, self.nums[keep])


class Decoder:
    """Parses raw Arrow batches of one spec into `Decoded` rows and counts the bad ones."""

    def __init__(self, spec: TrainingSpec, cols: Columns):
        self.spec, self.cols = spec, cols
        data = spec.data
        self.encodings = [data.encoding(c) for c in cols.sparse]
        self.buckets = spec.architecture.embedding.buckets
        self.label_values = data.label_values

    def decode(self, raw: RawBatch, bad: BadRows) -> Decoded:
        rb, cols = raw.batch, self.cols
        n = rb.num_rows
        invalid = np.zeros(n, dtype=bool)
        first: tuple[int, str] | None = None

        def flag(mask: np.ndarray, column: str, message: Callable[[int], str], where: str | None = None) -> None:
            nonlocal first
            mask = mask & ~invalid
            count = int(mask.sum())
            if not count:
                return
            key = where or cols.fields.get(column, "spec.data")
            bad.by_field[key] = bad.by_field.get(key, 0) + count
            i = int(np.argmax(mask))
            if first is None or i < first[0]:
                first = (i, message(i))
            invalid[mask] = True

        labels = np.zeros((n, len(cols.labels)), dtype=np.float32)
        for j, c in enumerate(cols.labels):
            arr = _plain(rb.column(c))
            if self.label_values is not None:
                text = pc.cast(arr, pa.string()) if not pa.types.is_string(arr.type) else arr
                pos = np.asarray(pc.fill_null(pc.is_in(text, pa.array(self.label_values.positive)), False), bool)
                neg = np.asarray(pc.fill_null(pc.is_in(text, pa.array(self.label_values.negative)), False), bool)
                labels[:, j] = pos
                other = ~(pos | neg)
                if other.any():
                    seen = pc.unique(text.filter(pa.array(other))).to_pylist()
                    bad.label_text.setdefault(c, set()).update("missing" if v is None else v for v in seen[:20])
                vals = text
                flag(other, c, lambda i: f"label column {c!r}: {vals[i].as_py()!r} is in neither "
                     "spec.data.labelValues.positive nor .negative", "spec.data.labelValues")
                continue
            values, text_bad = to_float(arr)
            if text_bad.any():
                seen = pc.unique(arr.filter(pa.array(text_bad))).to_pylist()
                bad.label_text.setdefault(c, set()).update(str(v) for v in seen[:20])
            missing = np.isnan(values) & ~text_bad
            flag(text_bad, c, lambda i: f"label column {c!r}: {arr[i].as_py()!r} is not a number")
            flag(missing, c, lambda i: f"label column {c!r} is empty")
            flag((values != 0) & (values != 1) & ~np.isnan(values), c,
                 lambda i: f"label column {c!r}: {values[i]:g} is not 0 or 1")
            labels[:, j] = np.where((values == 0) | (values == 1), values, 0)

        dense = np.zeros((n, len(cols.dense)), dtype=np.float32)
        for j, c in enumerate(cols.dense):
            arr = rb.column(c)
            values, text_bad = to_float(arr)
            flag(text_bad, c, lambda i: f"column {c!r}: {arr[i].as_py()!r} is not a number")
            dense[:, j] = np.where(np.isnan(values), 0.0, values)  # missing = 0

        sparse = np.zeros((n, len(cols.sparse) + len(cols.bucketize)), dtype=np.int64)
        text: dict[int, pa.Array] = {}
        for j, (c, enc) in enumerate(zip(cols.sparse, self.encodings, strict=True)):
            arr = rb.column(c)
            if enc.kind == "hash":
                sparse[:, j] = hash_ids(arr, j, enc.table_size(self.buckets))
            elif enc.kind == "vocabulary":
                text[j] = as_text(arr)
            else:
                values, text_bad = to_float(arr)
                flag(text_bad, c, lambda i: f"column {c!r}: {arr[i].as_py()!r} is not an integer id "
                     f"(kind identity)")
                card = enc.cardinality or 0
                ok = (values >= 0) & (values < card) & (values == np.floor(values))
                sparse[:, j] = np.where(ok, np.nan_to_num(values), card).astype(np.int64)  # the extra id
        nums = np.zeros((n, len(cols.bucketize)), dtype=np.float64)
        for j, c in enumerate(cols.bucketize):
            arr = rb.column(c)
            values, text_bad = to_float(arr)
            flag(text_bad, c, lambda i: f"column {c!r}: {arr[i].as_py()!r} is not a number")
            nums[:, j] = np.where(np.isnan(values), 0.0, values)

        nbad = int(invalid.sum())
        located = [(raw.row_number(first[0]), first[1])] if first else []
        if raw.skipped:  # rows the reader dropped (wrong field count) come before or between these
            bad.by_field["spec.data.format"] = bad.by_field.get("spec.data.format", 0) + len(raw.skipped)
            located.append(raw.skipped[0])
        line, message = min(located) if located else (0, "")
        row = BadRow(file=raw.file, row=line, message=message) if located else None
        bad.add(n + len(raw.skipped), nbad + len(raw.skipped), row)
        out = Decoded(labels, dense, sparse, text, nums)
        return out.take(~invalid) if nbad else out


# --- fitted features ----------------------------------------------------------------------------


def _sample_keys(start: int, n: int, seed: int) -> np.ndarray:
    idx = np.arange(start, start + n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(idx * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed) * np.uint64(_P))


class DenseTransform:
    """log: sign(x) * log1p(|x|); standard: (x - mean) / std fitted on a seeded sample of the
    whole train split; none."""

    def __init__(self, kind: str, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.kind, self.mean, self.std = kind, mean, std

    @classmethod
    def fit(cls, kind: str, data: Dataset) -> DenseTransform:
        """Fitted on a seeded sample of `data` (data.fitSampleRows rows of the whole split)."""
        if kind != "standard":
            return cls(kind)
        return cls.from_sample(kind, _fit_pass(data, {}).dense)

    @classmethod
    def from_sample(cls, kind: str, x: np.ndarray) -> DenseTransform:
        if kind != "standard":
            return cls(kind)
        x = x.astype(np.float64) if len(x) else np.zeros((1, x.shape[1]))
        return cls(kind, x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "log":
            return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)
        if self.kind == "standard":
            return ((x - self.mean) / self.std).astype(np.float32)
        return x.astype(np.float32, copy=False)

    def state(self) -> dict:
        return {
            "kind": self.kind,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> DenseTransform:
        arr = lambda v: None if v is None else np.asarray(v, np.float64)  # noqa: E731
        return cls(state["kind"], arr(state.get("mean")), arr(state.get("std")))


class Features:
    """What encoding learns from the train split: the dense transform, each vocabulary column's
    values (id = position) and each bucketized column's boundaries. `Features.fit` reads the
    train split once, and only when something needs fitting."""

    def __init__(self, spec: TrainingSpec, dense: DenseTransform, vocab: dict[int, pa.Array] | None = None,
                 boundaries: dict[int, np.ndarray] | None = None):
        self.spec, self.dense = spec, dense
        self.vocab = vocab or {}
        sparse = spec.data.sparse_column_names() if spec.data.format != "synthetic" else []
        # the extra id of each vocabulary column (values outside its vocabulary)
        self.other_id = {j: e.max_size for j, e in enumerate(map(spec.data.encoding, sparse)) if e.kind == "vocabulary"}
        declared = {j: np.asarray(b.boundaries, np.float64) for j, b in enumerate(spec.data.bucketize) if b.boundaries}
        self.boundaries = {**declared, **(boundaries or {})}

    @staticmethod
    def needs_fit(spec: TrainingSpec) -> bool:
        d = spec.data
        return d.dense_transform == "standard" or any(e.kind == "vocabulary" for e in d.encodings) or any(
            b.buckets is not None for b in d.bucketize
        )

    @classmethod
    def fit(cls, spec: TrainingSpec, train: Dataset | None = None) -> Features:
        d = spec.data
        if not cls.needs_fit(spec):
            return cls(spec, DenseTransform(d.dense_transform))
        train = train or Dataset(spec, "train")
        vocab_cols = {j: e for j, e in enumerate(map(d.encoding, train.columns.sparse)) if e.kind == "vocabulary"}
        fitted = _fit_pass(train, vocab_cols)
        vocab = {}
        for j, enc in vocab_cols.items():
            table = fitted.counts[j]
            table = table.filter(pc.greater_equal(table["n"], enc.min_count))
            table = table.sort_by([("n", "descending"), ("v", "ascending")]).slice(0, enc.max_size)
            vocab[j] = table["v"].combine_chunks()
        boundaries = {  # equal-frequency boundaries; tied quantiles merge
            j: np.unique(np.quantile(fitted.nums[:, j], np.arange(1, b.buckets) / b.buckets))
            if len(fitted.nums) else np.zeros(0)
            for j, b in enumerate(d.bucketize) if b.buckets is not None
        }
        return cls(spec, DenseTransform.from_sample(d.dense_transform, fitted.dense), vocab, boundaries)

    def encode(self, dec: Decoded) -> Chunk:
        sparse = dec.sparse
        for j, values in dec.text.items():
            vocab = self.vocab[j]
            idx = pc.index_in(values, value_set=vocab) if len(vocab) else pa.nulls(len(values), pa.int32())
            sparse[:, j] = np.asarray(pc.fill_null(idx, self.other_id[j]).to_numpy(zero_copy_only=False), np.int64)
        first = sparse.shape[1] - dec.nums.shape[1]  # bucketized columns follow the categorical ones
        for j in range(dec.nums.shape[1]):
            sparse[:, first + j] = np.searchsorted(self.boundaries[j], dec.nums[:, j], side="right")
        return Chunk(dec.dense, sparse, dec.labels)

    def state(self) -> dict:
        return {
            "dense": self.dense.state(),
            "vocab": {str(j): v.to_pylist() for j, v in self.vocab.items()},
            "boundaries": {str(j): b.tolist() for j, b in self.boundaries.items()},
        }

    @classmethod
    def from_state(cls, spec: TrainingSpec, state: dict) -> Features:
        return cls(
            spec,
            DenseTransform.from_state(state["dense"]),
            {int(j): pa.array(v, pa.string()) for j, v in state.get("vocab", {}).items()},
            {int(j): np.asarray(b, np.float64) for j, b in state.get("boundaries", {}).items()},
        )


@dataclass
class _Fitted:
    dense: np.ndarray  # the sample's dense rows
    nums: np.ndarray  # the sample's bucketized values
    counts: dict[int, pa.Table]  # vocabulary column -> (v, n): every value of the split and its count


def _fit_pass(train: Dataset, vocab_cols: dict) -> _Fitted:
    """One read of a split: a seeded uniform sample of its rows and its vocabulary counts."""
    k, seed = train.spec.data.fit_sample_rows, train.spec.recipe.seed
    counts: dict[int, list[pa.Table]] = {j: [] for j in vocab_cols}
    keys = np.zeros(0, np.uint64)
    dense = nums = None
    pos = 0
    for dec in train.decoded():
        if dense is None or nums is None:
            dense, nums = dec.dense[:0], dec.nums[:0]
        for j in vocab_cols:
            vc = pc.value_counts(dec.text[j])
            counts[j].append(pa.table({"v": vc.field("values"), "n": vc.field("counts")}))
            if len(counts[j]) >= 64:  # memory follows the distinct values, not the rows
                counts[j] = [_sum_counts(counts[j])]
        # the k smallest of a seeded key per row: a uniform sample of the whole split in one pass
        keys = np.concatenate([keys, _sample_keys(pos, len(dec), seed)])
        dense = np.concatenate([dense, dec.dense])
        nums = np.concatenate([nums, dec.nums])
        pos += len(dec)
        if len(keys) > 2 * k:
            keep = np.argpartition(keys, k)[:k]
            keys, dense, nums = keys[keep], dense[keep], nums[keep]
    if dense is None or nums is None:  # no rows: require_rows() says so
        dense, nums = np.zeros((0, len(train.columns.dense)), np.float32), np.zeros((0, len(train.columns.bucketize)))
    if len(keys) > k:
        keep = np.argpartition(keys, k)[:k]
        dense, nums = dense[keep], nums[keep]
    empty = pa.table({"v": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
    return _Fitted(dense, nums, {j: _sum_counts(t) if t else empty for j, t in counts.items()})


def _sum_counts(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables).group_by("v").aggregate([("n", "sum")])
    return table.select(["v", "n_sum"]).rename_columns(["v", "n"])


# --- synthetic -------------------------------------------------------------------------------


def _synthetic_chunks(spec: TrainingSpec, buckets: int) -> Iterator[Chunk]:
    """Rows with a known signal: the label's logit is a fixed function of the features.

    Each categorical value has a weight and each dense feature a slope (drawn once from the seed),
    so a model that learns gets NE well below 1 and one that does not stays at 1.
    """
    syn = spec.data.synthetic
    assert syn is not None
    n_tasks = len(spec.architecture.tasks)
    rng = np.random.default_rng(syn.seed)
    cat_w = rng.normal(0, 1.0, size=(syn.sparse, syn.cardinality)) / math.sqrt(max(syn.sparse, 1))
    dense_w = rng.normal(0, 1.0, size=(syn.dense,)) / math.sqrt(max(syn.dense, 1))
    task_shift = rng.normal(0, 0.3, size=(n_tasks,))
    bias = math.log(syn.positive_rate / (1 - syn.positive_rate))
    salt = np.arange(syn.sparse, dtype=np.int64) * 0x9E3779B1
    for start in range(0, syn.rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, syn.rows - start)
        r = np.random.default_rng([syn.seed, start])
        # skewed category frequencies, like real ids
        ids = np.minimum((r.pareto(1.2, size=(n, syn.sparse)) * 3).astype(np.int64), syn.cardinality - 1)
        raw = np.floor(np.exp(r.normal(1.0, 1.2, size=(n, syn.dense))))
        z = np.log1p(raw) - 1.3
        logit = bias + z @ dense_w * 1.5 + cat_w[np.arange(syn.sparse), ids].sum(axis=1) * 1.5
        labels = np.stack(
            [r.random(n) < 1 / (1 + np.exp(-(logit + task_shift[t]))) for t in range(n_tasks)], axis=1
        )
        sparse = ((ids * 0x85EBCA6B + salt) % (2**31 - 1)) % buckets
        yield Chunk(raw.astype(np.float32), sparse.astype(np.int64), labels.astype(np.float32))


# --- the stream ------------------------------------------------------------------------------


def _is_eval(start: int, n: int, fraction: float, seed: int) -> np.ndarray:
    idx = np.arange(start, start + n, dtype=np.uint64)
    h = (idx * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)) & np.uint64(0xFFFFFFFF)
    h = (h ^ (h >> np.uint64(15))) * np.uint64(0x2C1B3C6D) & np.uint64(0xFFFFFFFF)
    return (h.astype(np.float64) / 2**32) < fraction


class Dataset:
    """One split of a spec's data, re-readable (each `chunks()` call streams it again).

    `features`: what encoding needs from the train split (`Features.fit`); fitted from the whole
    train split on first use when not given. `stats`: where each read's bad-row counts go."""

    def __init__(self, spec: TrainingSpec, split: str, rank: int = 0, world: int = 1,
                 features: Features | None = None, stats: DataStats | None = None):
        self.spec, self.split, self.rank, self.world = spec, split, rank, world
        self.columns = columns_for(spec)
        self.buckets = spec.architecture.embedding.buckets
        self.stats = stats if stats is not None else DataStats()
        self._features = features
        d = spec.data
        self.own_source = split == "eval" and bool(d.eval_uri) and d.format != "synthetic"
        self.uri = d.eval_uri if self.own_source else d.train_uri
        self.where = "spec.data.evalUri" if self.own_source else "spec.data.trainUri"
        self.split_here = not (d.eval_uri and d.format != "synthetic")
        self.bad = self._new_bad()
        self.rows_read = 0  # valid rows of the source in the last read, before the split

    @property
    def features(self) -> Features:
        if self._features is None:
            self._features = Features.fit(self.spec)
        return self._features

    def _new_bad(self) -> BadRows:
        fields = frozenset(preflight.label_fields(self.spec))
        return BadRows(self.spec.recipe.max_bad_row_fraction, self.uri or "synthetic", fields)

    def _raw(self) -> Iterator[Decoded]:
        """The source's valid rows, decoded (counted into a fresh BadRows per read)."""
        d = self.spec.data
        self.bad = bad = self._new_bad()
        if d.format == "synthetic":
            for c in _synthetic_chunks(self.spec, self.buckets):
                bad.add(len(c), 0)
                yield Decoded(c.labels, c.dense, c.sparse, {}, np.zeros((len(c), 0)))
            return
        self.stats.add(bad)
        decoder = Decoder(self.spec, self.columns)
        if d.format == "parquet":
            source = _parquet_batches(self.uri, self.where, self.spec, self.columns)
        else:
            source = _text_batches(self.uri, self.where, self.spec, self.columns)
        for raw in source:
            dec = decoder.decode(raw, bad)
            if len(dec):
                yield dec
        bad.check()

    def decoded(self) -> Iterator[Decoded]:
        """This split's rows (this rank's share of the train split), decoded, not yet encoded."""
        d = self.spec.data
        pos = 0
        self.rows_read = 0
        for c in self._raw():
            n = len(c)
            self.rows_read += n
            keep = np.ones(n, dtype=bool)
            if self.split_here:
                ev = _is_eval(pos, n, d.eval_fraction, self.spec.recipe.seed)
                keep = ev if self.split == "eval" else ~ev
            if self.world > 1 and self.split == "train":
                keep &= (np.arange(pos, pos + n) % self.world) == self.rank
            pos += n
            if keep.all():
                yield c
            elif keep.any():
                yield c.take(keep)

    def chunks(self) -> Iterator[Chunk]:
        features = self.features
        for dec in self.decoded():
            yield features.encode(dec)

    def require_rows(self) -> None:
        """Fail before any training step when this split holds no row, saying why: the file is
        empty, every row is malformed, or the held-out fraction took every row (or none)."""
        for c in self.decoded():
            if len(c):
                return
        d = self.spec.data
        if self.rows_read == 0:
            if self.bad.total:
                raise DataError(ExitCode.DATA_FORMAT, self.where,
                                f"{self.where}: all {self.bad.total} rows of {self.uri!r} are malformed; "
                                f"first bad row: {self.bad.first}")
            raise DataError(ExitCode.DATA_NOT_FOUND, self.where, f"{self.where}: {self.uri!r} holds no rows")
        if self.split == "eval":
            raise DataError(
                ExitCode.DATA_NOT_FOUND, "spec.data.evalFraction",
                f"spec.data.evalFraction: the held-out split is empty ({self.rows_read} rows in "
                f"spec.data.trainUri, evalFraction {d.eval_fraction}); set spec.data.evalUri or a larger "
                "spec.data.evalFraction",
            )
        what = "the training split" + (f" of rank {self.rank}" if self.world > 1 else "")
        raise DataError(
            ExitCode.DATA_NOT_FOUND, "spec.data.trainUri",
            f"spec.data.trainUri: {what} is empty ({self.rows_read} rows in {self.uri!r}"
            + (f", evalFraction {d.eval_fraction} held out" if self.split_here else "") + ")",
        )


def batches(
    chunks: Iterator[Chunk], batch_size: int, rng: np.random.Generator | None, buffer_rows: int = 1 << 17
) -> Iterator[Chunk]:
    """Fixed-size batches (the last may be smaller), shuffled within a buffer when rng is given."""
    buf: list[Chunk] = []
    held = 0
    rest: Chunk | None = None

    def emit(block: Chunk, final: bool) -> Iterator[Chunk]:
        nonlocal rest
        if rest is not None:
            block = Chunk.concat([rest, block])
            rest = None
        if rng is not None:
            block = block.take(rng.permutation(len(block)))
        full = len(block) // batch_size * batch_size
        for s in range(0, full, batch_size):
            yield block.take(slice(s, s + batch_size))
        if full < len(block):
            tail = block.take(slice(full, None))
            if final:
                yield tail
            else:
                rest = tail

    for c in chunks:
        buf.append(c)
        held += len(c)
        if held >= buffer_rows:
            yield from emit(Chunk.concat(buf), final=False)
            buf, held = [], 0
    if buf or rest is not None:
        yield from emit(Chunk.concat(buf) if buf else rest.take(slice(0, 0)), final=True)
