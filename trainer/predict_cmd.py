"""`modelfleet predict --model URI --data FILE [--output FILE] [-o csv|json|parquet] [--keep COLS]`

Scores the rows of a CSV/TSV/Parquet file with a run's serving artifact (trainer/serving.py).
`--model` is any fsspec URI of a run's output folder -- a ModelInstance's `status.modelUri`, as
`modelfleet status` shows it -- or of its `serving/` folder. Label columns are not needed. The
output has one row per input row, in order: the `--keep` columns, then `prediction` (one task) or
`prediction_<task>` per task. Without `--output` it goes to stdout (csv or json).

Exit status: 0 (also when the reader of stdout stops early, as `| head` does); 2 for bad arguments, no artifact at the URI, or rows it cannot read (one line on
stderr: `modelfleet predict: ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

FORMATS = ("csv", "json", "parquet")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="URI", help="a run's output URI (status.modelUri) or its serving/ folder")
    parser.add_argument("--data", required=True, metavar="FILE", help="CSV/TSV/Parquet rows to score (any fsspec URI)")
    parser.add_argument("--output", metavar="FILE", help="write here (any fsspec URI) instead of stdout")
    parser.add_argument("-o", "--format", choices=FORMATS, default=None, help="output format (default: from --output's extension, else csv)")
    parser.add_argument("--keep", default="", metavar="COLS", help="comma-separated input columns to copy into the output (e.g. an id)")


EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    ext = "." + args.output.rsplit(".", 1)[-1] if args.output and "." in args.output else ""
    return EXTENSIONS.get(ext.lower(), "csv")


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"modelfleet predict: {message}", file=sys.stderr)
        return 2

    fmt = _format(args)
    if fmt == "parquet" and not args.output:
        return fail("-o parquet needs --output FILE (Parquet is not written to a terminal)")
    import fsspec
    import pyarrow as pa

    from modelfleet.trainer import serving

    keep = [c for c in args.keep.split(",") if c]
    try:
        model = serving.load(args.model)
        table = serving.read_rows(args.data, model, extra=keep)
        scores = model.predict(table)
    except serving.ServingError as exc:
        return fail(str(exc))
    names = ["prediction"] if len(model.tasks) == 1 else [f"prediction_{t}" for t in model.tasks]
    out = pa.table({**{c: table.column(c) for c in keep}, **{n: scores[:, j].astype("float64") for j, n in enumerate(names)}})
    if args.output:
        with fsspec.open(args.output, "wb") as fh:
            _write(out, fmt, fh)
    else:
        try:
            _write(out, fmt, sys.stdout.buffer)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped (`| head`): not an error, and no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.output:
        print(f"modelfleet predict: {out.num_rows} rows scored by {args.model} -> {args.output}", file=sys.stderr)
    return 0


def _write(table, fmt: str, fh) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        pq.write_table(table, fh)
    elif fmt == "csv":
        pcsv.write_csv(table, fh)
    else:
        fh.write(json.dumps(table.to_pylist()).encode() + b"\n")
