"""The trainer's TorchX component, launched for real with the `local_cwd` scheduler, the loop
under torchrun with two CPU workers (DDP over gloo), and the exit code a failed job reports: the
worker's classified ExitCode, not torchrun's 1."""

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
    assert role.entrypoint == "bash" and cmd.startswith("python -m modelfleet.trainer.launch --rdzv_backend c10d")
    assert "--nnodes 2" in cmd and "--nproc_per_node 4" in cmd
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


def _bad_data_spec(out: Path, data_file: Path) -> TrainingSpec:
    """A spec whose data is a Parquet file said to be CSV: DATA_FORMAT (4)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"click": [0, 1] * 50, "x": [1.0] * 100}), data_file)
    wire = _spec(out).wire()
    wire["data"] = {"format": "csv", "trainUri": str(data_file), "denseColumns": ["x"]}
    return TrainingSpec.model_validate(wire)


def test_torchrun_itself_exits_1_whatever_its_worker_exits(tmp_path):
    # why modelfleet.trainer.launch exists: the worker exits 4, torchrun reports 1
    spec = _bad_data_spec(tmp_path / "out", tmp_path / "data.csv")
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0",
         "-m", "modelfleet", "train", "--spec-json", spec.model_dump_json(by_alias=True)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1 and "exitcode  : 4" in proc.stderr, proc.stderr[-3000:]


def _launch(spec: TrainingSpec, nproc: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-P", "-m", "modelfleet.trainer.launch", "--nproc_per_node", str(nproc), "--rdzv_backend",
         "c10d", "--rdzv_endpoint", "localhost:0", "-m", "modelfleet", "train",
         "--spec-json", spec.model_dump_json(by_alias=True)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )


def test_launch_checks_spec_and_data_before_starting_workers(tmp_path):
    from modelfleet.trainer.report import read_failure

    spec = _bad_data_spec(tmp_path / "out", tmp_path / "data.csv")
    proc = _launch(spec, nproc=2)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert proc.stderr.startswith("modelfleet train: error: spec.data.format: 'csv', but ")
    assert "[modelfleet.train]" not in proc.stderr  # no worker started
    failure = read_failure(str(tmp_path / "out"))
    assert (failure.code, failure.reason, failure.field) == (4, "DataFormatError", "spec.data.format")


def test_launch_exits_with_the_failed_workers_code(tmp_path):
    from modelfleet.trainer.report import read_failure
    from modelfleet.trainer.train import train as train_in_process

    out = tmp_path / "out"
    train_in_process(_spec(out, steps=2))  # a checkpoint of revision r1 at the output URI
    other = TrainingSpec.model_validate({**_spec(out, steps=2).wire(), "revision": "r2"})
    proc = _launch(other, nproc=2)  # the pre-flight passes; both workers refuse the checkpoint
    assert proc.returncode == 7, proc.stderr[-3000:]
    assert "modelfleet launch: worker failed; exit code 7" in proc.stderr
    assert read_failure(str(out)).reason == "CheckpointMismatch"


def test_torchx_local_cwd_reports_the_classified_exit_code(tmp_path):
    spec = _bad_data_spec(tmp_path / "out", tmp_path / "data.csv")
    logs = tmp_path / "logs"
    proc = subprocess.run(
        [str(BIN / "torchx"), "run", "-s", "local_cwd", "-cfg", f"log_dir={logs}",
         "trainer/component.py:train", "--spec_json", spec.model_dump_json(by_alias=True), "--cpu", "1"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert "FAILED" in proc.stderr, proc.stderr[-3000:]
    (record,) = logs.glob("*/*/SUCCESS")  # local_cwd's record of the finished app
    (replica,) = json.loads(record.read_text())["roles"]["modelfleet"]
    assert replica["exitcode"] == 4
    assert json.loads((tmp_path / "out" / "failure.json").read_text())["reason"] == "DataFormatError"
