"""The top-level folders import as modelfleet subpackages, and never shadow the standard library."""

from __future__ import annotations

import subprocess
import sys

from schema_tools import ROOT


def _python(code: str, cwd) -> str:
    # Plain `python -c` puts the working directory first on sys.path: the shadowing case.
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_import_operator_is_the_standard_library_from_the_checkout_root():
    out = _python("import operator, sys; print(operator.__file__); print(operator.itemgetter(1)([0, 7]))", ROOT)
    path, value = out.splitlines()
    assert path.startswith(sys.base_prefix) and value == "7"


def test_import_operator_is_the_standard_library_from_the_operator_folder():
    out = _python("import operator; print(operator.attrgetter)", ROOT / "operator")
    assert "operator.attrgetter" in out


def test_subpackages_map_to_top_level_folders(tmp_path):
    out = _python(
        "import modelfleet.api.resources as a, modelfleet.operator.naming as o, modelfleet.trainer.spec as t;"
        "print(a.__file__); print(o.__file__); print(t.__file__)",
        tmp_path,
    )
    api, op, trainer = out.splitlines()
    assert api == str(ROOT / "api" / "resources.py")
    assert op == str(ROOT / "operator" / "naming.py")
    assert trainer == str(ROOT / "trainer" / "spec.py")


def test_operator_folder_is_never_a_regular_package():
    assert not (ROOT / "operator" / "__init__.py").exists()
