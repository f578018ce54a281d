"""Streaming readers (Criteo TSV, CSV, Parquet, any fsspec URI), bad-row accounting, the split,
the synthetic generator and dense normalisation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelfleet.trainer.data import Chunk, Dataset, DataError, DenseTransform, batches


def _criteo_rows(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = str(int(rng.random() < 0.3))
        ints = ["" if rng.random() < 0.1 else str(int(rng.integers(0, 1000))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{rng.integers(0, 50):08x}" for _ in range(26)]
        rows.append("\t".join([label, *ints, *cats]))
    return rows


def _read_all(ds: Dataset) -> Chunk:
    return Chunk.concat(list(ds.chunks()))


def test_criteo_tsv_reader_reads_every_row_and_hashes_into_buckets(make_spec, tmp_path):
    path = tmp_path / "day_0.tsv"
    path.write_text("\n".join(_criteo_rows(300)) + "\n")
    spec = make_spec(data={"format": "criteo", "trainUri": str(path), "evalFraction": 0.25})
    train, ev = _read_all(Dataset(spec, "train")), _read_all(Dataset(spec, "eval"))
    assert len(train) + len(ev) == 300 and 40 < len(ev) < 110
    assert train.dense.shape[1] == 13 and train.sparse.shape[1] == 26
    assert train.sparse.min() >= 0 and train.sparse.max() < 500
    first = _criteo_rows(1)[0].split("\t")
    assert set(np.unique(train.labels)) <= {0.0, 1.0}
    # the same value in the same column always gets the same id, in different columns usually not
    assert (Dataset(spec, "train").columns.dense[0], first[0] in "01") == ("I1", True)


def test_criteo_column_mapping_and_gzip_through_fsspec(make_spec, tmp_path):
    import gzip

    path = tmp_path / "part.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(_criteo_rows(100)) + "\n")
    spec = make_spec(
        data={"format": "criteo", "trainUri": f"file://{path}", "denseColumns": ["I1", "I5"], "sparseColumns": ["C3"]}
    )
    c = _read_all(Dataset(spec, "train"))
    assert c.dense.shape[1] == 2 and c.sparse.shape[1] == 1


def test_malformed_rows_are_counted_and_skipped(make_spec, tmp_path):
    rows = _criteo_rows(2000)
    rows[10] = "1\tnot-a-number" + "\t" * 38  # right width, bad integer
    rows[20] = "1\t2\t3"  # wrong width
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(rows) + "\n")
    spec = make_spec(
        data={"format": "criteo", "trainUri": str(path), "evalFraction": 0.5}, recipe={"maxBadRowFraction": 0.01}
    )
    train, ev = Dataset(spec, "train"), Dataset(spec, "eval")
    assert len(_read_all(train)) + len(_read_all(ev)) == 1998
    assert (train.bad.bad, train.bad.total) == (2, 2000)


def test_too_many_malformed_rows_fail_with_a_clear_message(make_spec, tmp_path):
    rows = _criteo_rows(1500)
    for i in range(0, 1500, 20):  # 5 % bad labels
        rows[i] = "7" + rows[i][1:]
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(rows) + "\n")
    spec = make_spec(data={"format": "criteo", "trainUri": str(path)}, recipe={"maxBadRowFraction": 0.01})
    with pytest.raises(DataError) as err:
        _read_all(Dataset(spec, "train"))
    msg = str(err.value)
    assert "75 of 1500 rows are malformed" in msg
    assert "recipe.maxBadRowFraction=0.01" in msg and "d.tsv:1:" in msg and "not 0 or 1" in msg


def test_csv_with_header_and_named_columns(make_spec, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("ts,clicked,price,country\n1,0,3.5,de\n2,1,,fr\n3,1,7,de\n")
    spec = make_spec(
        event="clicked",
        data={"format": "csv", "trainUri": str(path), "denseColumns": ["price"], "sparseColumns": ["country"],
              "evalUri": str(path)},
    )
    c = _read_all(Dataset(spec, "train"))
    assert c.labels[:, 0].tolist() == [0, 1, 1]
    assert c.dense[:, 0].tolist() == [3.5, 0.0, 7.0]  # empty = missing = 0
    assert c.sparse[0, 0] == c.sparse[2, 0] != c.sparse[1, 0]


def test_missing_columns_are_named(make_spec, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("clicked,price\n1,2\n")
    spec = make_spec(event="clicked", data={"format": "csv", "trainUri": str(path), "denseColumns": ["cost"]})
    with pytest.raises(DataError, match=r"\['cost'\] not found"):
        _read_all(Dataset(spec, "train"))


def test_parquet_reader_from_a_directory_and_from_memory_fs(make_spec, tmp_path):
    import fsspec

    table = pa.table({
        "y": pa.array([0, 1, 1, 0, None, 1], pa.int8()),
        "age": pa.array([20, 30, None, 40, 50, 60]),
        "job": pa.array(["a", "b", "a", None, "c", "b"]),
    })
    (tmp_path / "pq").mkdir()
    pq.write_table(table.slice(0, 3), tmp_path / "pq" / "part-0.parquet")
    pq.write_table(table.slice(3), tmp_path / "pq" / "part-1.parquet")
    kw = {"event": "y", "recipe": {"maxBadRowFraction": 0.5}}
    cols = {"format": "parquet", "denseColumns": ["age"], "sparseColumns": ["job"]}
    spec = make_spec(data={**cols, "trainUri": str(tmp_path / "pq"), "evalUri": str(tmp_path / "pq")}, **kw)
    ds = Dataset(spec, "train")
    c = _read_all(ds)
    assert c.labels[:, 0].tolist() == [0, 1, 1, 0, 1]  # the null label row is skipped, and counted
    assert c.dense[:, 0].tolist() == [20, 30, 0, 40, 60]
    assert (ds.bad.bad, ds.bad.total) == (1, 6)
    with fsspec.open("memory://mf-test/data.parquet", "wb") as fh:
        pq.write_table(pa.concat_tables([table] * 50), fh)
    spec = make_spec(data={**cols, "trainUri": "memory://mf-test/data.parquet", "evalFraction": 0.3}, **kw)
    assert len(_read_all(Dataset(spec, "train"))) + len(_read_all(Dataset(spec, "eval"))) == 250


def test_split_is_disjoint_and_ranks_partition_the_training_rows(make_spec):
    spec = make_spec(data={"format": "synthetic", "evalFraction": 0.2,
                           "synthetic": {"rows": 3000, "dense": 2, "sparse": 2}})
    full = _read_all(Dataset(spec, "train"))
    ev = _read_all(Dataset(spec, "eval"))
    assert len(full) + len(ev) == 3000 and 500 < len(ev) < 700
    shards = [_read_all(Dataset(spec, "train", rank=r, world=2)) for r in (0, 1)]
    assert sum(len(s) for s in shards) == len(full)
    both = np.concatenate([s.dense for s in shards])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, full.dense.tolist()))


def test_synthetic_data_is_seeded_and_has_the_asked_base_rate(make_spec):
    spec = make_spec(data={"format": "synthetic", "synthetic": {"rows": 20000, "positiveRate": 0.25, "seed": 5}})
    a, b = _read_all(Dataset(spec, "train")), _read_all(Dataset(spec, "train"))
    assert np.array_equal(a.sparse, b.sparse) and np.array_equal(a.labels, b.labels)
    assert 0.15 < a.labels.mean() < 0.35
    other = make_spec(data={"format": "synthetic", "synthetic": {"rows": 20000, "positiveRate": 0.25, "seed": 6}})
    assert not np.array_equal(_read_all(Dataset(other, "train")).labels[:100], a.labels[:100])


def test_batches_cover_every_row_once_and_shuffle_by_seed():
    chunks = [Chunk(np.arange(n0, n0 + 10, dtype=np.float32)[:, None], np.zeros((10, 1), np.int64),
                    np.zeros((10, 1), np.float32)) for n0 in range(0, 95, 10)]
    out = list(batches(iter(chunks), 8, np.random.default_rng(0), buffer_rows=30))
    assert [len(b) for b in out][:-1] == [8] * (len(out) - 1)
    values = np.concatenate([b.dense[:, 0] for b in out])
    assert sorted(values.tolist()) == list(range(100)) and values.tolist() != list(range(100))
    again = np.concatenate([b.dense[:, 0] for b in batches(iter(chunks), 8, np.random.default_rng(0), 30)])
    assert np.array_equal(values, again)


def test_dense_transforms(make_spec):
    x = np.array([[0.0, 10.0], [np.e - 1, -3.0]], dtype=np.float32)
    log = DenseTransform("log")(x)
    np.testing.assert_allclose(log, [[0, np.log(11)], [1, -np.log(4)]], rtol=1e-6)
    spec = make_spec(data={"format": "synthetic", "synthetic": {"rows": 2000, "dense": 3, "sparse": 1}})
    std = DenseTransform.fit("standard", Dataset(spec, "train"))
    z = std(_read_all(Dataset(spec, "train")).dense)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
