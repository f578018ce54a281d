"""The operator image has no torch: everything the operator imports must import without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCK_TORCH = r"""
import importlib, importlib.abc, pkgutil, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked: something imported {name!r}")
        return None

sys.meta_path.insert(0, NoTorch())

import modelfleet.api, modelfleet.operator
imported = []
for pkg in (modelfleet.api, modelfleet.operator):
    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
importlib.import_module("modelfleet.trainer.techniques.catalogue")
importlib.import_module("modelfleet.trainer.spec")
imported += ["modelfleet.trainer.techniques.catalogue", "modelfleet.trainer.spec"]
assert "torch" not in sys.modules
print("\n".join(imported))
"""


def test_operator_api_and_catalogue_import_without_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-P", "-c", BLOCK_TORCH], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    # The modules the operator runs on must be among those checked.
    assert {"modelfleet.operator.handlers", "modelfleet.operator.main", "modelfleet.operator.kube"} <= imported
    assert "modelfleet.api.resources" in imported


def test_the_blocker_really_blocks_torch() -> None:
    code = BLOCK_TORCH.split("import modelfleet.api")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr
