"""End to end: the real operator, against the emulated API server, really trains with `local_cwd`.

A template and one instance go in; the operator creates the TrainingRun, the local_cwd launcher
runs the trainer through TorchX (torchrun on this machine), the run reads the trainer's
metrics.json, and the instance is promoted with those metrics. Tiny: 200 synthetic rows, 3 steps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from operator_harness import condition, create, eventually, start_operator

from modelfleet.operator.config import OperatorConfig

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

HANG_GUARD_S = 240  # a guard against a hung job, not a speed assertion


@pytest.fixture(autouse=True)
def _torchrun_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


async def test_operator_trains_and_promotes_with_local_cwd(cluster, tmp_path):
    from modelfleet.operator.launcher import make_launcher

    runs_uri = str(tmp_path / "runs")
    launcher = make_launcher(
        OperatorConfig(scheduler="local_cwd", log_dir=str(tmp_path / "logs"), output_uri=runs_uri)
    )
    op = await start_operator(str(cluster.url).rstrip("/"), launcher, output_uri=runs_uri, poll_seconds=1.0)
    try:
        await create(cluster, "modeltemplates", {
            "apiVersion": "modelfleet.dev/v1alpha1",
            "kind": "ModelTemplate",
            "metadata": {"name": "tiny"},
            "spec": {
                "architecture": {"embedding": {"dim": 4, "buckets": 64}, "bottomMlp": [8, 4], "overArch": [8]},
                "techniques": [{"name": "grad-clip", "params": {"maxNorm": 1.0}}],
                "recipe": {"steps": 3, "batchSize": 32, "evalBatchSize": 256, "checkpointEvery": 100000},
                "rollout": {"maxConcurrentRuns": 1, "canary": {"count": 1}},
            },
        })
        await create(cluster, "modelinstances", {
            "apiVersion": "modelfleet.dev/v1alpha1",
            "kind": "ModelInstance",
            "metadata": {"name": "surface-a"},
            "spec": {
                "templateRef": {"name": "tiny"},
                "event": "label",
                "data": {"format": "synthetic", "synthetic": {"rows": 200, "dense": 2, "sparse": 2, "cardinality": 10}},
                "resources": {"cpu": 1, "memoryMb": 1024},
            },
        })
        inst = await eventually(
            lambda: (o := cluster.obj("modelinstances", "surface-a"))["status"].get("promotedRevision") and o,
            timeout=HANG_GUARD_S,
            interval=0.5,
        )
    finally:
        await op.stop()
        close = getattr(launcher, "close", None)
        if close:
            close()

    (run,) = cluster.objs("trainingruns")
    assert run["status"]["phase"] == "Succeeded" and run["status"]["scheduler"] == "local_cwd"
    assert inst["status"]["promotedRevision"] == run["spec"]["revision"]
    ne = inst["status"]["metrics"]["ne"]
    assert ne == run["status"]["metrics"]["ne"] and 0 < ne < 2
    assert Path(inst["status"]["modelUri"], "metrics.json").exists()
    assert inst["status"]["techniques"] == ["grad-clip"]
    assert condition(inst, "Ready")["status"] == "True"
