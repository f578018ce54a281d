"""The readers (CSV with RFC 4180 quoting, Criteo TSV, Parquet through pyarrow.dataset, any fsspec
URI, compression by magic bytes), every bad input stopped naming the field and the file with its
exit code, bad-row accounting, empty splits told apart, the encodings (hash, identity,
vocabulary, bucketize) and the transforms fitted on the train split. Real files, written here."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from modelfleet.trainer.data import Chunk, Dataset, DataError, DataStats, DenseTransform, Features, batches, hash_text
from modelfleet.trainer.report import ExitCode
from modelfleet.trainer.techniques.catalogue import feature_counts, sparse_table_sizes


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


def _adultish(n: int = 3000, seed: int = 0) -> pa.Table:
    """A table like the census data: numbers, text with commas and quotes, text and 0/1 labels."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "age": rng.integers(17, 90, n),
        "work class": pa.array(rng.choice(["Private", "Self-emp, inc", 'said "hi"', "State-gov"], n)),
        "occupation_id": rng.integers(0, 12, n),
        "hours": rng.normal(40, 10, n).round(1),
        "income": pa.array(rng.choice(["<=50K", ">50K"], n)),
        "y": rng.integers(0, 2, n),
    })


def _spec(make_spec, uri, fmt="csv", event="y", **data):
    return make_spec(event=event, data={"format": fmt, "trainUri": str(uri), "denseColumns": ["age", "hours"],
                                        "sparseColumns": ["work class"], **data})


def _raises(spec, code: ExitCode, field: str, *words: str, split: str = "train") -> str:
    with pytest.raises(DataError) as err:
        _read_all(Dataset(spec, split))
    msg = str(err.value)
    assert err.value.code == code and err.value.field == field, msg
    assert msg.startswith(field + ":") and "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# --- readers --------------------------------------------------------------------------------


def test_criteo_tsv_reader_reads_every_row_and_hashes_into_buckets(make_spec, tmp_path):
    path = tmp_path / "day_0.tsv"
    path.write_text("\n".join(_criteo_rows(300)) + "\n")
    spec = make_spec(data={"format": "criteo", "trainUri": str(path), "evalFraction": 0.25})
    train, ev = _read_all(Dataset(spec, "train")), _read_all(Dataset(spec, "eval"))
    assert len(train) + len(ev) == 300 and 40 < len(ev) < 110
    assert train.dense.shape[1] == 13 and train.sparse.shape[1] == 26
    assert train.sparse.min() >= 0 and train.sparse.max() < 500
    assert set(np.unique(train.labels)) <= {0.0, 1.0}
    first = _criteo_rows(1)[0].split("\t")
    row0 = _read_all(Dataset(make_spec(data={"format": "criteo", "trainUri": str(path), "evalUri": str(path)}), "train"))
    assert row0.dense[0].tolist() == [float(v) if v else 0.0 for v in first[1:14]]  # empty = missing = 0


def test_criteo_column_mapping_and_gzip_through_fsspec(make_spec, tmp_path):
    path = tmp_path / "part.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(_criteo_rows(100)) + "\n")
    spec = make_spec(
        data={"format": "criteo", "trainUri": f"file://{path}", "denseColumns": ["I1", "I5"], "sparseColumns": ["C3"]}
    )
    c = _read_all(Dataset(spec, "train"))
    assert c.dense.shape[1] == 2 and c.sparse.shape[1] == 1


def test_compression_is_found_from_the_bytes_not_only_the_name(make_spec, tmp_path):
    rows = "\n".join(_criteo_rows(200)) + "\n"
    plain, packed = tmp_path / "plain.tsv", tmp_path / "no-extension"
    plain.write_text(rows)
    packed.write_bytes(gzip.compress(rows.encode()))
    a = _read_all(Dataset(make_spec(data={"format": "criteo", "trainUri": str(plain), "evalUri": str(plain)}), "train"))
    b = _read_all(Dataset(make_spec(data={"format": "criteo", "trainUri": str(packed), "evalUri": str(plain)}), "train"))
    assert np.array_equal(a.sparse, b.sparse) and np.array_equal(a.dense, b.dense)


def test_a_quoted_csv_as_pyarrow_writes_it_is_read(make_spec, tmp_path):
    table = _adultish(500)
    path = tmp_path / "quoted.csv"
    pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="all_valid"))  # every value quoted
    assert path.read_text().startswith('"age","work class"')
    spec = _spec(make_spec, path, evalUri=str(path))
    c = _read_all(Dataset(spec, "train"))
    assert len(c) == 500
    assert c.dense[:, 0].tolist() == table["age"].to_pylist()
    assert c.labels[:, 0].tolist() == table["y"].to_pylist()
    # "Self-emp, inc" and 'said "hi"' are one value each: four distinct ids for four values
    assert len(np.unique(c.sparse[:, 0])) == 4


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


def test_parquet_reader_from_a_directory_a_glob_and_memory_fs(make_spec, tmp_path):
    import fsspec

    table = pa.table({
        "y": pa.array([0, 1, 1, 0, None, 1], pa.int8()),
        "age": pa.array([20, 30, None, 40, 50, 60]),
        "job": pa.array(["a", "b", "a", None, "c", "b"]),
    })
    (tmp_path / "pq").mkdir()
    pq.write_table(table.slice(0, 3), tmp_path / "pq" / "part-0.parquet")
    pq.write_table(table.slice(3), tmp_path / "pq" / "part-1.parquet")
    (tmp_path / "pq" / "_SUCCESS").write_text("")  # what Spark leaves: not data
    kw = {"event": "y", "recipe": {"maxBadRowFraction": 0.5}}
    cols = {"format": "parquet", "denseColumns": ["age"], "sparseColumns": ["job"]}
    for uri in (tmp_path / "pq", tmp_path / "pq" / "part-*.parquet"):
        spec = make_spec(data={**cols, "trainUri": str(uri), "evalUri": str(uri)}, **kw)
        ds = Dataset(spec, "train")
        c = _read_all(ds)
        assert c.labels[:, 0].tolist() == [0, 1, 1, 0, 1]  # the null label row is skipped, and counted
        assert c.dense[:, 0].tolist() == [20, 30, 0, 40, 60]
        assert (ds.bad.bad, ds.bad.total) == (1, 6)
        assert str(ds.bad.first) == f"{tmp_path}/pq/part-1.parquet:2: label column 'y' is empty"
    with fsspec.open("memory://mf-test/data.parquet", "wb") as fh:
        pq.write_table(pa.concat_tables([table] * 50), fh)
    spec = make_spec(data={**cols, "trainUri": "memory://mf-test/data.parquet", "evalFraction": 0.3}, **kw)
    assert len(_read_all(Dataset(spec, "train"))) + len(_read_all(Dataset(spec, "eval"))) == 250


def test_a_value_gets_the_same_hashed_id_in_csv_and_parquet_in_any_batch(make_spec, tmp_path):
    table = _adultish(2000)
    pq.write_table(table, tmp_path / "a.parquet")
    pcsv.write_csv(table, tmp_path / "a.csv")
    ids = [_read_all(Dataset(_spec(make_spec, tmp_path / f"a.{f}", f, evalUri=str(tmp_path / f"a.{f}")), "train"))
           for f in ("parquet", "csv")]
    assert np.array_equal(ids[0].sparse, ids[1].sparse)
    one = hash_text(pa.array(["Private"]), 0)[0]
    many = hash_text(pa.array(["x", "Private", "y" * 100]).slice(1), 0)[0]
    assert one == many and hash_text(pa.array(["Private"]), 1)[0] != one  # the column salts the hash


# --- bad input: each stopped, naming the field and the file, with its exit code -----------------


def test_format_csv_on_a_parquet_file_says_so(make_spec, tmp_path):
    pq.write_table(_adultish(10), tmp_path / "data.csv")  # a Parquet file, whatever its name
    _raises(_spec(make_spec, tmp_path / "data.csv"), ExitCode.DATA_FORMAT, "spec.data.format",
            f"{tmp_path}/data.csv is a Parquet file", "set spec.data.format: parquet")


def test_format_parquet_on_a_csv_says_so(make_spec, tmp_path):
    pcsv.write_csv(_adultish(10), tmp_path / "data.parquet")
    _raises(_spec(make_spec, tmp_path / "data.parquet", "parquet"), ExitCode.DATA_FORMAT, "spec.data.format",
            f"{tmp_path}/data.parquet is not a Parquet file", "text starting '\"age\",\"work class\"")


def test_a_zero_byte_parquet_file_is_named(make_spec, tmp_path):
    (tmp_path / "pq").mkdir()
    pq.write_table(_adultish(10), tmp_path / "pq" / "part-0.parquet")
    (tmp_path / "pq" / "part-1.parquet").write_bytes(b"")
    _raises(_spec(make_spec, tmp_path / "pq", "parquet"), ExitCode.DATA_NOT_FOUND, "spec.data.trainUri",
            f"{tmp_path}/pq/part-1.parquet is empty (0 bytes)")


def test_a_file_that_is_not_utf8_text_is_named(make_spec, tmp_path):
    (tmp_path / "d.csv").write_bytes(b"age,y\n\xff\xfe\x00\x01,1\n")
    _raises(_spec(make_spec, tmp_path / "d.csv"), ExitCode.DATA_FORMAT, "spec.data.format",
            f"{tmp_path}/d.csv is binary data")


def test_a_missing_file_and_a_missing_column_are_named(make_spec, tmp_path):
    _raises(_spec(make_spec, tmp_path / "nope.csv"), ExitCode.DATA_NOT_FOUND, "spec.data.trainUri",
            "no such file or directory")
    pcsv.write_csv(_adultish(10), tmp_path / "d.csv")
    spec = _spec(make_spec, tmp_path / "d.csv", denseColumns=["age", "cost"])
    _raises(spec, ExitCode.DATA_FORMAT, "spec.data.denseColumns[1]", "column 'cost' is not in", "the file has")
    pq.write_table(_adultish(10), tmp_path / "d.parquet")
    spec = _spec(make_spec, tmp_path / "d.parquet", "parquet", event="clicked")
    _raises(spec, ExitCode.INVALID_LABELS, "spec.event", "column 'clicked' is not in")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_text_labels_fail_naming_the_column_and_the_values(make_spec, tmp_path, fmt):
    table = _adultish(3000)
    path = tmp_path / f"d.{fmt}"
    pq.write_table(table, path) if fmt == "parquet" else pcsv.write_csv(table, path)
    _raises(_spec(make_spec, path, fmt, event="income"), ExitCode.INVALID_LABELS, "spec.event",
            "label column 'income' holds text ('<=50K', '>50K'), not the numbers 0 and 1",
            "spec.data.labelValues", "first bad row: ")


def test_text_labels_are_mapped_by_label_values_and_unlisted_ones_are_bad_rows(make_spec, tmp_path):
    table = _adultish(3000)
    income = table["income"].to_pylist()
    income[7] = ">50K."  # the census test file's spelling
    table = table.set_column(4, "income", pa.array(income))
    path = tmp_path / "d.csv"
    pcsv.write_csv(table, path)
    spec = _spec(make_spec, path, event="income", evalUri=str(path),
                 labelValues={"positive": [">50K"], "negative": ["<=50K"]})
    ds = Dataset(spec, "train")
    c = _read_all(ds)
    want = [1.0 if v == ">50K" else 0.0 for i, v in enumerate(income) if i != 7]
    assert c.labels[:, 0].tolist() == want
    assert (ds.bad.bad, ds.bad.first.row) == (1, 9)  # line 9: header, then rows 0..7
    assert "'>50K.' is in neither spec.data.labelValues.positive nor .negative" in ds.bad.first.message
    spec = _spec(make_spec, path, event="income", labelValues={"positive": ["yes"], "negative": ["no"]})
    _raises(spec, ExitCode.INVALID_LABELS, "spec.data.labelValues", "holds values in neither list: '<=50K'")


def test_malformed_rows_are_counted_with_the_first_ones_file_and_line(make_spec, tmp_path):
    rows = _criteo_rows(2000)
    rows[10] = "1\tnot-a-number" + "\t" * 38  # right width, bad integer: line 11
    rows[20] = "1\t2\t3"  # wrong width: line 21
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(rows) + "\n")
    stats = DataStats()
    spec = make_spec(
        data={"format": "criteo", "trainUri": str(path), "evalFraction": 0.5}, recipe={"maxBadRowFraction": 0.01}
    )
    train, ev = Dataset(spec, "train", stats=stats), Dataset(spec, "eval", stats=stats)
    assert len(_read_all(train)) + len(_read_all(ev)) == 1998
    assert (train.bad.bad, train.bad.total) == (2, 2000)
    assert str(train.bad.first) == f"{path}:11: column 'I1': 'not-a-number' is not a number"
    (report,) = stats.reports()  # one URI, read twice: one report
    assert (report.uri, report.rows_read, report.bad_rows) == (str(path), 2000, 2)
    rows[10] = _criteo_rows(1)[0]  # now the first bad row is the short one
    path.write_text("\n".join(rows) + "\n")
    ds = Dataset(spec, "train")
    _read_all(ds)
    assert str(ds.bad.first) == f"{path}:21: 3 fields, expected 40"


def test_csv_rows_with_a_wrong_field_count_are_counted_at_their_line(make_spec, tmp_path):
    lines = ["age,hours,work class,y"] + [f"{i},40,a,{i % 2}" for i in range(1500)]
    lines[3] = '7,"40,5",b,1,extra'  # five fields, the quoted comma is not one: line 4
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = _spec(make_spec, path, evalUri=str(path))
    ds = Dataset(spec, "train")
    c = _read_all(ds)
    assert len(c) == 1499 and (ds.bad.bad, str(ds.bad.first)) == (1, f"{path}:4: 5 fields, expected 4")
    assert c.dense[3, 0] == 4.0  # the row after the bad one is the next row read


def test_too_many_malformed_rows_fail_naming_the_column(make_spec, tmp_path):
    rows = _criteo_rows(1500)
    for i in range(0, 1500, 20):  # 5 % bad labels
        rows[i] = "7" + rows[i][1:]
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(rows) + "\n")
    spec = make_spec(data={"format": "criteo", "trainUri": str(path)}, recipe={"maxBadRowFraction": 0.01})
    _raises(spec, ExitCode.INVALID_LABELS, "spec.event", f"75 of 1500 rows of {path} are malformed (5.00%)",
            "recipe.maxBadRowFraction=0.01", f"first bad row: {path}:1: label column 'click': 7 is not 0 or 1")
    rows = _criteo_rows(1500)
    for i in range(0, 1500, 20):
        rows[i] = rows[i].split("\t")[0] + "\tn/a" + "\t" + "\t".join(rows[i].split("\t")[2:])
    path.write_text("\n".join(rows) + "\n")
    _raises(spec, ExitCode.DATA_FORMAT, "spec.data.denseColumns", "column 'I1': 'n/a' is not a number")


def test_empty_train_and_empty_eval_are_told_apart_before_training(make_spec, tmp_path):
    good, header_only = tmp_path / "good.csv", tmp_path / "empty.csv"
    pcsv.write_csv(_adultish(100), good)
    header_only.write_text('"age","hours","work class","y"\n')
    spec = _spec(make_spec, good, evalUri=str(header_only))
    with pytest.raises(DataError) as err:
        Dataset(spec, "eval").require_rows()
    assert (err.value.code, err.value.field) == (ExitCode.DATA_NOT_FOUND, "spec.data.evalUri")
    assert str(err.value) == f"spec.data.evalUri: {str(header_only)!r} holds no rows"
    assert "set data.evalUri" not in str(err.value)
    Dataset(spec, "train").require_rows()
    spec = _spec(make_spec, header_only, evalUri=str(good))
    with pytest.raises(DataError, match=r"^spec.data.trainUri: .* holds no rows$") as err:
        Dataset(spec, "train").require_rows()
    # no evalUri, and a split too small to hold anything out
    tiny = tmp_path / "tiny.csv"
    pcsv.write_csv(_adultish(1), tiny)
    spec = _spec(make_spec, tiny, evalFraction=0.01)
    with pytest.raises(DataError, match="spec.data.evalFraction: the held-out split is empty .1 rows") as err:
        Dataset(spec, "eval").require_rows()
    assert err.value.code == ExitCode.DATA_NOT_FOUND


# --- encodings and fitted features ---------------------------------------------------------------


def test_identity_ids_pass_through_with_one_out_of_range_id(make_spec, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,age,hours,work class,occ\n" + "".join(
        f"{i % 2},1,2,a,{v}\n" for i, v in enumerate(["0", "3", "11", "12", "-1", "", "2.0", "7.5"])))
    spec = _spec(make_spec, path, evalUri=str(path), sparseColumns=["work class", "occ"],
                 encodings=[{"column": "occ", "kind": "identity", "cardinality": 12}])
    assert sparse_table_sizes(spec) == [500, 13]
    c = _read_all(Dataset(spec, "train"))
    assert c.sparse[:, 1].tolist() == [0, 3, 11, 12, 12, 12, 2, 12]  # out of range, missing, 7.5: the extra id
    path.write_text("y,age,hours,work class,occ\n" + "".join(f"{i % 2},1,2,a,x{i}\n" for i in range(1200)))
    _raises(spec, ExitCode.DATA_FORMAT, "spec.data.sparseColumns[1]", "'x0' is not an integer id (kind identity)")


def test_vocabulary_keeps_the_most_frequent_training_values(make_spec, tmp_path):
    values = ["de"] * 50 + ["fr"] * 30 + ["it"] * 20 + ["es"] * 2 + ["pt"]
    rng = np.random.default_rng(1)
    rng.shuffle(values)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"y": [i % 2 for i in range(len(values))], "age": [1] * len(values), "hours": [2.0] * len(values),
                             "country": values}), path)
    enc = {"column": "country", "kind": "vocabulary", "maxSize": 3, "minCount": 3}
    spec = _spec(make_spec, path, "parquet", evalUri=str(path), sparseColumns=["country"], encodings=[enc])
    assert sparse_table_sizes(spec) == [4]
    features = Features.fit(spec)
    assert features.vocab[0].to_pylist() == ["de", "fr", "it"]  # by count; es (2) is under minCount
    c = _read_all(Dataset(spec, "eval", features=features))
    ids = dict(zip(values, c.sparse[:, 0].tolist(), strict=False))
    assert ids == {"de": 0, "fr": 1, "it": 2, "es": 3, "pt": 3}
    assert Features.from_state(spec, features.state()).vocab[0].to_pylist() == ["de", "fr", "it"]


def test_bucketized_numbers_are_extra_sparse_features_fitted_on_the_train_split(make_spec, tmp_path):
    n = 4000
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"y": [i % 2 for i in range(n)], "age": np.arange(n) % 100, "hours": np.arange(n) / 10.0,
                             "work class": ["a"] * n}), path)
    spec = _spec(make_spec, path, "parquet", bucketize=[{"column": "age", "buckets": 4},
                                                         {"column": "hours", "boundaries": [10, 100]}])
    assert feature_counts(spec) == (2, 3) and sparse_table_sizes(spec) == [500, 4, 3]
    ds = Dataset(spec, "train")
    c = _read_all(ds)
    np.testing.assert_allclose(ds.features.boundaries[0], [25, 50, 75], atol=1.5)
    assert np.bincount(c.sparse[:, 1]).tolist() == pytest.approx([len(c) / 4] * 4, rel=0.1)  # equal frequency
    hours = c.dense[:, 1]
    assert np.array_equal(c.sparse[:, 2], (hours >= 10).astype(int) + (hours >= 100))
    assert c.dense[:, 0].max() == 99  # age is still a dense feature too


def test_standard_transform_fits_a_sample_of_the_whole_split_not_its_first_rows(make_spec, tmp_path):
    n = 200_000
    path = tmp_path / "sorted.parquet"
    x = np.arange(n, dtype=np.float64)  # sorted: the first 65,536 rows have a third of the mean
    pq.write_table(pa.table({"y": np.arange(n) % 2, "age": x, "hours": x[::-1].copy(), "work class": ["a"] * n}),
                   path, row_group_size=50_000)
    spec = _spec(make_spec, path, "parquet", denseTransform="standard", evalFraction=0.1)
    t = Features.fit(spec).dense
    assert t.mean[0] == pytest.approx(n / 2, rel=0.02) and t.std[0] == pytest.approx(n / np.sqrt(12), rel=0.02)
    again = Features.fit(spec).dense
    assert np.array_equal(t.mean, again.mean)  # seeded: the same sample every time
    other = Features.fit(make_spec(event="y", recipe={"seed": 9}, data=spec.data.wire())).dense
    assert not np.array_equal(t.mean, other.mean)
    z = t(_read_all(Dataset(spec, "train", features=Features.fit(spec))).dense)
    assert abs(z.mean(0)).max() < 0.02 and abs(z.std(0) - 1).max() < 0.02


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
    assert DenseTransform.from_state(std.state()).mean.tolist() == std.mean.tolist()
