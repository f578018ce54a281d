"""The `modelfleet local` state cannot be lost: it is one folder's, nothing is deleted without
--prune, and one process at a time holds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from op_world import instance, template

from modelfleet.api.resolve import resolve_training_spec
from modelfleet.api.resources import TrainingRunSpec
from modelfleet.cli import main
from modelfleet.errors import CliError
from modelfleet.operator.local import (
    EXIT_LOCKED,
    EXIT_OTHER_FOLDER,
    Manifests,
    claim_state,
    state_lock,
    sync_store,
)
from modelfleet.operator.store import FileStore

REPO = Path(__file__).resolve().parents[3]


def manifests(*objs) -> Manifests:
    m = Manifests()
    for o in objs:
        {"ModelTemplate": m.templates, "ModelInstance": m.instances}[o.kind].append(o)
    return m


def body(obj) -> dict:
    return {k: v for k, v in obj.model_dump(mode="json", by_alias=True, exclude_none=True).items() if k != "status"}


def test_without_prune_nothing_is_deleted_and_the_rest_is_named(tmp_path):
    store = FileStore(tmp_path / "state")
    sync_store(store, manifests(template(), instance("a"), instance("b")))
    training = resolve_training_spec(template(), instance("b"), output_uri=str(tmp_path / "runs" / "b-r1"))
    run = TrainingRunSpec(instance="b", revision="r1", training=training)
    store.create("TrainingRun", {"metadata": {"name": "b-r1"}, "spec": run.model_dump(mode="json", by_alias=True)})
    kept = sync_store(store, manifests(template(), instance("a")))
    assert kept == ["ModelInstance b"]
    assert [b["metadata"]["name"] for b in store.list("ModelInstance")] == ["a", "b"]
    assert store.get("TrainingRun", "b-r1") is not None
    # --prune deletes what the folder no longer has, with its runs
    assert sync_store(store, manifests(template(), instance("a")), prune=True) == ["ModelInstance b"]
    assert [b["metadata"]["name"] for b in store.list("ModelInstance")] == ["a"]
    assert store.get("TrainingRun", "b-r1") is None


def test_a_state_made_for_another_folder_is_refused_naming_it(tmp_path):
    state = tmp_path / "state"
    store = FileStore(state / "state")
    first, second = tmp_path / "first", tmp_path / "second"
    claim_state(state, store, first, prune=False)
    sync_store(store, manifests(template(), instance("a")))
    claim_state(state, store, first, prune=False)  # its own folder: fine
    with pytest.raises(CliError) as err:
        claim_state(state, store, second, prune=False)
    assert err.value.code == EXIT_OTHER_FOLDER == 3
    assert str(first) in err.value.message and str(second) in err.value.message
    assert "1 template(s), 1 instance(s), 0 run(s)" in err.value.message and "--state" in err.value.message
    assert json.loads((state / "source.json").read_text())["folder"] == str(first)
    # --prune makes it the second folder's
    claim_state(state, store, second, prune=True)
    assert json.loads((state / "source.json").read_text())["folder"] == str(second)


def test_an_empty_or_unrecorded_state_is_taken_over(tmp_path):
    state = tmp_path / "state"
    store = FileStore(state / "state")
    claim_state(state, store, tmp_path / "first", prune=False)
    claim_state(state, store, tmp_path / "second", prune=False)  # nothing in it yet: nothing to lose
    assert json.loads((state / "source.json").read_text())["folder"] == str(tmp_path / "second")


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelfleet.operator.local import state_lock
    with state_lock(Path(sys.argv[1]), Path(sys.argv[2])):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def test_a_second_process_on_one_state_is_refused_naming_the_holder(tmp_path, capsys):
    state, folder = tmp_path / "state", tmp_path / "qs"
    holder = subprocess.Popen(
        [sys.executable, "-P", "-c", HOLDER, str(state), str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CliError) as err:
            with state_lock(state, tmp_path / "other"):
                pass
        assert err.value.code == EXIT_LOCKED == 4
        assert f"process {holder.pid} (modelfleet local {folder}" in err.value.message
        # through the command: the documented exit status, before anything is read or written
        qs = tmp_path / "m"
        qs.mkdir()
        (qs / "all.yaml").write_text("\n---\n".join(yaml.safe_dump(body(o)) for o in (template(), instance("a"))))
        assert main(["local", str(qs), "--state", str(state)]) == EXIT_LOCKED
        assert f"is in use by process {holder.pid}" in capsys.readouterr().err
        assert not (state / "state").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # released when the holder ends: the next one gets it, and cleans the owner record up after
    with state_lock(state, folder):
        assert json.loads((state / "lock.json").read_text())["pid"] == os.getpid()
    assert not (state / "lock.json").exists()
