"""The trainer's TorchX component, launched for real with the `local_cwd` scheduler, and the
loop under torchrun with two CPU workers (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from modelfleet.trainer.component import app_for, train  # noqa: E402
from modelfleet.trainer.spec import ResourcesSpec, TrainingSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _spec(out: Path, **recipe) -> TrainingSpec:
    return TrainingSpec.model_validate(
        {
            "instance": "torchx-tiny",
            "revision": "r1",
            "event": "click",
            "outputUri": str(out),
            "architecture": {"embedding": {"dim": 8, "buckets": 500}, "bottomMlp": [16, 8], "overArch": [16]},
            "techniques": [{"name": "lowrank-cross", "params": {"rank": 4}}],
            "recipe": {"batchSize": 256, "steps": 40, "learningRate": 0.01, **recipe},
            "data": {"format": "synthetic", "synthetic": {"rows": 6000, "dense": 3, "sparse": 4, "cardinality": 100}},
        }
    )


def _env() -> dict[str, str]:
    # local_cwd runs `torchrun` from PATH; it must be this environment's
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def test_component_builds_a_torchrun_app_without_submitting():
    spec = _spec(Path("/tmp/unused"))
    app = app_for(spec, "registry/trainer:1", ResourcesSpec(nnodes=2, gpus_per_node=4, cpu=8, memory_mb=32768))
    (role,) = app.roles
    assert role.image == "registry/trainer:1" and role.num_replicas == 2
    assert role.resource.gpu == 4 and role.resource.cpu == 8 and role.resource.memMB == 32768
    cmd = role.args[-1]
    # torchrun's launch, through the entry point that keeps the failed worker's exit code
    assert cmd.startswith("python -m modelfleet.trainer.launch ") and "--nnodes 2" in cmd and "--nproc_per_node 4" in cmd
    assert "-m modelfleet train --spec-json" in cmd
    with pytest.raises(ValueError):
        train('{"instance": "x"}')  # a bad spec fails at submit time, not in the pod


def test_torchx_run_local_cwd_trains_for_real(tmp_path):
    out = tmp_path / "out"
    spec = _spec(out)
    proc = subprocess.run(
        [str(BIN / "torchx"), "run", "-s", "local_cwd", "-cfg", f"log_dir={tmp_path / 'logs'}",
         "trainer/component.py:train", "--spec_json", spec.model_dump_json(by_alias=True), "--cpu", "1"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SUCCEEDED" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["ne"] < 1
    # the job's last stdout line is the same metrics object
    lines = [ln.split(":", 1)[1] for ln in proc.stdout.splitlines() if ln.lstrip().startswith("modelfleet/0") and "{" in ln]
    lines += [ln for ln in proc.stderr.splitlines() if '"ne"' in ln]
    assert any(json.loads(ln[ln.index("{"):]) == metrics for ln in lines)


def test_torchx_runner_api_local_cwd(tmp_path):
    from torchx.runner import get_runner
    from torchx.specs import AppState

    out = tmp_path / "out"
    app = app_for(_spec(out, steps=10), "unused-locally", ResourcesSpec(cpu=1, memory_mb=1024))
    old = os.environ.copy()
    os.environ.update(_env())
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with get_runner() as runner:
            handle = runner.run(app, scheduler="local_cwd", cfg={"log_dir": str(tmp_path / "logs")})
            status = runner.wait(handle, wait_interval=0.5)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(old)
    assert status is not None and status.state == AppState.SUCCEEDED
    assert json.loads((out / "metrics.json").read_text())["steps"] == 10


def test_torchrun_two_cpu_workers_train_one_model(tmp_path):
    out = tmp_path / "out"
    spec = _spec(out, steps=None, epochs=1)
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint",
         "localhost:0", "-m", "modelfleet", "train", "--spec-json", spec.model_dump_json(by_alias=True)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in proc.stderr
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    # each rank trains on its half of the ~4,800 training rows: 10 batches of 256 an epoch
    assert metrics["steps"] == 10 and metrics["ne"] < 1
    from modelfleet.trainer.data import Dataset

    train_rows = sum(len(c) for c in Dataset(spec, "train").chunks())
    assert metrics["trainExamples"] == train_rows  # both ranks' shards, each row once
    assert json.loads((out / "metrics.json").read_text()) == metrics
