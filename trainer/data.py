"""Streaming data: Criteo-format TSV/CSV and Parquet from any fsspec URI, plus a seeded synthetic
generator with a known signal.

Every source yields `Chunk`s (numpy arrays). Categorical values are hashed into
`architecture.embedding.buckets` here, so the model only sees ids. Malformed rows are counted and
skipped; past `recipe.maxBadRowFraction` the run fails with `DataError`.

The held-out split, when `data.evalUri` is unset, is a deterministic function of the row's
position in the stream, so train and eval never overlap and every rank agrees on it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np

from modelfleet.trainer.spec import TrainingSpec

CHUNK_ROWS = 8192
MISSING = "\x00missing"


class DataError(RuntimeError):
    """Data that cannot be trained on (too many malformed rows, missing columns, no files)."""


@dataclass
class Chunk:
    dense: np.ndarray  # [n, n_dense] float32, raw (not yet normalised)
    sparse: np.ndarray  # [n, n_sparse] int64 in [0, buckets)
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
    dense: list[str]
    sparse: list[str]
    labels: list[str]


class BadRows:
    """Counts malformed rows; fails once their share exceeds the allowed fraction."""

    # Below this many rows a single bad row is too large a share to judge the fraction by.
    MIN_ROWS_TO_JUDGE = 1000

    def __init__(self, max_fraction: float):
        self.max_fraction = max_fraction
        self.bad = 0
        self.total = 0
        self.first: str | None = None

    def add(self, total: int, bad: int, example: str | None = None) -> None:
        self.total += total
        self.bad += bad
        if bad and self.first is None:
            self.first = example
        if self.total >= self.MIN_ROWS_TO_JUDGE:
            self.check()

    def check(self) -> None:
        if self.total and self.bad / self.total > self.max_fraction:
            raise DataError(
                f"{self.bad} of {self.total} rows are malformed ({self.bad / self.total:.2%}), more than "
                f"recipe.maxBadRowFraction={self.max_fraction}; first bad row: {self.first}"
            )


def _hash_strings(values: np.ndarray, column: int, buckets: int) -> np.ndarray:
    """Stable hash of (column, value) into [0, buckets); hashes each distinct value once."""
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    salt = f"{column}\x1f".encode()
    ids = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(salt + u.encode(), digest_size=8).digest(), "little")
            % buckets
            for u in uniq
        ),
        dtype=np.int64,
        count=len(uniq),
    )
    return ids[inverse.reshape(-1)]


def columns_for(spec: TrainingSpec) -> Columns:
    data = spec.data
    labels = spec.label_columns()
    if data.format == "criteo":
        dense = data.dense_columns or [f"I{i}" for i in range(1, 14)]
        sparse = data.sparse_columns or [f"C{i}" for i in range(1, 27)]
    else:
        dense, sparse = list(data.dense_columns), list(data.sparse_columns)
    return Columns(dense=dense, sparse=sparse, labels=labels)


def _files(uri: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, path = fsspec.core.url_to_fs(uri)
    if any(ch in path for ch in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        files = sorted(p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith((".", "_")))
    else:
        files = [path]
    if not files or not all(fs.exists(f) for f in files):
        raise DataError(f"no data files at {uri!r}")
    return fs, files


# --- Parquet ---------------------------------------------------------------------------------


def _parquet_chunks(uri: str, cols: Columns, buckets: int, bad: BadRows) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, files = _files(uri)
    wanted = list(dict.fromkeys([*cols.labels, *cols.dense, *cols.sparse]))
    for path in files:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            missing = [c for c in wanted if c not in pf.schema_arrow.names]
            if missing:
                raise DataError(
                    f"{path}: columns {missing} not found (data.denseColumns / data.sparseColumns / "
                    f"task labels); the file has: {pf.schema_arrow.names}"
                )
            for rb in pf.iter_batches(batch_size=CHUNK_ROWS, columns=wanted):
                n = rb.num_rows
                ok = np.ones(n, dtype=bool)
                labels = np.zeros((n, len(cols.labels)), dtype=np.float32)
                for j, c in enumerate(cols.labels):
                    arr = pc.cast(rb.column(c), pa.float64(), safe=False).to_numpy(zero_copy_only=False)
                    arr = np.asarray(arr, dtype=np.float64)
                    good = (arr == 0) | (arr == 1)
                    ok &= good
                    labels[:, j] = np.where(good, arr, 0)
                dense = np.zeros((n, len(cols.dense)), dtype=np.float32)
                for j, c in enumerate(cols.dense):
                    col = rb.column(c)
                    try:
                        arr = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
                        arr = np.asarray(arr, dtype=np.float64)
                        arr = np.where(np.isnan(arr), 0.0, arr)  # null = missing = 0
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                        arr, good = _parse_floats(col.to_pylist())
                        ok &= good
                    dense[:, j] = arr
                sparse = np.zeros((n, len(cols.sparse)), dtype=np.int64)
                for j, c in enumerate(cols.sparse):
                    vals = np.array(
                        [MISSING if v is None else str(v) for v in rb.column(c).to_pylist()], dtype=object
                    )
                    sparse[:, j] = _hash_strings(vals, j, buckets)
                nbad = int((~ok).sum())
                bad.add(n, nbad, f"{path}: batch row {int(np.argmin(ok))}" if nbad else None)
                if nbad:
                    yield Chunk(dense[ok], sparse[ok], labels[ok])
                else:
                    yield Chunk(dense, sparse, labels)


def _parse_floats(values: list) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros(len(values), dtype=np.float64)
    good = np.ones(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None or v == "":
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            good[i] = False
    return out, good


# --- Criteo TSV / CSV ------------------------------------------------------------------------


def _text_chunks(
    uri: str, fmt: str, delimiter: str | None, cols: Columns, buckets: int, bad: BadRows
) -> Iterator[Chunk]:
    sep = delimiter or ("\t" if fmt == "criteo" else ",")
    fs, files = _files(uri)
    for path in files:
        with fs.open(path, "rt", compression="infer", newline="") as fh:
            if fmt == "criteo":
                # Criteo files have no header: label, 13 integer and 26 categorical columns.
                header = [cols.labels[0], *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)]]
                extra = [c for c in cols.labels[1:] if c not in header]
                if extra:
                    raise DataError(f"criteo files have one label column; task labels {extra} do not exist")
            else:
                header = fh.readline().rstrip("\r\n").split(sep)
            index = {name: i for i, name in enumerate(header)}
            missing = [c for c in [*cols.labels, *cols.dense, *cols.sparse] if c not in index]
            if missing:
                raise DataError(f"{path}: columns {missing} not found; the file has: {header}")
            li = [index[c] for c in cols.labels]
            di = [index[c] for c in cols.dense]
            si = [index[c] for c in cols.sparse]
            width = len(header)
            lines_base = 1 if fmt == "criteo" else 2
            buf_l: list[list[float]] = []
            buf_d: list[list[float]] = []
            buf_s: list[list[str]] = []
            n_seen = nbad = 0
            first_bad: str | None = None
            for lineno, line in enumerate(fh, start=lines_base):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                n_seen += 1
                f = line.split(sep)
                try:
                    if len(f) != width:
                        raise ValueError(f"{len(f)} fields, expected {width}")
                    lab = [float(f[i]) for i in li]
                    if any(v not in (0.0, 1.0) for v in lab):
                        raise ValueError(f"label {lab} is not 0 or 1")
                    den = [float(f[i]) if f[i] else 0.0 for i in di]
                except ValueError as exc:
                    nbad += 1
                    first_bad = first_bad or f"{path}:{lineno}: {exc}"
                    continue
                buf_l.append(lab)
                buf_d.append(den)
                buf_s.append([f[i] or MISSING for i in si])
                if n_seen >= CHUNK_ROWS:
                    yield _text_chunk(buf_l, buf_d, buf_s, cols, buckets)
                    bad.add(n_seen, nbad, first_bad)
                    buf_l, buf_d, buf_s, n_seen, nbad = [], [], [], 0, 0
            if n_seen:
                bad.add(n_seen, nbad, first_bad)
                if buf_l:
                    yield _text_chunk(buf_l, buf_d, buf_s, cols, buckets)


def _text_chunk(lab, den, spa, cols: Columns, buckets: int) -> Chunk:
    n = len(lab)
    sparse = np.zeros((n, len(cols.sparse)), dtype=np.int64)
    raw = np.array(spa, dtype=object).reshape(n, len(cols.sparse))
    for j in range(len(cols.sparse)):
        sparse[:, j] = _hash_strings(raw[:, j], j, buckets)
    return Chunk(
        np.array(den, dtype=np.float32).reshape(n, len(cols.dense)),
        sparse,
        np.array(lab, dtype=np.float32).reshape(n, len(cols.labels)),
    )


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


# The held-out rows depend on the data alone, not on recipe.seed: models of one instance must be
# scored on the same examples for the gate's paired comparison (a seed edit is a null edit).
SPLIT_SEED = 0


def _is_eval(start: int, n: int, fraction: float, seed: int) -> np.ndarray:
    idx = np.arange(start, start + n, dtype=np.uint64)
    h = (idx * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)) & np.uint64(0xFFFFFFFF)
    h = (h ^ (h >> np.uint64(15))) * np.uint64(0x2C1B3C6D) & np.uint64(0xFFFFFFFF)
    return (h.astype(np.float64) / 2**32) < fraction


class Dataset:
    """One split of a spec's data, re-readable (each `chunks()` call streams it again)."""

    def __init__(self, spec: TrainingSpec, split: str, rank: int = 0, world: int = 1):
        self.spec, self.split, self.rank, self.world = spec, split, rank, world
        self.columns = columns_for(spec)
        self.buckets = spec.architecture.embedding.buckets
        self.bad = BadRows(spec.recipe.max_bad_row_fraction)

    def _raw(self, uri: str | None) -> Iterator[Chunk]:
        d = self.spec.data
        self.bad = BadRows(self.spec.recipe.max_bad_row_fraction)
        if d.format == "synthetic":
            yield from _synthetic_chunks(self.spec, self.buckets)
        elif d.format == "parquet":
            yield from _parquet_chunks(uri, self.columns, self.buckets, self.bad)
        else:
            yield from _text_chunks(uri, d.format, d.delimiter, self.columns, self.buckets, self.bad)
        self.bad.check()

    def chunks(self) -> Iterator[Chunk]:
        d = self.spec.data
        if self.split == "eval" and d.eval_uri and d.format != "synthetic":
            source, split_here = self._raw(d.eval_uri), False
        else:
            source, split_here = self._raw(d.train_uri), not (d.eval_uri and d.format != "synthetic")
        pos = 0
        for c in source:
            n = len(c)
            keep = np.ones(n, dtype=bool)
            if split_here:
                ev = _is_eval(pos, n, d.eval_fraction, SPLIT_SEED)
                keep = ev if self.split == "eval" else ~ev
            if self.world > 1 and self.split == "train":
                keep &= (np.arange(pos, pos + n) % self.world) == self.rank
            pos += n
            if keep.all():
                yield c
            elif keep.any():
                yield c.take(keep)


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


class DenseTransform:
    """log: sign(x) * log1p(|x|); standard: (x - mean) / std from the first training rows; none."""

    def __init__(self, kind: str, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.kind, self.mean, self.std = kind, mean, std

    @classmethod
    def fit(cls, kind: str, data: Dataset, max_rows: int = 1 << 16) -> DenseTransform:
        if kind != "standard":
            return cls(kind)
        seen: list[np.ndarray] = []
        n = 0
        for c in data.chunks():
            seen.append(c.dense)
            n += len(c)
            if n >= max_rows:
                break
        x = np.concatenate(seen).astype(np.float64) if seen else np.zeros((1, 0))
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
