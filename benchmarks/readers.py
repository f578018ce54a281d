"""Rows per second of the trainer's readers: the pyarrow readers (`trainer/data.py`) against the
per-row readers they replaced (trainer/data.py at commit c3216ed, loaded from git), side by side,
alternating which goes first every round, on the same files.

    .venv/bin/python -P benchmarks/readers.py [--rows N] [--rounds R] [--old-rows M]

Files, written into a temporary folder from a seeded generator: a Criteo-like table (label, 13
integer and 26 categorical columns, 8-character hex ids of 200,000 values) as CSV, gzip CSV, Criteo
TSV and Parquet (unquoted CSV, which the old reader can split); plus the bundled UCI Adult data (examples/data/adult.parquet, 48,842 rows, 6
numeric + 8 categorical columns), as Parquet and as a quoted CSV. A read is one full pass of
`Dataset(spec, "train").chunks()`: every row decoded, split (20 % held out) and encoded (hashed ids,
log-ready floats), what the training loop consumes. The old readers read only the first
`--old-rows` rows of each file (they are ~20x slower; a rate needs no full pass), and cannot read
the quoted CSV at all (that is issue 11's bug). Prints a Markdown table: the median over rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "c3216ed"
ADULT = ROOT / "examples" / "data" / "adult.parquet"
ADULT_DENSE = ["age", "fnlwgt", "educational_num", "capital_gain", "capital_loss", "hours_per_week"]
ADULT_SPARSE = ["workclass", "education", "marital_status", "occupation", "relationship", "race", "gender",
                "native_country"]


def criteo_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {"label": rng.integers(0, 2, n)}
    for i in range(1, 14):
        cols[f"I{i}"] = rng.integers(0, 1000, n)
    for i in range(1, 27):
        cols[f"C{i}"] = pa.array(np.char.mod("%08x", rng.integers(0, 200_000, n)))
    return pa.table(cols)


def write_files(folder: Path, rows: int) -> dict[str, tuple[str, dict]]:
    """name -> (format, data spec in wire form)."""
    t = criteo_table(rows)
    plain = pcsv.WriteOptions(quoting_style="none", quoting_header="none")  # what the old reader can split
    pcsv.write_csv(t, folder / "criteo.csv", plain)
    with pa.CompressedOutputStream(str(folder / "criteo.csv.gz"), "gzip") as out:
        pcsv.write_csv(t, out, plain)
    pcsv.write_csv(t, folder / "criteo.tsv", pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
    pq.write_table(t, folder / "criteo.parquet")
    adult = pq.read_table(ADULT)
    pcsv.write_csv(adult, folder / "adult.csv", pcsv.WriteOptions(quoting_style="all_valid"))
    cols = {"denseColumns": [f"I{i}" for i in range(1, 14)], "sparseColumns": [f"C{i}" for i in range(1, 27)]}
    acols = {"denseColumns": ADULT_DENSE, "sparseColumns": ADULT_SPARSE}
    return {
        "criteo-like CSV": ("label", {"format": "csv", "trainUri": str(folder / "criteo.csv"), **cols}),
        "criteo-like CSV, gzip": ("label", {"format": "csv", "trainUri": str(folder / "criteo.csv.gz"), **cols}),
        "criteo-like TSV (criteo format)": ("label", {"format": "criteo", "trainUri": str(folder / "criteo.tsv")}),
        "criteo-like Parquet": ("label", {"format": "parquet", "trainUri": str(folder / "criteo.parquet"), **cols}),
        "Adult Parquet (real)": ("over_50k", {"format": "parquet", "trainUri": str(ADULT), **acols}),
        "Adult quoted CSV (real)": ("over_50k", {"format": "csv", "trainUri": str(folder / "adult.csv"), **acols}),
    }


def old_module():
    """trainer/data.py as it was before the pyarrow readers, imported from git."""
    text = subprocess.run(["git", "show", f"{OLD_COMMIT}:trainer/data.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_data.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_data", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_data"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def training_spec(event: str, data: dict):
    from modelfleet.trainer.spec import TrainingSpec

    return TrainingSpec.model_validate({"instance": "bench", "revision": "r", "event": event, "outputUri": "/tmp/unused",
                                        "architecture": {"embedding": {"buckets": 100_000}}, "data": data})


def rate(module, spec, max_rows: int | None) -> float:
    """Rows per second of one pass (the first max_rows raw rows when given)."""
    ds = module.Dataset(spec, "train")
    start, n = time.perf_counter(), 0
    for c in ds.chunks():
        n += len(c)
        if max_rows and n >= max_rows * 0.8:  # 80 % of the rows are the train split
            break
    return n / 0.8 / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated files")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old-rows", type=int, default=50_000, help="rows the old readers read per file")
    args = ap.parse_args()
    import modelfleet.trainer.data as new

    old = old_module()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), args.rows)
        results: dict[str, dict[str, list[float]]] = {name: {"new": [], "old": []} for name in files}
        for r in range(args.rounds):
            for name, (event, data) in files.items():
                spec = training_spec(event, data)
                order = [("new", new, None), ("old", old, args.old_rows)]
                for label, module, limit in order if r % 2 == 0 else order[::-1]:
                    try:
                        results[name][label].append(rate(module, spec, limit))
                    except Exception as exc:  # noqa: BLE001 - the old CSV reader fails on quoting
                        results[name][label].append(float("nan"))
                        print(f"round {r + 1}: {label} reader on {name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]}", file=sys.stderr)
        load = os.getloadavg()
        print(f"rows {args.rows:,} (generated), rounds {args.rounds}, load average {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f} at the end, {os.cpu_count()} CPUs")
        print()
        print("| data | pyarrow readers, rows/s | per-row readers (c3216ed), rows/s | speed-up |")
        print("|---|---:|---:|---:|")
        for name, res in results.items():
            a = statistics.median(res["new"])
            b = statistics.median(res["old"]) if not any(np.isnan(res["old"])) else float("nan")
            ratio = f"{a / b:.1f}x" if b == b else "n/a (fails)"
            old_text = f"{b:,.0f}" if b == b else "fails"
            print(f"| {name} | {a:,.0f} | {old_text} | {ratio} |")


if __name__ == "__main__":
    main()
