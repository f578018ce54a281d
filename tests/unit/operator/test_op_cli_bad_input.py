"""Bad input through the CLI: each is stopped with the file, the object and the field named, the
documented exit status (docs/cli.md), no traceback (unless --debug), and nothing lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelfleet.cli import main

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart"


def quickstart(dest: Path) -> Path:
    shutil.copytree(QUICKSTART, dest)
    return dest


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_on_an_unknown_technique_names_it_and_exits_2(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    (qs / "template.yaml").write_text((qs / "template.yaml").read_text().replace("name: lowrank-cross", "name: adult-husband"))
    assert main(["plan", "-f", str(qs), "--state", str(tmp_path / "none")]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "KeyError" not in err
    assert "template.yaml: ModelTemplate adult-ctr: spec.techniques[0].name: unknown technique 'adult-husband'" in err
    assert "known techniques:" in err and "lowrank-cross" in err
    # the plan still shows what would happen: nothing, every instance waits for the template's fix
    assert "template adult-ctr: revision invalid: InvalidTechnique" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  adult-")]
    assert [r[1] for r in rows] == ["invalid"] * 4 and "estimated cost: 0 training run(s)" in out
    assert all("waits for ModelTemplate adult-ctr to be fixed (InvalidTechnique)" in line for line in out.splitlines() if line.startswith("  adult-"))


def test_plan_on_bad_technique_params_names_the_param(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    (qs / "template.yaml").write_text((qs / "template.yaml").read_text().replace("rank: 8", "rank: -3"))
    assert main(["plan", "-f", str(qs), "--state", str(tmp_path / "none"), "-o", "json"]) == 2
    out, err = capsys.readouterr()
    assert "template.yaml: ModelTemplate adult-ctr: spec.techniques[0].params.rank" in err
    report = json.loads(out)
    assert report["templates"][0]["problem"]["reason"] == "InvalidTechnique"


def test_plan_finds_missing_data_before_queueing_and_exits_2(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    (qs / "data" / "wife.parquet").unlink()
    assert main(["plan", "-f", str(qs), "--state", str(tmp_path / "none"), "-o", "json"]) == 2
    out, err = capsys.readouterr()
    rows = {r["instance"]: r for r in json.loads(out)["templates"][0]["instances"]}
    assert rows["adult-wife"]["state"] == "Invalid" and rows["adult-wife"]["reason"] == "DataNotFound"
    assert rows["adult-wife"]["dataProblems"][0]["field"] == "spec.data.trainUri"
    assert {rows[n]["state"] for n in rows if n != "adult-wife"} <= {"Training", "Waiting"}
    assert "instance-wife.yaml: ModelInstance adult-wife: DataNotFound: spec.data.trainUri: 'data/wife.parquet'" in err


def test_plan_on_an_unknown_uri_scheme_names_the_field(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    wife = qs / "instance-wife.yaml"
    wife.write_text(wife.read_text().replace("trainUri: data/wife.parquet", "trainUri: nosuchscheme://bucket/wife.parquet"))
    assert main(["plan", "-f", str(qs), "--state", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "ModelInstance adult-wife: DataNotFound: spec.data.trainUri:" in err and "nosuchscheme" in err


def test_a_folder_copied_to_two_places_has_the_same_revisions(tmp_path, capsys):
    revisions = []
    for where in ("a/qs", "b/deeper/qs"):
        qs = quickstart(tmp_path / where)
        assert main(["plan", "-f", str(qs), "--state", str(tmp_path / "none"), "-o", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        revisions.append({r["instance"]: r["revision"] for r in report["templates"][0]["instances"]})
    assert revisions[0] == revisions[1] and len(set(revisions[0].values())) == 4


def test_local_refuses_an_invalid_manifest_before_touching_the_state(tmp_path, capsys):
    state = tmp_path / "state"
    (state / "state" / "ModelTemplate").mkdir(parents=True)
    (state / "state" / "ModelTemplate" / "other.json").write_text('{"metadata": {"name": "other"}}')
    before = snapshot(state)
    qs = quickstart(tmp_path / "qs")
    (qs / "template.yaml").write_text((qs / "template.yaml").read_text().replace("name: lowrank-cross", "name: adult-husband"))
    assert main(["local", str(qs), "--state", str(state)]) == 2
    out, err = capsys.readouterr()
    assert "modelfleet local: template.yaml: ModelTemplate adult-ctr: spec.techniques[0].name: unknown technique" in err
    assert "INSTANCE" not in out and "revision None" not in out  # no empty table
    assert snapshot(state) == before


def test_local_names_an_instance_of_a_template_that_is_not_in_the_folder(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    (qs / "template.yaml").unlink()
    assert main(["local", str(qs), "--state", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert "4 invalid manifests" in err
    assert "instance-wife.yaml: ModelInstance adult-wife: spec.templateRef.name: ModelTemplate 'adult-ctr' is not in" in err
    assert not (tmp_path / "state").exists()


def test_a_yaml_file_that_is_not_utf8_is_named_with_the_byte(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    wife = qs / "instance-wife.yaml"
    wife.write_bytes(wife.read_bytes().replace(b"predict", b"pr\xe9dict"))  # Latin-1 in a comment
    for command in (["plan", "-f", str(qs)], ["local", str(qs), "--state", str(tmp_path / "s")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "instance-wife.yaml: not UTF-8 text: byte 0xe9 at position 41" in err and "save the file as UTF-8" in err


def test_numeric_column_names_get_a_hint_to_quote_them(tmp_path, capsys):
    qs = quickstart(tmp_path / "qs")
    wife = qs / "instance-wife.yaml"
    wife.write_text(wife.read_text().replace("denseColumns: [age, fnlwgt,", "denseColumns: [1, fnlwgt,"))
    assert main(["plan", "-f", str(qs)]) == 2
    err = capsys.readouterr().err
    assert "instance-wife.yaml: ModelInstance adult-wife: spec.data.denseColumns[0]: Input should be a valid string" in err
    assert "got 1, a number" in err and "quote it" in err


def test_techniques_with_a_missing_spec_file_exits_2(tmp_path, capsys):
    assert main(["techniques", "--spec", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip() == f"modelfleet techniques: --spec {tmp_path / 'missing.json'}: no such file"
    (tmp_path / "s.json").write_text('{"instance": "x", "revision": "r", "event": "click", "architecture": {}, '
                                     '"data": {"format": "csv", "trainUri": "x.csv", "denseColumns": [7]}, "outputUri": "o"}')
    assert main(["techniques", "--spec", str(tmp_path / "s.json")]) == 2
    assert "data.denseColumns[0]: Input should be a valid string (got 7, a number" in capsys.readouterr().err


def test_train_with_a_spec_that_is_not_yaml_exits_2(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("a: [\n")
    assert main(["train", "--spec", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelfleet train: error: --spec: cannot read the spec:") and "Traceback" not in err


def test_debug_shows_the_traceback_of_an_expected_failure(tmp_path, capsys):
    assert main(["--debug", "techniques", "--spec", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileNotFoundError" in err and err.rstrip().endswith("no such file")
    assert main(["techniques", "--debug", "--spec", str(tmp_path / "missing.json")]) == 2  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_shows_its_traceback_and_exits_1(monkeypatch, capsys):
    # a bug, not bad input: the traceback is what there is to go on (also in a job's logs)
    from modelfleet.trainer.techniques import cli as techniques_cli

    def broken(args):
        raise RuntimeError("the catalogue is broken")

    monkeypatch.setattr(techniques_cli, "run", broken)
    assert main(["techniques"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in broken" in err
    assert err.splitlines()[-1] == "modelfleet techniques: unexpected error: RuntimeError: the catalogue is broken"


@pytest.mark.parametrize("argv", [["local", "/nonexistent/folder"], ["plan", "-f", "/nonexistent/folder"]])
def test_a_folder_that_does_not_exist(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith("/nonexistent/folder: not a directory")


@pytest.mark.parametrize(
    ("old", "new", "reason", "field"),
    [
        ("event: over_50k", "event: over_60k", "InvalidLabels", "spec.event"),  # no such label column
        ("format: parquet", "format: csv", "DataFormatError", "spec.data.format"),  # csv on a Parquet file
    ],
)
def test_plan_stops_bad_columns_and_formats_before_queueing(tmp_path, capsys, old, new, reason, field):
    qs = quickstart(tmp_path / "qs")
    wife = qs / "instance-wife.yaml"
    wife.write_text(wife.read_text().replace(old, new))
    assert main(["plan", "-f", str(qs), "--state", str(tmp_path / "none"), "-o", "json"]) == 2
    out, err = capsys.readouterr()
    row = next(r for r in json.loads(out)["templates"][0]["instances"] if r["instance"] == "adult-wife")
    assert row["state"] == "Invalid" and row["reason"] == reason
    assert f"instance-wife.yaml: ModelInstance adult-wife: {reason}: " in err and field in err
