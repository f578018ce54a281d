"""Every chart value is described in values.schema.json, and charts/modelfleet/README.md carries the
table generated from it (hack/chart-readme.py)."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

from chart_tools import CHART_DIR, ROOT

SCRIPT = ROOT / "hack" / "chart-readme.py"
readme = runpy.run_path(str(SCRIPT))


def _schema() -> dict:
    return json.loads((CHART_DIR / "values.schema.json").read_text())


def test_every_value_in_the_schema_is_described():
    """100 %: every property at every depth, array items' fields included, says what it is."""
    names = [(name, node) for name, node, _ in readme["rows"](_schema(), {})]
    undescribed = [name for name, node in names if not node.get("description", "").strip()]
    assert undescribed == [], f"{len(undescribed)} of {len(names)} values undescribed: {undescribed}"


def test_the_walk_reaches_every_property_of_the_schema():
    """The rows are the schema's properties, no fewer: count them independently of `rows`."""

    def count(node: dict) -> int:
        props = node.get("properties") or {}
        items = node.get("items") or {}
        return len(props) + sum(count(v) for v in props.values()) + (count(items) if items.get("properties") else 0)

    assert len(list(readme["rows"](_schema(), {}))) == count(_schema())


def test_committed_readme_is_the_generated_one():
    path = CHART_DIR / "README.md"
    assert readme["render"](path.read_text()) == path.read_text(), "run: .venv/bin/python hack/chart-readme.py"


def test_readme_table_has_type_default_and_description_of_each_value():
    text = (CHART_DIR / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `operator.logFormat` |"))
    assert row.split(" | ")[1:3] == ["string", '`"plain"`']
    assert "kopf's JSON format" in row and "`plain`, `json`" in row
    row = next(line for line in text.splitlines() if line.startswith("| `resources.limits.memory` |"))
    assert row.split(" | ")[1:3] == ["string or number", '`"512Mi"`']
    for name, _, _ in readme["rows"](_schema(), {}):
        assert f"| `{name}` |" in text


def test_check_fails_on_a_stale_readme_and_the_script_repairs_it(tmp_path: Path):
    chart = tmp_path / "modelfleet"
    shutil.copytree(CHART_DIR, chart)
    schema = json.loads((chart / "values.schema.json").read_text())
    schema["properties"]["replicaCount"]["description"] = "How many operators."
    (chart / "values.schema.json").write_text(json.dumps(schema))
    run = [sys.executable, str(SCRIPT), "--chart", str(chart)]
    stale = subprocess.run([*run, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert subprocess.run(run).returncode == 0
    assert "| `replicaCount` | integer | `1` | How many operators. |" in (chart / "README.md").read_text()
    assert subprocess.run([*run, "--check"]).returncode == 0
