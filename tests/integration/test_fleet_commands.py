"""`modelfleet status`, `logs` and `report` on the state a real `modelfleet local` run left.

One tiny real training (one Adult slice, 40 steps) is shared by every test of this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_local_cli import local, tiny_quickstart

pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "modelfleet", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fleet")
    folder = tiny_quickstart(root / "qs")
    (folder / "instance-unmarried.yaml").unlink()  # one instance is enough here
    state = root / "state"
    out = local(folder, state)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder, state


def test_status_shows_revision_ne_model_and_state(trained):
    _, state = trained
    inst = json.loads((state / "state" / "ModelInstance" / "adult-wife.json").read_text())["status"]
    text = cli("status", "--state", str(state))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("1 instance(s), 1 template(s) in state ")
    assert lines[1].split() == ["INSTANCE", "TEMPLATE", "REVISION", "NE", "READY", "REASON", "CHANGED", "MODEL"]
    row = lines[2].split()
    assert row[:3] == ["adult-wife", "adult-ctr", inst["promotedRevision"]]
    assert float(row[3]) == pytest.approx(inst["metrics"]["ne"], abs=1e-4)
    assert row[4:6] == ["True", "Promoted"] and row[-1] == inst["modelUri"]
    assert "template adult-ctr: revision" in text.stdout and "1/1 up to date" in text.stdout

    as_json = json.loads(cli("status", "--state", str(state), "-o", "json").stdout)
    as_yaml = yaml.safe_load(cli("status", "--state", str(state), "-o", "yaml").stdout)
    assert as_json == as_yaml
    assert as_json[0]["modelUri"] == inst["modelUri"] and as_json[0]["revision"] == inst["promotedRevision"]


def test_logs_by_run_and_by_instance(trained):
    _, state = trained
    [run] = [p.stem for p in (state / "state" / "TrainingRun").glob("*.json")]
    by_run = cli("logs", run, "--state", str(state))
    assert by_run.returncode == 0, by_run.stderr
    assert "==> logs/" in by_run.stdout and "step 40/40" in by_run.stdout
    by_instance = cli("logs", "adult-wife", "--state", str(state), "--tail", "3")
    assert by_instance.returncode == 0 and by_instance.stdout.count("==>") == by_run.stdout.count("==>")
    assert len(by_instance.stdout.splitlines()) < len(by_run.stdout.splitlines())
    missing = cli("logs", "nope", "--state", str(state))
    assert missing.returncode == 1 and missing.stderr.startswith("modelfleet logs: nope: no TrainingRun or ModelInstance")


def test_report_draws_ne_history_and_the_adoption_matrix(trained, tmp_path):
    folder, state = trained
    out = cli("report", "--state", str(state), "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    png, page = (tmp_path / "r" / "report.png"), (tmp_path / "r" / "report.html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = page.read_text()
    techniques = [t["name"] for t in yaml.safe_load((folder / "template.yaml").read_text())["spec"]["techniques"]]
    for name in techniques:  # every technique of the promoted model is adopted by the one instance
        assert f"<th>{name}</th>" in text
    assert text.count("class='adopted'") == len(techniques)


def test_unreadable_sources_fail_in_one_line(tmp_path):
    nothing = cli("status", "--state", str(tmp_path / "none"))
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1
    assert "no modelfleet local state under" in nothing.stderr
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    cluster = cli("status", "--cluster", "--kubeconfig", str(bad))
    assert cluster.returncode == 2 and len(cluster.stderr.strip().splitlines()) == 1, cluster.stderr
    assert cluster.stderr.startswith(f"modelfleet status: no usable kubeconfig ({bad})")
    flags = cli("status", "-n", "x")
    assert flags.returncode == 2 and "need --cluster" in flags.stderr
