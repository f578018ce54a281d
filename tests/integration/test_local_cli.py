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


def local(folder: Path, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, "-P", "-m", "modelfleet", "local", str(folder), "--state", str(state), "--poll", "0.5"],
        cwd=folder,
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
        # relative data URIs were resolved against the manifests' folder
        assert instance(state, name)["spec"]["data"]["trainUri"].startswith(str(folder))
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
