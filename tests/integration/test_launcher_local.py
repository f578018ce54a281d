"""The local_cwd launcher really trains through TorchX, survives an operator restart, and cancels.

Needs torch (the `train` extra) and `torchrun` on PATH (put there from this interpreter's bin).
Sizes are tiny: a few training steps on 200 synthetic rows.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import pytest

from modelfleet.api.resources import TrainingRunSpec
from modelfleet.operator.config import OperatorConfig
from modelfleet.operator.launcher import JobState, LocalLauncher, make_launcher
from modelfleet.trainer.spec import TrainingSpec

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

# A guard against a hung job, not a speed assertion: these runs take seconds.
HANG_GUARD_S = 240


@pytest.fixture(autouse=True)
def _torchrun_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def spec(out: Path, steps: int = 3, data: dict | None = None) -> TrainingRunSpec:
    training = TrainingSpec.model_validate({
        "instance": "ctr", "revision": "r1", "event": "label",
        "architecture": {"embedding": {"dim": 4, "buckets": 64}, "bottomMlp": [8, 4], "overArch": [8]},
        "recipe": {"steps": steps, "batchSize": 32, "evalBatchSize": 256, "checkpointEvery": 100_000},
        "data": data or {"format": "synthetic", "synthetic": {"rows": 200, "dense": 2, "sparse": 2, "cardinality": 10}},
        "outputUri": str(out),
    })
    return TrainingRunSpec(instance="ctr", revision="r1", training=training, resources={"cpu": 1, "memoryMb": 1024})


def wait(launcher: LocalLauncher, handle: str, until: tuple[str, ...]) -> JobState:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        state = launcher.state(handle)
        if state.phase in until:
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"job {handle} still {state} after {HANG_GUARD_S}s")
        time.sleep(0.5)


def config(tmp_path: Path) -> OperatorConfig:
    return OperatorConfig(scheduler="local_cwd", log_dir=str(tmp_path / "logs"), output_uri=str(tmp_path / "runs"))


def test_trains_to_success_and_a_new_launcher_still_knows(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "ctr-r1"
    launcher = make_launcher(config(tmp_path))
    assert launcher.find("ctr-r1", 1) is None
    handle = launcher.submit("ctr-r1", 1, spec(out), {"modelfleet.dev/instance": "ctr"})
    assert handle.startswith("local_cwd://")

    state = wait(launcher, handle, ("Succeeded", "Failed", "Cancelled"))
    assert state.phase == "Succeeded", state
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] > 0

    # An operator restart: a new launcher (new TorchX Runner) adopts and reads the same job.
    restarted = LocalLauncher(config(tmp_path))
    assert restarted.find("ctr-r1", 1) == handle
    assert restarted.find("ctr-r1", 2) is None and restarted.find("other", 1) is None
    assert restarted.state(handle).phase == "Succeeded"
    restarted.cancel(handle)  # finished jobs stay finished; cancel is a no-op
    assert restarted.state(handle).phase == "Succeeded"


def test_bad_data_fails_with_the_trainers_message(tmp_path: Path) -> None:
    launcher = LocalLauncher(config(tmp_path))
    data = {"format": "csv", "trainUri": str(tmp_path / "missing.csv"), "denseColumns": ["d0"]}
    handle = launcher.submit("ctr-r1", 1, spec(tmp_path / "out", data=data), {})
    state = wait(launcher, handle, ("Succeeded", "Failed", "Cancelled"))
    # the trainer's exit code 3 through its launch entry point names the reason
    assert state.phase == "Failed" and state.reason == "DataNotFound"
    assert "missing.csv" in (state.message or "") and "logs:" in (state.message or "") and "exit code 3" in (state.message or "")
    assert not (tmp_path / "out" / "metrics.json").exists()
    # after a restart the failure is still a failure, not a success or an unknown, with its reason
    assert LocalLauncher(config(tmp_path)).state(handle).reason == "DataNotFound"


def _pids(launcher: LocalLauncher, handle: str) -> list[int]:
    app_id = handle.rsplit("/", 1)[1]
    record = json.loads((Path(launcher.log_dir) / "modelfleet" / "apps" / f"{app_id}.json").read_text())
    return [p["pid"] for p in record["processes"]]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_cancel_stops_the_process_from_the_same_and_from_a_restarted_launcher(tmp_path: Path) -> None:
    launcher = LocalLauncher(config(tmp_path))
    long = spec(tmp_path / "a", steps=10_000_000)
    first = launcher.submit("ctr-a", 1, long, {})
    second = launcher.submit("ctr-b", 1, spec(tmp_path / "b", steps=10_000_000), {})
    wait(launcher, first, ("Running",))
    wait(launcher, second, ("Running",))

    launcher.cancel(first)
    assert wait(launcher, first, ("Cancelled", "Failed", "Succeeded")).phase == "Cancelled"
    launcher.cancel(first)  # idempotent

    # The old launcher goes away (operator exit): TorchX's LocalScheduler would kill every app it
    # knows when collected; the launcher detaches them so the job outlives it.
    del launcher
    gc.collect()
    restarted = LocalLauncher(config(tmp_path))
    assert restarted.find("ctr-b", 1) == second
    assert restarted.state(second).phase == "Running"  # from the recorded live process
    pids = _pids(restarted, second)
    assert pids
    restarted.cancel(second)
    deadline = time.monotonic() + HANG_GUARD_S
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"processes {pids} survived cancel"
        time.sleep(0.2)
    assert restarted.state(second).phase == "Cancelled"
    assert restarted.find("ctr-b", 1) is None  # a cancelled attempt is never adopted
    assert not (tmp_path / "b" / "metrics.json").exists()
    restarted.cancel("local_cwd://modelfleet/never-submitted-x")  # missing job: not an error
    assert restarted.state("local_cwd://modelfleet/never-submitted-x").reason == "NotFound"


def _exits_with(code: int):
    """An app whose one replica exits with `code`: what the trainer does on bad input (trainer/report.py)."""
    from torchx.specs import AppDef, Resource, Role

    def build(run_name, spec, image, env=None, config=None):
        role = Role("train", image=".", entrypoint=sys.executable, args=["-c", f"import sys; sys.exit({code})"],
                    env=dict(env or {}), resource=Resource(cpu=1, gpu=0, memMB=256))
        return AppDef(run_name, roles=[role])

    return build


def test_a_permanent_exit_code_is_failed_with_its_reason_and_never_retried(tmp_path: Path, monkeypatch) -> None:
    import datetime as dt

    from modelfleet.api.resources import RolloutSpec, TrainingRun
    from modelfleet.operator import launcher as launcher_module
    from modelfleet.operator.runs import reconcile_run
    from modelfleet.operator.status import merge_patch

    monkeypatch.setattr(launcher_module, "build_app", _exits_with(3))  # 3: DataNotFound
    launcher = LocalLauncher(config(tmp_path))
    run = TrainingRun.model_validate({"metadata": {"name": "ctr-r1"}, "spec": spec(tmp_path / "out").model_dump(mode="json", by_alias=True)})
    policy = RolloutSpec(maxRetries=3, backoffSeconds=1)
    now = dt.datetime.now(dt.UTC)

    def step(run: TrainingRun) -> tuple[TrainingRun, object]:
        update = reconcile_run(run, launcher, now, policy=policy)
        body = run.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["status"] = merge_patch(body.get("status"), update.status_patch or {})
        return TrainingRun.model_validate(body), update

    run, _ = step(run)  # submitted for real through TorchX local_cwd
    handle = run.status.app_handle
    state = wait(launcher, handle, ("Succeeded", "Failed", "Cancelled"))
    assert state.phase == "Failed" and state.reason == "DataNotFound" and "exit code 3" in state.message
    # a restarted operator (a launcher that did not start the job) reads it from TorchX's SUCCESS file
    assert LocalLauncher(config(tmp_path)).state(handle).reason == "DataNotFound"

    run, update = step(run)
    assert run.status.phase == "Failed" and run.status.reason == "DataNotFound" and run.status.attempts == 1
    assert update.requeue_after is None and "not retried" in run.status.message
    assert launcher.find("ctr-r1", 2) is None  # no second attempt was submitted
    assert step(run)[1].status_patch is None

    # a transient exit code (1) keeps its retries
    monkeypatch.setattr(launcher_module, "build_app", _exits_with(1))
    other = TrainingRun.model_validate({"metadata": {"name": "ctr-r2"}, "spec": spec(tmp_path / "out2").model_dump(mode="json", by_alias=True)})
    other, _ = step(other)
    assert wait(launcher, other.status.app_handle, ("Failed",)).reason == "Error"
    other, update = step(other)
    assert other.status.phase == "Pending" and other.status.reason == "Error" and update.requeue_after == 1.0


def test_the_trainer_itself_fails_a_run_whose_data_is_missing_for_good(tmp_path: Path) -> None:
    import datetime as dt

    from modelfleet.api.resources import RolloutSpec, TrainingRun
    from modelfleet.operator.runs import reconcile_run
    from modelfleet.operator.status import merge_patch

    # The data vanished after the pre-flight: only the trainer can find out.
    data = {"format": "csv", "trainUri": str(tmp_path / "gone.csv"), "denseColumns": ["d0"]}
    run = TrainingRun.model_validate({"metadata": {"name": "ctr-r1"},
                                      "spec": spec(tmp_path / "out", data=data).model_dump(mode="json", by_alias=True)})
    launcher = LocalLauncher(config(tmp_path))
    now = dt.datetime.now(dt.UTC)
    policy = RolloutSpec(maxRetries=2, backoffSeconds=1)
    for _ in range(2):
        update = reconcile_run(run, launcher, now, policy=policy)
        body = run.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["status"] = merge_patch(body.get("status"), update.status_patch or {})
        run = TrainingRun.model_validate(body)
        if run.status.app_handle:
            wait(launcher, run.status.app_handle, ("Succeeded", "Failed", "Cancelled"))
    assert run.status.phase == "Failed" and run.status.reason == "DataNotFound" and run.status.attempts == 1
    assert "spec.data.trainUri" in run.status.message and "gone.csv" in run.status.message
