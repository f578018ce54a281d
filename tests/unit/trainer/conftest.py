"""Shared helpers for the trainer tests: tiny specs that train in seconds on one thread."""

from __future__ import annotations

import copy
from typing import Any

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def tiny_spec(tmp_path, **overrides: Any):
    """A TrainingSpec for a tiny model on synthetic data; dict overrides merge one level deep."""
    from modelfleet.trainer.spec import TrainingSpec

    wire: dict[str, Any] = {
        "instance": "tiny",
        "revision": "r1",
        "event": "click",
        "outputUri": str(tmp_path / "out"),
        "architecture": {
            "embedding": {"dim": 8, "buckets": 500},
            "bottomMlp": [16, 8],
            "overArch": [16],
        },
        "recipe": {"batchSize": 256, "steps": 60, "learningRate": 0.01, "checkpointEvery": 20, "seed": 3},
        "data": {"format": "synthetic", "synthetic": {"rows": 6000, "dense": 3, "sparse": 4, "cardinality": 100}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(wire.get(key), dict):
            merged = copy.deepcopy(wire[key])
            merged.update(value)
            wire[key] = merged
        else:
            wire[key] = value
    return TrainingSpec.model_validate(wire)


@pytest.fixture
def make_spec(tmp_path):
    return lambda **kw: tiny_spec(tmp_path, **kw)
