"""The Argo CD health checks (deploy/argocd/modelfleet.dev/*/health.lua) run in a real Lua 5.1
(the dialect of Argo CD's gopher-lua) against statuses shaped by the CRD schemas, and the
shipped argocd-cm / argo-cd values snippets carry exactly those scripts."""

from __future__ import annotations

import copy
import functools
import importlib.util
from typing import Any

import jsonschema
import lupa.lua51 as lua51
import pytest
import yaml
from chart_tools import ROOT
from schema_tools import json_schema, load_crds

ARGOCD = ROOT / "deploy" / "argocd"
KINDS = ("ModelTemplate", "ModelInstance", "TrainingRun")


def _render_module():
    spec = importlib.util.spec_from_file_location("argocd_render", ARGOCD / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check the way Argo CD does: the object as the global `obj`, the script returns hs."""
    script = (ARGOCD / "modelfleet.dev" / kind / "health.lua").read_text()
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script)
    return hs["status"], hs["message"]


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _base(kind: str) -> dict[str, Any]:
    if kind == "TrainingRun":
        return {"apiVersion": "modelfleet.dev/v1alpha1", "kind": kind, "metadata": {"name": "r", "generation": 1}, "spec": {}}
    name = {"ModelTemplate": "template.yaml", "ModelInstance": "instance-wife.yaml"}[kind]
    doc = yaml.safe_load((ROOT / "examples" / "quickstart" / name).read_text())
    doc["metadata"]["generation"] = 3
    return doc


def with_status(kind: str, status: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    obj = _base(kind)
    obj["spec"].update(spec)
    if status is not None:
        # every sample is a status the CRD accepts, so the checks see what the API server stores
        _status_validator(kind).validate(status)
        obj["status"] = status
    return obj


@functools.cache
def _status_validator(kind: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(json_schema(load_crds()[kind])["properties"]["status"])


def gen(kind: str) -> int:
    return _base(kind)["metadata"]["generation"]


COMMON = {
    "no status": (None, "Progressing", "Waiting for the modelfleet operator"),
    "empty status": ({}, "Progressing", "observe generation"),
    "old generation": (lambda g: {"observedGeneration": g - 1, "conditions": [cond("Ready", "True", "Promoted")]}, "Progressing", f"observe generation"),
    "stalled": (lambda g: {"observedGeneration": g, "conditions": [cond("Ready", "False", "InvalidSpec", "x"), cond("Stalled", "True", "InvalidSpec", "spec.techniques[0].name: unknown technique 'foo'")]}, "Degraded", "InvalidSpec: spec.techniques[0].name: unknown technique 'foo'"),
    "stalled beats ready": (lambda g: {"observedGeneration": g, "conditions": [cond("Ready", "True"), cond("Stalled", "True", "BudgetExceeded")]}, "Degraded", "BudgetExceeded"),
    "reconciling": (lambda g: {"observedGeneration": g, "conditions": [cond("Ready", "False", "Training", "waiting for run"), cond("Reconciling", "True", "Training", "2 runs in flight")]}, "Progressing", "Training: 2 runs in flight"),
    "ready false alone": (lambda g: {"observedGeneration": g, "conditions": [cond("Ready", "False", "Waiting", "canary first")]}, "Progressing", "Waiting: canary first"),
}


@pytest.mark.parametrize("case", COMMON)
@pytest.mark.parametrize("kind", ["ModelTemplate", "ModelInstance"])
def test_kstatus_semantics(kind: str, case: str):
    status, want, message = COMMON[case]
    if callable(status):
        status = status(gen(kind))
    got = health(kind, with_status(kind, status))
    assert got[0] == want and message in got[1], got


@pytest.mark.parametrize("kind", ["ModelTemplate", "ModelInstance"])
def test_ready_is_healthy(kind: str):
    status = {"observedGeneration": gen(kind), "conditions": [cond("Ready", "True", "UpToDate", "4/4 up to date")]}
    assert health(kind, with_status(kind, status)) == ("Healthy", "UpToDate: 4/4 up to date")


def test_paused_template_and_suspended_instance_are_suspended():
    ready = {"observedGeneration": 3, "conditions": [cond("Ready", "True")]}
    template = with_status("ModelTemplate", ready)
    template["spec"]["rollout"]["paused"] = True
    assert health("ModelTemplate", template)[0] == "Suspended"
    assert health("ModelInstance", with_status("ModelInstance", ready, suspend=True))[0] == "Suspended"
    # a failure still shows through a pause
    stalled = copy.deepcopy(template)
    stalled["status"]["conditions"].append(cond("Stalled", "True", "GateFailed"))
    assert health("ModelTemplate", stalled)[0] == "Degraded"


RUNS = {
    "Pending": ("Progressing", "Pending"),
    "Running": ("Progressing", "Running"),
    "Succeeded": ("Healthy", "Succeeded, NE 0.71"),
    "Failed": ("Degraded", "ImagePullBackOff: image ghcr.io/x/trainer:9 not found"),
    "Superseded": ("Healthy", "Superseded"),
    "Cancelled": ("Healthy", "Cancelled"),
}


@pytest.mark.parametrize("phase", RUNS)
def test_training_run_phase(phase: str):
    status: dict[str, Any] = {"observedGeneration": 1, "phase": phase, "attempts": 1}
    if phase == "Succeeded":
        status["metrics"] = {"ne": 0.71}
    if phase == "Failed":
        status |= {"reason": "ImagePullBackOff", "message": "image ghcr.io/x/trainer:9 not found"}
    want, message = RUNS[phase]
    got = health("TrainingRun", with_status("TrainingRun", status))
    assert got[0] == want and got[1].startswith(message), got


def test_training_run_without_phase_waits():
    assert health("TrainingRun", with_status("TrainingRun", None))[0] == "Progressing"
    assert health("TrainingRun", with_status("TrainingRun", {"observedGeneration": 1}))[0] == "Progressing"


def test_every_phase_the_api_allows_is_mapped():
    phases = json_schema(load_crds()["TrainingRun"])["properties"]["status"]["properties"]["phase"]
    allowed = set(phases.get("enum") or phases.get("anyOf", [{}])[0].get("enum", [])) - {None}  # nullable
    assert allowed == set(RUNS)


def test_shipped_snippets_carry_the_scripts():
    render = _render_module()
    for name, text in render.render().items():
        assert (ARGOCD / name).read_text() == text, f"deploy/argocd/{name} drifted: run deploy/argocd/render.py"
    scripts = render.health_scripts()
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    values = yaml.safe_load((ARGOCD / "argo-cd-values.yaml").read_text())
    assert cm["data"] == scripts == values["configs"]["cm"]
    assert set(scripts) == {f"resource.customizations.health.modelfleet.dev_{k}" for k in KINDS}
