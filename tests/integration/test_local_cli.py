"""`modelfleet local` for real: a tiny copy of the quickstart trains with TorchX local_cwd.

It must train each instance once, promote it, train nothing when nothing changed, and retrain only
the instance whose spec changed. Tiny: two of the smallest Adult slices, 40 steps each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"

pytestmark = pytest.mark.slow


def tiny_quickstart(dest: Path) -> Path:
    dest.mkdir()
    shutil.copytree(QUICKSTART / "data", dest / "data")
    template = (QUICKSTART / "template.yaml").read_text()
    template = template.replace("    epochs: 3\n", "    steps: 40\n").replace("      maxNe: 0.95\n", "")
    assert "steps: 40" in template
    (dest / "template.yaml").write_text(template)
    for name in ("instance-wife.yaml", "instance-unmarried.yaml"):
        shutil.copy(QUICKSTART / name, dest / name)
    return dest


def local(folder: Path, state: Path | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`modelfleet local FOLDER`; with `state` None, the default `./.modelfleet` of `cwd`."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    where = ["--state", str(state)] if state is not None else []
    return subprocess.run(
        [sys.executable, "-P", "-m", "modelfleet", "local", str(folder), *where, "--poll", "0.5", *args],
        cwd=cwd or folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def runs(state: Path) -> list[str]:
    return sorted(p.stem for p in (state / "state" / "TrainingRun").glob("*.json"))


def instance(state: Path, name: str) -> dict:
    return json.loads((state / "state" / "ModelInstance" / f"{name}.json").read_text())


def test_local_trains_promotes_and_retrains_only_what_changed(tmp_path):
    folder = tiny_quickstart(tmp_path / "qs")
    state = tmp_path / "state"

    first = local(folder, state)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(runs(state)) == 2
    for name in ("adult-wife", "adult-unmarried"):
        status = instance(state, name)["status"]
        assert status["promotedRevision"] == status["targetRevision"]
        assert 0 < status["metrics"]["ne"] < 1.5
        assert (Path(status["modelUri"]) / "metrics.json").exists()
        # relative data URIs are kept as written (revisions do not depend on where the folder
        # lies) and read from the manifests' folder (the run's resolved spec)
        assert instance(state, name)["spec"]["data"]["trainUri"].startswith("data/")
        run = json.loads((state / "state" / "TrainingRun" / f"{name}-{status['promotedRevision']}.json").read_text())
        assert run["spec"]["training"]["data"]["trainUri"].startswith(str(folder / "data"))
    assert "promoted" in first.stdout and "adult-wife" in first.stdout
    # live progress (plain lines: no terminal here), the promoted model's location in the final table
    assert "40/40 100%" in first.stdout
    header = next(line for line in first.stdout.splitlines() if line.startswith("INSTANCE") and "MODEL" in line)
    assert header.split()[:6] == ["INSTANCE", "NE", "AUC", "CALIBRATION", "RESULT", "MODEL"]
    wife = instance(state, "adult-wife")["status"]
    assert any(line.startswith("adult-wife ") and wife["modelUri"] in line for line in first.stdout.splitlines())
    for run in runs(state):
        progress = json.loads((state / "state" / "TrainingRun" / f"{run}.json").read_text())["status"]["progress"]
        assert (progress["step"], progress["totalSteps"], progress["progressPercentage"]) == (40, 40, 100)

    # the promoted model scores rows: the instance's own data, labels ignored
    scored = subprocess.run(
        [sys.executable, "-P", "-m", "modelfleet", "predict", "--model", wife["modelUri"], "--data",
         str(folder / "data" / "wife.parquet"), "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    predictions = [r["prediction"] for r in json.loads(scored.stdout)]
    import pyarrow.parquet as pq

    assert len(predictions) == pq.read_metadata(folder / "data" / "wife.parquet").num_rows
    assert all(0 < p < 1 for p in predictions) and len(set(predictions)) > 10
    # a reader that stops early (`| head`) ends it quietly; --keep makes the output outgrow a pipe's buffer
    keep = "age,workclass,education,marital_status,occupation,native_country"
    head = subprocess.run(
        f"'{sys.executable}' -P -m modelfleet predict --model '{wife['modelUri']}' --data '{folder / 'data' / 'wife.parquet'}' --keep {keep} | head -2",
        shell=True, capture_output=True, text=True, timeout=300,
    )
    assert head.stdout.splitlines()[0].replace('"', "").split(",") == [*keep.split(","), "prediction"]
    assert len(head.stdout.splitlines()) == 2
    assert head.stderr == ""

    again = local(folder, state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(runs(state)) == 2  # nothing changed: nothing trained

    wife = folder / "instance-wife.yaml"
    doc = yaml.safe_load(wife.read_text())
    doc["spec"]["overrides"] = {"recipe.learningRate": 0.004}  # allow-listed by the template
    wife.write_text(yaml.safe_dump(doc))
    before = instance(state, "adult-unmarried")["status"]["promotedRevision"]
    third = local(folder, state)
    assert third.returncode in (0, 1), third.stdout + third.stderr  # the gate may keep the old model
    new = [r for r in runs(state) if r.startswith("adult-wife-")]
    assert len(new) == 2 and len(runs(state)) == 3  # only the edited instance retrained
    assert instance(state, "adult-unmarried")["status"]["promotedRevision"] == before
    if third.returncode == 1:
        assert "GateFailed" in third.stderr


def test_local_rejects_a_bad_manifest_naming_the_field(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "t.yaml").write_text(
        "apiVersion: modelfleet.dev/v1alpha1\nkind: ModelTemplate\nmetadata: {name: t}\n"
        "spec: {recipe: {learningRate: -1}}\n"
    )
    out = local(folder, tmp_path / "state")
    assert out.returncode == 2
    assert "t.yaml" in out.stderr and "recipe.learningRate" in out.stderr


def snapshot(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted((state / "state").rglob("*.json"))}


def test_bad_data_stops_one_instance_and_another_folder_loses_nothing(tmp_path):
    """Missing data is found before queueing (the others still train, exit 2); a second folder on
    the default state is refused (exit 3) and the first folder's objects and runs are all still
    there; the same folder copied elsewhere takes the state over with --prune and retrains nothing."""
    work = tmp_path / "work"
    work.mkdir()
    folder = tiny_quickstart(work / "qs")
    (folder / "data" / "unmarried.parquet").unlink()
    state = work / ".modelfleet"

    first = local(folder, None, cwd=work)
    assert first.returncode == 2, first.stdout + first.stderr
    assert runs(state) == [r for r in runs(state) if r.startswith("adult-wife-")] and len(runs(state)) == 1
    wife = instance(state, "adult-wife")["status"]
    assert wife["promotedRevision"] == wife["targetRevision"]
    bad = instance(state, "adult-unmarried")
    ready = next(c for c in bad["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "DataNotFound"
    assert ready["message"].startswith("spec.data.trainUri: 'data/unmarried.parquet'")
    events = [json.loads(line) for line in (state / "state" / "events.jsonl").read_text().splitlines()]
    assert [(e["type"], e["reason"]) for e in events if e["name"] == "adult-unmarried"] == [("Warning", "DataNotFound")]
    assert "instance-unmarried.yaml: ModelInstance adult-unmarried: DataNotFound: spec.data.trainUri" in first.stderr
    assert "invalid" in first.stdout and "Traceback" not in first.stderr

    # another folder, the same default state: refused, nothing lost
    other = work / "other"
    shutil.copytree(folder, other)
    before = snapshot(state)
    refused = local(other, None, cwd=work)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert str(folder) in refused.stderr and str(other) in refused.stderr and "--prune" in refused.stderr
    assert snapshot(state) == before

    # the same manifests elsewhere (a moved checkout): --prune takes the state over; the revisions
    # are the same, so nothing retrains and the promoted model (the gate's baseline) is kept
    moved = local(other, None, "--prune", cwd=work)
    assert moved.returncode == 2, moved.stdout + moved.stderr  # its unmarried data is still missing
    assert len(runs(state)) == 1
    assert instance(state, "adult-wife")["status"]["promotedRevision"] == wife["promotedRevision"]
