"""The trained model as a product: a self-contained serving artifact per run, and its loader.

At the end of training rank 0 writes `<outputUri>/serving/`:
- `model.ts`: TorchScript (`torch.jit.load` needs neither modelfleet nor the model's code; libtorch
  loads it from C++ too). `forward(dense, sparse) -> probabilities [B, tasks]` takes the raw
  numeric features (float32 [B, n_dense], the dense normalisation is inside the module) and the
  categorical ids (int64 [B, n_sparse]).
- `features.json`: what turns a row into those two tensors -- the resolved training spec (its
  data section names the columns and each one's encoding: hash, identity, vocabulary, bucketize)
  and what the run fitted (`Features.state()`: vocabularies, bucket boundaries) -- and the task
  names. `predict` decodes and encodes rows with the data layer's own `Decoder` and `Features`
  (`modelfleet.trainer.data`), so training and serving never diverge.

Tracing, not scripting: the model's control flow depends only on its plan, fixed at export; the
trace is checked against the eager model on a batch of another size before it is written.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch
from torch import nn

from modelfleet.trainer.data import BadRows, DataError, Decoder, Features, RawBatch, columns_for
from modelfleet.trainer.spec import CRITEO_DENSE_COLUMNS, CRITEO_SPARSE_COLUMNS, TrainingSpec

SERVING_DIR = "serving"
MODEL_FILE = "model.ts"
FEATURES_FILE = "features.json"
ARTIFACT_FORMAT = "modelfleet-serving/v1"


class ServingError(RuntimeError):
    """No usable artifact at the URI, or rows the artifact cannot score; the message says which."""


def export(model: Any, plan: Any, spec: TrainingSpec, features: Features, output_uri: str) -> str:
    """Write `<output_uri>/serving/` for a trained model; returns the folder's URI."""
    from modelfleet.trainer.components.model import RankingModel
    from modelfleet.trainer.techniques.catalogue import sparse_table_sizes

    cpu = RankingModel(plan).eval()
    cpu.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    cpu.requires_grad_(False)  # a scorer: its outputs need no autograd graph
    module = ServingModule(cpu, features.dense).eval()
    smallest = min(sparse_table_sizes(spec), default=1)

    def example(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        dense = torch.rand(n, plan.n_dense, generator=g) * 10
        return dense, torch.randint(0, smallest, (n, plan.n_sparse), generator=g)

    with torch.no_grad():
        traced = torch.jit.trace(module, example(4, 0), check_inputs=[example(7, 1)])
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    description = {
        "format": ARTIFACT_FORMAT,
        "instance": spec.instance,
        "revision": spec.revision,
        "tasks": [t.name for t in plan.architecture.tasks],
        "denseFeatures": plan.n_dense,
        "sparseFeatures": plan.n_sparse,
        "spec": spec.wire(),
        "features": features.state(),
    }
    folder = output_uri.rstrip("/") + "/" + SERVING_DIR
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/{MODEL_FILE}", "wb") as fh:
        fh.write(buf.getvalue())
    with fs.open(f"{root}/{FEATURES_FILE}", "w") as fh:
        json.dump(description, fh, indent=2)
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
    features: dict[str, Any]  # features.json
    uri: str

    def __post_init__(self) -> None:
        self.spec = TrainingSpec.model_validate(self.features["spec"])
        self.fitted = Features.from_state(self.spec, self.features["features"])
        # the feature columns alone: rows to score need no labels
        self.columns = dataclasses.replace(columns_for(self.spec), labels=[])

    @property
    def tasks(self) -> list[str]:
        return list(self.features["tasks"])

    def feature_columns(self) -> list[str]:
        return self.columns.wanted()

    def encode(self, table: Any) -> tuple[np.ndarray, np.ndarray]:
        """(numbers float32 [n, d], categorical ids int64 [n, s]) of a pyarrow table's rows, by the
        data layer's Decoder and the run's fitted Features. A row the trainer would skip as
        malformed is an error here: every row must get a score."""
        if self.spec.data.format == "synthetic":
            raise ServingError(
                f"{self.uri} was trained on synthetic data, which has no columns to read rows by; "
                "its module takes the tensors directly (see docs/trainer.md)"
            )
        wanted = self.feature_columns()
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise ServingError(f"columns {missing} not found; the model reads {wanted}, the data has {table.column_names}")
        bad = BadRows(1.0, self.uri)
        decoder = Decoder(self.spec, self.columns)
        dense, sparse, start = [], [], 0
        for rb in table.select(wanted).to_batches():
            dec = decoder.decode(RawBatch(rb, "rows", lambda i, s=start: s + i + 1), bad)
            if bad.bad:
                raise ServingError(f"row {bad.first.row}: {bad.first.message}" if bad.first else f"{bad.bad} malformed row(s)")
            chunk = self.fitted.encode(dec)
            dense.append(chunk.dense)
            sparse.append(chunk.sparse)
            start += rb.num_rows
        if not dense:
            return (np.zeros((0, self.features["denseFeatures"]), np.float32),
                    np.zeros((0, self.features["sparseFeatures"]), np.int64))
        return np.concatenate(dense), np.concatenate(sparse)

    def predict(self, table: Any, batch_size: int = 8192) -> np.ndarray:
        """Probabilities [n, tasks] for every row of `table`, in order."""
        dense, sparse = self.encode(table)
        out = []
        with torch.no_grad():
            for s in range(0, len(dense), batch_size):
                out.append(self.module(torch.from_numpy(dense[s : s + batch_size]), torch.from_numpy(sparse[s : s + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.tasks)), dtype=np.float32)


def load(uri: str) -> ServingModel:
    fs, root = _artifact_root(uri)
    where = f"{root}/{FEATURES_FILE}"
    try:
        with fs.open(where, "r") as fh:
            features = json.load(fh)
    except ValueError as exc:
        raise ServingError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(features, dict) or features.get("format") != ARTIFACT_FORMAT:
        found = features.get("format") if isinstance(features, dict) else None
        raise ServingError(f"{where}: artifact format {found!r}, this modelfleet reads {ARTIFACT_FORMAT!r}")
    with fs.open(f"{root}/{MODEL_FILE}", "rb") as fh:
        module = torch.jit.load(io.BytesIO(fh.read()), map_location="cpu")
    module.eval()
    try:
        return ServingModel(module, features, uri)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ServingError(
            f"{where} does not describe a model this modelfleet can serve ({type(exc).__name__}: {exc}); "
            "retrain the run to write a current artifact"
        ) from exc


def read_rows(uri: str, model: ServingModel, extra: list[str] = ()) -> Any:
    """A CSV/TSV/Parquet file as a pyarrow table of the model's feature columns (labels optional)
    and the `extra` columns asked for.

    Parquet by extension (.parquet, .pq), else text in the model's own format, read as the data
    layer reads it: csv with a header row and RFC 4180 quotes; criteo without a header or quotes
    (label first when a row has 40 fields, 39 without it); every field as text, empty = missing.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise ServingError(f"no data file at {uri}")
    wanted = list(dict.fromkeys([*model.feature_columns(), *extra]))
    data = model.spec.data
    try:
        if path.endswith((".parquet", ".pq")):
            with fs.open(path, "rb") as fh:
                pf = pq.ParquetFile(fh)
                have = pf.schema_arrow.names
                absent = [c for c in wanted if c not in have]
                if absent:
                    raise ServingError(f"{uri}: columns {absent} not found; the file has {have}")
                return pf.read(columns=wanted)
        criteo = data.format == "criteo"
        with fs.open(path, "rb", compression="infer") as fh:
            raw = fh.read()
        parse = pcsv.ParseOptions(delimiter=data.delimiter or ("\t" if criteo else ","), quote_char=False if criteo else '"')
        convert = {"strings_can_be_null": True, "quoted_strings_can_be_null": True, "null_values": [""]}
        if criteo:
            table = pcsv.read_csv(
                io.BytesIO(raw), read_options=pcsv.ReadOptions(autogenerate_column_names=True), parse_options=parse,
                convert_options=pcsv.ConvertOptions(column_types={f"f{i}": pa.string() for i in range(40)}, **convert),
            )
            names = [*CRITEO_DENSE_COLUMNS, *CRITEO_SPARSE_COLUMNS]
            if table.num_columns == len(names) + 1:
                names = [model.spec.label_columns()[0], *names]
            elif table.num_columns != len(names):
                raise ServingError(f"{uri}: criteo rows have {len(names)} feature fields ({len(names) + 1} with the label), found {table.num_columns}")
            absent = [c for c in wanted if c not in names]
            if absent:
                raise ServingError(f"{uri}: columns {absent} are not criteo columns")
            return table.rename_columns(names).select(wanted)
        first = pcsv.read_csv(io.BytesIO(raw.split(b"\n", 1)[0] + b"\n"), parse_options=parse,
                              read_options=pcsv.ReadOptions(autogenerate_column_names=True)) if raw.strip() else None
        header = [str(v) for v in first.to_pylist()[0].values()] if first is not None and first.num_rows else []
        absent = [c for c in wanted if c not in header]
        if absent:
            raise ServingError(f"{uri}: columns {absent} not found; the header has {header}")
        return pcsv.read_csv(
            io.BytesIO(raw), parse_options=parse,
            convert_options=pcsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted}, **convert),
        )
    except (pa.ArrowInvalid, DataError, UnicodeDecodeError) as exc:
        raise ServingError(f"{uri}: cannot read it as {data.format} rows: {str(exc).splitlines()[0]}") from exc
