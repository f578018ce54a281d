"""The trained model as a product: a self-contained serving artifact per run, and its loader.

At the end of training rank 0 writes `<outputUri>/serving/`:
- `model.ts`: TorchScript (`torch.jit.load` needs neither modelfleet nor the model's code; libtorch
  loads it from C++ too). `forward(dense, sparse) -> probabilities [B, tasks]` takes the raw
  numeric features (float32 [B, n_dense], the dense normalisation is inside the module) and the
  categorical ids (int64 [B, n_sparse]).
- `features.json`: what turns a row into those two tensors (the data format, the dense and
  categorical columns in order, the hash bucket count) and the task names. `predict` encodes rows
  with the data layer's own functions (`modelfleet.trainer.data`), so training and serving
  never diverge.

Tracing, not scripting: the model's control flow depends only on its plan, fixed at export; the
trace is checked against the eager model on a batch of another size before it is written.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn

from modelfleet.trainer.data import MISSING, DataError, _hash_strings, _parse_floats, columns_for

SERVING_DIR = "serving"
MODEL_FILE = "model.ts"
FEATURES_FILE = "features.json"
ARTIFACT_FORMAT = "modelfleet-serving/v1"


class ServingError(RuntimeError):
    """No usable artifact at the URI, or rows the artifact cannot score; the message says which."""


def export(model: Any, plan: Any, spec: Any, transform: Any, output_uri: str) -> str:
    """Write `<output_uri>/serving/` for a trained model; returns the folder's URI."""
    from modelfleet.trainer.components.model import RankingModel

    cpu = RankingModel(plan).eval()
    cpu.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    cpu.requires_grad_(False)  # a scorer: its outputs need no autograd graph
    module = ServingModule(cpu, transform).eval()
    cols = columns_for(spec)
    buckets = spec.architecture.embedding.buckets

    def example(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        dense = torch.rand(n, plan.n_dense, generator=g) * 10
        return dense, torch.randint(0, buckets, (n, plan.n_sparse), generator=g)

    with torch.no_grad():
        traced = torch.jit.trace(module, example(4, 0), check_inputs=[example(7, 1)])
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    features = {
        "format": ARTIFACT_FORMAT,
        "instance": spec.instance,
        "revision": spec.revision,
        "data": {"format": spec.data.format, "delimiter": spec.data.delimiter},
        "denseColumns": cols.dense,
        "sparseColumns": cols.sparse,
        "labelColumns": cols.labels,
        "denseFeatures": plan.n_dense,
        "sparseFeatures": plan.n_sparse,
        "buckets": buckets,
        "tasks": [t.name for t in plan.architecture.tasks],
        "denseTransform": transform.state(),
    }
    folder = output_uri.rstrip("/") + "/" + SERVING_DIR
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/{MODEL_FILE}", "wb") as fh:
        fh.write(buf.getvalue())
    with fs.open(f"{root}/{FEATURES_FILE}", "w") as fh:
        json.dump(features, fh, indent=2)
    return folder


class ServingModule(nn.Module):
    """Raw numeric features + categorical ids -> probabilities; the dense transform inside."""

    def __init__(self, model: nn.Module, transform: Any):
        super().__init__()
        self.model, self.kind = model, transform.kind
        mean = transform.mean if transform.mean is not None else np.zeros(0)
        std = transform.std if transform.std is not None else np.ones(0)
        # float64, as the data layer computes (x - mean) / std before casting to float32
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float64)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float64)))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        if self.kind == "log":
            dense = torch.sign(dense) * torch.log1p(torch.abs(dense))
        elif self.kind == "standard":
            dense = ((dense.double() - self.mean) / self.std).float()
        return torch.sigmoid(self.model(dense, sparse).float())


# --- loading and scoring ----------------------------------------------------------------------


def _artifact_root(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The serving folder at `uri`: a run's output URI (status.modelUri) or the folder itself."""
    fs, path = fsspec.core.url_to_fs(uri)
    path = path.rstrip("/")
    for root in (f"{path}/{SERVING_DIR}", path):
        if fs.exists(f"{root}/{FEATURES_FILE}") and fs.exists(f"{root}/{MODEL_FILE}"):
            return fs, root
    if fs.exists(f"{path}/model.pt"):
        raise ServingError(
            f"{uri} holds model.pt but no {SERVING_DIR}/{MODEL_FILE}: the run was trained before "
            "modelfleet wrote serving artifacts; retrain it (or give --model a run that has one)"
        )
    raise ServingError(
        f"no serving artifact at {uri}: expected {SERVING_DIR}/{FEATURES_FILE} and "
        f"{SERVING_DIR}/{MODEL_FILE} under a run's output URI (a ModelInstance's status.modelUri)"
    )


@dataclass
class ServingModel:
    module: Any  # the TorchScript module
    features: dict[str, Any]
    uri: str

    @property
    def tasks(self) -> list[str]:
        return list(self.features["tasks"])

    def encode(self, table: Any) -> tuple[np.ndarray, np.ndarray]:
        """(dense float32 [n, d], categorical ids int64 [n, s]) of a pyarrow table's rows."""
        f = self.features
        if f["data"]["format"] == "synthetic":
            raise ServingError(
                f"{self.uri} was trained on synthetic data, which has no columns to read rows by; "
                "its module takes the tensors directly (see docs/trainer.md)"
            )
        missing = [c for c in [*f["denseColumns"], *f["sparseColumns"]] if c not in table.column_names]
        if missing:
            raise ServingError(f"columns {missing} not found; the model reads {f['denseColumns'] + f['sparseColumns']}, the data has {table.column_names}")
        n = table.num_rows
        dense = np.zeros((n, len(f["denseColumns"])), dtype=np.float32)
        for j, c in enumerate(f["denseColumns"]):
            dense[:, j] = _dense_values(table.column(c), c)
        sparse = np.zeros((n, len(f["sparseColumns"])), dtype=np.int64)
        text = f["data"]["format"] in ("criteo", "csv")
        for j, c in enumerate(f["sparseColumns"]):
            values = table.column(c).to_pylist()
            # as the data layer reads each format: an empty text field or a Parquet null is "missing"
            raw = [MISSING if v is None or (text and v == "") else str(v) for v in values]
            sparse[:, j] = _hash_strings(np.array(raw, dtype=object), j, f["buckets"])
        return dense, sparse

    def predict(self, table: Any, batch_size: int = 8192) -> np.ndarray:
        """Probabilities [n, tasks] for every row of `table`, in order."""
        dense, sparse = self.encode(table)
        out = []
        with torch.no_grad():
            for s in range(0, len(dense), batch_size):
                out.append(self.module(torch.from_numpy(dense[s : s + batch_size]), torch.from_numpy(sparse[s : s + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.tasks)), dtype=np.float32)


def _dense_values(col: Any, name: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        arr, good = _parse_floats(col.to_pylist())
        if not good.all():
            row = int(np.argmin(good))
            raise ServingError(f"column {name!r}, row {row + 1}: {col[row].as_py()!r} is not a number")
        return arr
    try:
        arr = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ServingError(f"column {name!r} ({col.type}) is not numeric: {exc}") from exc
    return np.where(np.isnan(arr), 0.0, arr)  # null = missing = 0, as in training


def load(uri: str) -> ServingModel:
    fs, root = _artifact_root(uri)
    with fs.open(f"{root}/{FEATURES_FILE}", "r") as fh:
        features = json.load(fh)
    if features.get("format") != ARTIFACT_FORMAT:
        raise ServingError(f"{uri}: artifact format {features.get('format')!r}, this modelfleet reads {ARTIFACT_FORMAT!r}")
    with fs.open(f"{root}/{MODEL_FILE}", "rb") as fh:
        module = torch.jit.load(io.BytesIO(fh.read()), map_location="cpu")
    module.eval()
    return ServingModel(module, features, uri)


def read_rows(uri: str, features: dict[str, Any], extra: list[str] = ()) -> Any:
    """A CSV/TSV/Parquet file as a pyarrow table of the model's feature columns (labels optional)
    and the `extra` columns asked for.

    Parquet by extension (.parquet, .pq), else text in the model's own format: a header row for
    csv; none for criteo (label first when a row has 40 fields, 39 without it). Text fields are
    kept as strings and parsed as the data layer parses them; quotes are not special (the
    trainer splits on the delimiter alone).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise ServingError(f"no data file at {uri}")
    wanted = list(dict.fromkeys([*features["denseColumns"], *features["sparseColumns"], *extra]))
    fmt = features["data"]["format"]
    try:
        if path.endswith((".parquet", ".pq")):
            with fs.open(path, "rb") as fh:
                pf = pq.ParquetFile(fh)
                have = pf.schema_arrow.names
                absent = [c for c in wanted if c not in have]
                if absent:
                    raise ServingError(f"{uri}: columns {absent} not found; the file has {have}")
                return pf.read(columns=wanted)
        sep = features["data"].get("delimiter") or ("\t" if fmt == "criteo" else ",")
        with fs.open(path, "rb", compression="infer") as fh:
            data = fh.read()
        parse = pcsv.ParseOptions(delimiter=sep, quote_char=False)
        if fmt == "criteo":
            table = pcsv.read_csv(
                io.BytesIO(data),
                read_options=pcsv.ReadOptions(autogenerate_column_names=True),
                parse_options=parse,
                convert_options=pcsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False, null_values=[], column_types={f"f{i}": pa.string() for i in range(40)}),
            )
            names = [*[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)]]
            if table.num_columns == 40:
                names = [features["labelColumns"][0], *names]
            elif table.num_columns != 39:
                raise ServingError(f"{uri}: criteo rows have 39 feature fields (40 with the label), found {table.num_columns}")
            return table.rename_columns(names).select(wanted)
        header = data.split(b"\n", 1)[0].decode().rstrip("\r").split(sep)  # as the trainer reads it
        absent = [c for c in wanted if c not in header]
        if absent:
            raise ServingError(f"{uri}: columns {absent} not found; the header has {header}")
        return pcsv.read_csv(
            io.BytesIO(data),
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(
                include_columns=wanted, column_types={c: pa.string() for c in wanted},
                strings_can_be_null=False, quoted_strings_can_be_null=False, null_values=[],
            ),
        )
    except (pa.ArrowInvalid, DataError, UnicodeDecodeError) as exc:
        raise ServingError(f"{uri}: cannot read it as {fmt} rows: {exc}") from exc
