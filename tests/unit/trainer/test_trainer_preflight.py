"""The data pre-flight: what plan, local, the operator and the trainer's launcher check before a run
is queued. Real files written here; each problem names the ModelInstance field and its reason, and
the check reads footers and headers only (torch-free)."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from modelfleet.trainer.preflight import check_data, check_spec_data, supported_schemes
from modelfleet.trainer.spec import DataSpec


def _table(n: int = 50) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({
        "age": rng.integers(17, 90, n),
        "hours": rng.normal(40, 5, n),
        "job": pa.array(rng.choice(["a", "b, c"], n)),
        "income": pa.array(rng.choice(["<=50K", ">50K"], n)),
        "y": rng.integers(0, 2, n),
    })


def _data(uri, fmt="csv", **kw) -> DataSpec:
    return DataSpec.model_validate({"format": fmt, "trainUri": str(uri), "denseColumns": ["age", "hours"],
                                    "sparseColumns": ["job"], **kw})


def _one(check, reason: str, field: str, *words: str) -> str:
    assert len(check.problems) == 1, check.problems
    (p,) = check.problems
    assert (p.reason, p.field) == (reason, field), p
    assert p.message.startswith(field + ": ") and "\n" not in p.message, p.message
    for w in words:
        assert w in p.message, (w, p.message)
    return p.message


def test_good_data_passes_and_parquet_footers_give_row_counts(tmp_path):
    pq.write_table(_table(30), tmp_path / "a.parquet")
    pq.write_table(_table(12), tmp_path / "b.parquet")
    pcsv.write_csv(_table(), tmp_path / "d.csv", pcsv.WriteOptions(quoting_style="all_valid"))
    check = check_data(_data(tmp_path / "*.parquet", "parquet", evalUri=str(tmp_path / "b.parquet")), ["y"])
    assert (check.problems, check.train_rows, check.eval_rows) == ([], 42, 12)
    check = check_data(_data(tmp_path / "d.csv"), ["y"])
    assert (check.problems, check.train_rows) == ([], None)  # a CSV's rows are not known cheaply
    assert check_data(DataSpec(format="synthetic"), ["y"]).problems == []


def test_relative_uris_are_read_against_the_manifests_folder(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(_table(), tmp_path / "data" / "a.parquet")
    assert check_data(_data("data/a.parquet", "parquet"), ["y"], base_dir=str(tmp_path)).problems == []
    _one(check_data(_data("data/a.parquet", "parquet"), ["y"], base_dir=str(tmp_path / "elsewhere")),
         "DataNotFound", "spec.data.trainUri", "'data/a.parquet': no such file or directory")


def test_an_unsupported_scheme_lists_the_supported_ones():
    msg = _one(check_data(_data("gs://bucket/train.csv"), ["y"]), "DataNotFound", "spec.data.trainUri",
               "scheme 'gs' is not supported here", "supported: ")
    schemes = supported_schemes()
    assert {"file", "memory"} <= set(schemes) and "gs" not in schemes and "gcs" not in schemes
    assert msg.endswith(", ".join(schemes))
    _one(check_data(_data("nosuch://x/train.csv"), ["y"]), "DataNotFound", "spec.data.trainUri",
         "scheme 'nosuch' is not supported here")


def test_missing_empty_and_header_only_files_name_the_uri_field(tmp_path):
    pcsv.write_csv(_table(), tmp_path / "d.csv")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "hdr.csv").write_text('"age","hours","job","y"\n')
    (tmp_path / "zero.parquet").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    good = str(tmp_path / "d.csv")
    _one(check_data(_data(tmp_path / "nope.csv"), ["y"]), "DataNotFound", "spec.data.trainUri", "no such file")
    _one(check_data(_data(good, evalUri=str(tmp_path / "empty.csv")), ["y"]), "DataNotFound", "spec.data.evalUri",
         f"{tmp_path}/empty.csv is empty (0 bytes)")
    _one(check_data(_data(good, evalUri=str(tmp_path / "hdr.csv")), ["y"]), "DataNotFound", "spec.data.evalUri",
         f"{tmp_path}/hdr.csv holds no rows (only a header line)")
    _one(check_data(_data(tmp_path / "zero.parquet", "parquet"), ["y"]), "DataNotFound", "spec.data.trainUri",
         "zero.parquet is empty (0 bytes)")
    _one(check_data(_data(tmp_path / "dir", "parquet"), ["y"]), "DataNotFound", "spec.data.trainUri",
         "is an empty directory")
    pq.write_table(_table(0), tmp_path / "norows.parquet")
    _one(check_data(_data(tmp_path / "norows.parquet", "parquet"), ["y"]), "DataNotFound", "spec.data.trainUri",
         "holds no rows")


def test_format_mismatch_is_found_from_the_bytes(tmp_path):
    pq.write_table(_table(), tmp_path / "data.csv")
    pcsv.write_csv(_table(), tmp_path / "data.parquet")
    (tmp_path / "gz.parquet").write_bytes(gzip.compress(b"age,y\n1,0\n"))
    _one(check_data(_data(tmp_path / "data.csv"), ["y"]), "DataFormatError", "spec.data.format",
         "'csv', but", "data.csv is a Parquet file (set spec.data.format: parquet)")
    _one(check_data(_data(tmp_path / "data.parquet", "parquet"), ["y"]), "DataFormatError", "spec.data.format",
         "'parquet', but", "data.parquet is not a Parquet file (no PAR1 magic bytes): it is text starting '\"age\",")
    _one(check_data(_data(tmp_path / "gz.parquet", "parquet"), ["y"]), "DataFormatError", "spec.data.format",
         "it is gzip-compressed text")
    _one(check_data(_data(tmp_path / "data.csv", "criteo"), ["y"]), "DataFormatError", "spec.data.format",
         "'criteo', but")


def test_columns_are_checked_against_the_footer_and_the_header(tmp_path):
    pq.write_table(_table(), tmp_path / "d.parquet")
    pcsv.write_csv(_table(), tmp_path / "d.csv", pcsv.WriteOptions(quoting_style="all_valid"))
    for uri, fmt in ((tmp_path / "d.parquet", "parquet"), (tmp_path / "d.csv", "csv")):
        _one(check_data(_data(uri, fmt, denseColumns=["age", "cost"]), ["y"]), "DataFormatError",
             "spec.data.denseColumns[1]", "column 'cost' is not in", "the file has: ['age', 'hours', 'job', 'income', 'y']")
        _one(check_data(_data(uri, fmt, bucketize=[{"column": "wage", "buckets": 4}]), ["y"]), "DataFormatError",
             "spec.data.bucketize[0].column", "column 'wage' is not in")
        _one(check_data(_data(uri, fmt), ["clicked"]), "InvalidLabels", "spec.event", "column 'clicked' is not in")
        _one(check_data(_data(uri, fmt), ["y", "buy"], label_fields=["spec.event", "spec.architecture.tasks[1].labelColumn"]),
             "InvalidLabels", "spec.architecture.tasks[1].labelColumn", "column 'buy'")


def test_a_wrong_delimiter_is_hinted_at(tmp_path):
    (tmp_path / "d.tsv").write_text("age\thours\tjob\ty\n1\t2\ta\t0\n")
    _one(check_data(_data(tmp_path / "d.tsv"), ["y"]), "DataFormatError", "spec.data.delimiter",
         "the header of", "is one column ('age\\thours\\tjob\\ty'): its fields are not separated by ','")
    assert check_data(_data(tmp_path / "d.tsv", delimiter="\t"), ["y"]).problems == []


def test_criteo_files_are_checked_against_the_fixed_layout(tmp_path):
    row = "\t".join(["1", *["3"] * 13, *["ab"] * 26])
    (tmp_path / "day.tsv").write_text(row + "\n" + row + "\n")
    (tmp_path / "short.tsv").write_text("1\t2\t3\n")
    criteo = {"format": "criteo", "trainUri": str(tmp_path / "day.tsv")}
    assert check_data(DataSpec.model_validate(criteo), ["click"]).problems == []
    _one(check_data(DataSpec.model_validate({**criteo, "trainUri": str(tmp_path / "short.tsv")}), ["click"]),
         "DataFormatError", "spec.data.format", "the first line of", "has 3")
    _one(check_data(DataSpec.model_validate({**criteo, "denseColumns": ["I1", "I14"]}), ["click"]),
         "DataFormatError", "spec.data.denseColumns[1]", "'I14' is not a criteo column")


def test_text_labels_are_named_with_the_values_seen(tmp_path):
    pq.write_table(_table(), tmp_path / "d.parquet")
    pcsv.write_csv(_table(), tmp_path / "d.csv")
    for uri, fmt in ((tmp_path / "d.parquet", "parquet"), (tmp_path / "d.csv", "csv")):
        _one(check_data(_data(uri, fmt), ["income"]), "InvalidLabels", "spec.event",
             "label column 'income'", "holds text ('<=50K', '>50K'), not the numbers 0 and 1",
             "spec.data.labelValues")
        mapped = _data(uri, fmt, labelValues={"positive": [">50K"], "negative": ["<=50K"]})
        assert check_data(mapped, ["income"]).problems == []
        if fmt == "csv":  # the first rows' values are at hand: none of them listed is a mistake
            wrong = _data(uri, fmt, labelValues={"positive": [">50K."], "negative": ["<=50K."]})
            _one(check_data(wrong, ["income"]), "InvalidLabels", "spec.data.labelValues",
                 "('<=50K', '>50K') is listed in positive ['>50K.'] or negative ['<=50K.']")


def test_a_text_column_named_as_dense_is_named(tmp_path):
    pcsv.write_csv(_table(), tmp_path / "d.csv")
    _one(check_data(_data(tmp_path / "d.csv", denseColumns=["age", "job"]), ["y"]), "DataFormatError",
         "spec.data.denseColumns[1]", "column 'job'", "holds text ('a', 'b, c'), not numbers",
         "spec.data.sparseColumns")


def test_it_reads_the_start_of_a_file_only(tmp_path):
    # A CSV whose bytes turn invalid after the first block: the pre-flight passes (it never reads
    # that far), while the trainer's reader, which reads everything, names the problem.
    good = "age,hours,job,y\n" + "".join(f"{i},1.5,a,{i % 2}\n" for i in range(300_000))
    path = tmp_path / "big.csv"
    path.write_bytes(good.encode() + b"1,2,\xff\xfe,0\n")
    assert path.stat().st_size > 3 << 20
    assert check_data(_data(path), ["y"]).problems == []


def test_check_spec_data_names_each_tasks_label_field(tmp_path):
    from modelfleet.trainer.spec import TrainingSpec

    pq.write_table(_table(), tmp_path / "d.parquet")
    spec = TrainingSpec.model_validate({
        "instance": "i", "revision": "r", "event": "y", "outputUri": str(tmp_path / "out"),
        "architecture": {"tasks": [{"name": "click"}, {"name": "buy", "labelColumn": "bought"}]},
        "data": {"format": "parquet", "trainUri": str(tmp_path / "d.parquet"), "denseColumns": ["age"]},
    })
    _one(check_spec_data(spec), "InvalidLabels", "spec.architecture.tasks[1].labelColumn", "column 'bought'")


def test_the_preflight_imports_no_torch():
    code = "import sys, modelfleet.trainer.preflight as p; p.supported_schemes(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_preflight_and_reader_agree_on_the_message(make_spec, tmp_path, fmt):
    from modelfleet.trainer.data import Dataset, DataError

    pq.write_table(_table(), tmp_path / "d.csv") if fmt == "csv" else pcsv.write_csv(_table(), tmp_path / "d.csv")
    spec = make_spec(event="y", data={"format": fmt, "trainUri": str(tmp_path / "d.csv"), "denseColumns": ["age"]})
    (problem,) = check_spec_data(spec).problems
    with pytest.raises(DataError) as err:
        list(Dataset(spec, "train").chunks())
    assert (err.value.field, err.value.message) == (problem.field, problem.message)
