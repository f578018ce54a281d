"""`modelfleet plan`: what a change would retrain and why, read from a local state; writes nothing."""

from __future__ import annotations

import yaml
from op_world import World, instance, template

from modelfleet.cli import main

TECHS = [{"name": "grad-clip", "params": {"maxNorm": 1.0}}, {"name": "lowrank-cross", "params": {"rank": 4}}]


def write_manifests(folder, techniques, budget_b=None):
    folder.mkdir(exist_ok=True)
    docs = [template(techniques=techniques, rollout={"maxConcurrentRuns": 2})]
    docs.append(instance("a"))
    b = instance("b", servingBudget={"maxFlopsPerExample": budget_b} if budget_b else {})
    docs.append(b)
    text = "\n---\n".join(
        yaml.safe_dump({k: v for k, v in d.model_dump(mode="json", by_alias=True, exclude_none=True).items() if k != "status"})
        for d in docs
    )
    (folder / "all.yaml").write_text(text)
    return docs


def trained_state(tmp_path, techniques):
    """A local state where a and b are promoted at `techniques` (trained by the fake launcher)."""
    w = World(tmp_path / ".modelfleet" / "state")
    for doc in write_manifests(tmp_path / "m", techniques):
        w.put(doc)
    for _ in range(20):
        w.step()
        for j in w.launcher.jobs.values():
            if j["state"] == "RUNNING":
                w.launcher.finish(j["run"])
    assert all(i.status.promoted_revision == i.status.target_revision for i in w.instances())
    return w


def test_plan_shows_the_technique_diff_cost_and_blocked_instances(tmp_path, capsys):
    w = trained_state(tmp_path, TECHS[:1])
    before = {p: p.read_bytes() for p in (tmp_path / ".modelfleet").rglob("*.json")}
    write_manifests(tmp_path / "m", TECHS, budget_b=10)
    code = main(["plan", "-f", str(tmp_path / "m"), "--state", str(tmp_path / ".modelfleet")])
    out = capsys.readouterr().out
    assert code == 0
    assert "+lowrank-cross(rank=4)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith(("a ", "b "))}
    assert "retrain" in lines["a"] and "blocked" in lines["b"] and "BudgetExceeded" in lines["b"]
    assert "estimated cost: 1 training run(s)" in out and "FLOPs" in out
    # a dry run: the state is untouched
    assert {p: p.read_bytes() for p in (tmp_path / ".modelfleet").rglob("*.json")} == before
    assert len(w.runs()) == 2


def test_plan_with_nothing_changed_retrains_nothing(tmp_path, capsys):
    trained_state(tmp_path, TECHS[:1])
    assert main(["plan", "-f", str(tmp_path / "m"), "--state", str(tmp_path / ".modelfleet"), "-o", "json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["cost"]["runs"] == 0
    assert {i["state"] for i in report["templates"][0]["instances"]} == {"UpToDate"}


def test_plan_without_state_trains_everyone_with_the_cost_per_run(tmp_path, capsys):
    write_manifests(tmp_path / "m", TECHS)
    assert main(["plan", "-f", str(tmp_path / "m"), "--state", str(tmp_path / "none"), "-o", "json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    rows = report["templates"][0]["instances"]
    assert [r["why"] for r in rows] == ["no promoted model yet"] * 2
    # steps x batch from the recipe (5 x 32) and 3 x the catalogue's forward cost
    assert all(r["trainFlops"] == 3 * r["flopsPerExample"] * 5 * 32 for r in rows)
    assert report["cost"]["runs"] == 2 and report["cost"]["trainFlops"] == sum(r["trainFlops"] for r in rows)
