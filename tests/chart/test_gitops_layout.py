"""The Flux/kustomize layout in examples/gitops builds offline and what it produces is valid:
references resolve, the HelmRelease's values pass the chart's schema and render, and the model
overlay yields resources the CRDs accept with techniques the catalogue knows. Also the CRDs keep
spec and status apart (status subresource), so GitOps tools and the operator never write the same
fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import CHART_DIR, ROOT, chart, render
from schema_tools import cel_errors, load_crds, schema_errors

from modelfleet.api.resources import ModelInstance, ModelTemplate
from modelfleet.trainer.techniques.catalogue import validate_techniques

GITOPS = ROOT / "examples" / "gitops"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """The RFC 6902 ops this layout uses (add, replace), as kustomize applies them."""
    for op in ops:
        *parents, last = op["path"].strip("/").split("/")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif op["op"] in ("add", "replace"):
            node[int(last) if isinstance(node, list) else last] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """A small kustomize: resources (files and folders), namespace, JSON6902 patches by target."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization" and k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    out: list[dict[str, Any]] = []
    for ref in k.get("resources", []):
        path = (folder / ref).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml: {ref} does not exist"
        out.extend(kustomize_build(path) if path.is_dir() else _docs(path))
    if "namespace" in k:
        for d in out:
            if d["kind"] != "Namespace":
                d.setdefault("metadata", {})["namespace"] = k["namespace"]
    for patch in k.get("patches", []):
        t = patch["target"]
        hits = [
            d for d in out
            if d["kind"] == t["kind"] and d["metadata"]["name"] == t.get("name", d["metadata"]["name"])
            and d["apiVersion"] == f"{t['group']}/{t['version']}"
        ]
        assert hits, f"patch target {t} matches nothing"
        for d in hits:
            _json_patch(d, yaml.safe_load(patch["patch"]))
    return out


@pytest.mark.parametrize("folder", ["clusters/kind", "operator", "models/base", "models/overlays/kind"])
def test_every_kustomization_builds(folder: str):
    assert kustomize_build(GITOPS / folder)


def test_flux_objects_reference_what_exists():
    cluster = kustomize_build(GITOPS / "clusters" / "kind")
    sources = {d["metadata"]["name"] for d in cluster if d["kind"] == "GitRepository"}
    flux_ks = {d["metadata"]["name"]: d for d in cluster if d["kind"] == "Kustomization"}
    assert set(flux_ks) == {"modelfleet-operator", "models"}
    for ks in flux_ks.values():
        assert ks["spec"]["sourceRef"]["name"] in sources
        assert (ROOT / ks["spec"]["path"]).is_dir() and (ROOT / ks["spec"]["path"] / "kustomization.yaml").exists()
        for dep in ks["spec"].get("dependsOn", []):
            assert dep["name"] in flux_ks
        assert ks["spec"]["wait"] is True  # kstatus health of what it applies
    assert flux_ks["models"]["spec"]["dependsOn"] == [{"name": "modelfleet-operator"}]


def test_helm_release_values_pass_the_chart_schema_and_render():
    release = next(d for d in kustomize_build(GITOPS / "operator") if d["kind"] == "HelmRelease")
    assert (ROOT / release["spec"]["chart"]["spec"]["chart"]).resolve() == CHART_DIR
    values = release["spec"]["values"]
    chart().validate_schema(values)
    out = render(values)
    dep = yaml.safe_load(out["modelfleet/templates/deployment.yaml"])
    claims = [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    pvcs = [d["metadata"]["name"] for d in kustomize_build(GITOPS / "operator") if d["kind"] == "PersistentVolumeClaim"]
    assert claims == pvcs
    # the models' namespace is one the operator watches
    models = kustomize_build(GITOPS / "models" / "overlays" / "kind")
    assert {d["metadata"]["namespace"] for d in models if d["kind"] != "Namespace"} == set(values["operator"]["watchNamespaces"])


def test_model_overlay_is_valid_for_the_api_server_and_the_operator():
    crds = load_crds()
    models = [d for d in kustomize_build(GITOPS / "models" / "overlays" / "kind") if d["kind"] != "Namespace"]
    assert {d["kind"] for d in models} == {"ModelTemplate", "ModelInstance"}
    for d in models:
        assert schema_errors(crds[d["kind"]], d) == [], d["metadata"]["name"]
        assert cel_errors(crds[d["kind"]], d) == [], d["metadata"]["name"]
        assert "status" not in d  # Git never carries status: the operator owns it
    template = ModelTemplate.model_validate(next(d for d in models if d["kind"] == "ModelTemplate"))
    assert "dropout" in [t.name for t in template.spec.techniques]
    validate_techniques(template.spec.techniques)
    for d in models:
        if d["kind"] == "ModelInstance":
            assert ModelInstance.model_validate(d).spec.template_ref.name == template.metadata.name


def test_base_models_are_the_quickstart():
    base = kustomize_build(GITOPS / "models" / "base")
    quickstart = [d for p in sorted((ROOT / "examples" / "quickstart").glob("*.yaml")) for d in _docs(p)]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(base, key=key) == sorted(quickstart, key=key)


@pytest.mark.parametrize("kind", ["ModelTemplate", "ModelInstance", "TrainingRun"])
def test_status_is_a_subresource(kind: str):
    """With the status subresource, writes to /status cannot change spec and writes to the object
    cannot change status: server-side apply of spec by Git and the operator's status patches never
    conflict over a field."""
    version = load_crds()[kind]["spec"]["versions"][0]
    assert version["subresources"].get("status") == {}
