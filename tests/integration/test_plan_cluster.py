"""`modelfleet plan --cluster`: the dry run reads the current state from the API server.

The real operator rolls a template out on the emulated API server; then `plan` is given manifests
with one more technique and must say that both instances would retrain and why -- and write nothing.
"""

from __future__ import annotations

import asyncio
import json

import yaml
from operator_harness import FakeLauncher, create, eventually, instance

from modelfleet.cli import main

GRAD_CLIP = {"name": "grad-clip", "params": {"maxNorm": 1.0}}
DROPOUT = {"name": "dropout", "params": {"p": 0.1}}


def template(techniques):
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": "ctr"},
        "spec": {"techniques": techniques, "rollout": {"maxConcurrentRuns": 2, "canary": {"count": 1}}},
    }


async def test_plan_reads_the_cluster_and_writes_nothing(cluster, operator_factory, tmp_path, capsys):
    op = await operator_factory(FakeLauncher(auto="succeed"))
    await create(cluster, "modeltemplates", template([GRAD_CLIP]))
    for n in ("a", "b"):
        await create(cluster, "modelinstances", instance(n))
    await eventually(lambda: (cluster.obj("modeltemplates", "ctr").get("status") or {}).get("upToDate") == 2)
    await op.stop()

    folder = tmp_path / "m"
    folder.mkdir()
    docs = [template([GRAD_CLIP, DROPOUT]), instance("a"), instance("b")]
    (folder / "all.yaml").write_text(yaml.safe_dump_all(docs))
    writes = len(cluster.writes)
    argv = ["plan", "-f", str(folder), "--cluster", "--server", str(cluster.url).rstrip("/"), "-o", "json"]
    code = await asyncio.to_thread(main, argv)  # the sync client must not block the emulator's loop
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["instance"]: r for r in report["templates"][0]["instances"]}
    assert set(rows) == {"a", "b"}
    for r in rows.values():
        assert r["state"] in ("Training", "Waiting") and r["techniqueDiff"] == ["+dropout(p=0.1)"]
        assert r["promotedRevision"] and r["promotedRevision"] != r["revision"]
    assert report["cost"]["runs"] == 2
    assert len(cluster.writes) == writes  # a dry run
