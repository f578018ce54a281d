"""The noise-aware gate on real data, end to end with `modelfleet local` (TorchX local_cwd).

The quickstart's smallest Adult slice (`adult-wife`, 481 held-out examples) is trained and
promoted; then the template's only edit is `recipe.seed` 7 -> 8 -- a null edit. The new run is
scored against the promoted model on the same eval examples, and the gate holds it back: the
paired interval of the NE change is wider than the 0.2 % tolerance. The instance says so
(GateFailed with the interval, GateUnderpowered with the numbers) and keeps its model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from test_local_cli import QUICKSTART, instance, local, runs

pytestmark = pytest.mark.slow


def _cond(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_a_seed_only_edit_is_held_back_by_the_gate(tmp_path):
    folder = tmp_path / "qs"
    (folder / "data").mkdir(parents=True)
    shutil.copy(QUICKSTART / "data" / "wife.parquet", folder / "data" / "wife.parquet")
    shutil.copy(QUICKSTART / "instance-wife.yaml", folder / "instance-wife.yaml")
    template = yaml.safe_load((QUICKSTART / "template.yaml").read_text())
    assert template["spec"]["recipe"]["seed"] == 7 and template["spec"]["rollout"]["gate"]["tolerance"] == 0.002
    (folder / "template.yaml").write_text(yaml.safe_dump(template))
    state = tmp_path / "state"

    first = local(folder, state)
    assert first.returncode == 0, first.stdout + first.stderr
    base = instance(state, "adult-wife")["status"]
    assert base["promotedRevision"] == base["targetRevision"] and "comparison" not in base
    assert (Path(base["modelUri"]) / "predictions.parquet").exists()
    assert base["metrics"]["neLow"] < base["metrics"]["ne"] < base["metrics"]["neHigh"]

    template["spec"]["recipe"]["seed"] = 8  # the null edit: nothing about the model changes
    (folder / "template.yaml").write_text(yaml.safe_dump(template))
    second = local(folder, state)
    assert second.returncode == 1, second.stdout + second.stderr  # a gate failure
    assert len(runs(state)) == 2
    inst = instance(state, "adult-wife")
    status = inst["status"]
    assert status["promotedRevision"] == base["promotedRevision"]  # the promoted model is kept
    assert status["modelUri"] == base["modelUri"]
    c = status["comparison"]
    assert c["paired"] and c["baselineUri"] == base["modelUri"]
    assert c["examples"] == base["metrics"]["examples"] and c["baselineNe"] == pytest.approx(base["metrics"]["ne"])
    assert c["ne"] != c["baselineNe"]  # the seed moved NE ...
    assert c["relativeNeLow"] < 0.002 < c["relativeNeHigh"]  # ... by less than the noise
    ready = _cond(inst, "Ready")
    assert ready["reason"] == "GateFailed" and "interval" in ready["message"]
    weak = _cond(inst, "GateUnderpowered")
    assert weak["status"] == "True" and f"{c['examples']} examples" in weak["message"]
    assert c["halfWidth"] > 0.002
