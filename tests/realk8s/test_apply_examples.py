"""Every manifest under examples/ applies to the real API server, by server-side and by
client-side apply, and so do the GitOps overlays as `kubectl kustomize` renders them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from schema_cases import get

from modelfleet.api.resources import BY_KIND, GROUP
from modelfleet.operator.validation import LAST_APPLIED, unknown_fields

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
OVERLAYS = [
    ROOT / "examples" / "gitops" / "models" / "base",
    ROOT / "examples" / "gitops" / "models" / "overlays" / "kind",
    ROOT / "examples" / "gitops" / "operator",
    ROOT / "examples" / "gitops" / "clusters" / "kind",
]
# Flux's own kinds: their CRDs come with Flux, which is not part of this control plane.
FLUX_GROUPS = {"helm.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io", "source.toolkit.fluxcd.io"}


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _into(namespace: str, docs: list[dict]) -> list[dict]:
    """The documents moved into the test's namespace (the overlay's Namespace becomes it)."""
    out = []
    for d in docs:
        d = json.loads(json.dumps(d))
        if d["kind"] == "Namespace":
            d["metadata"]["name"] = namespace
        elif "namespace" in d["metadata"]:
            d["metadata"]["namespace"] = namespace
        out.append(d)
    return out


def _ours(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["apiVersion"].split("/")[0] == GROUP]


def _check_stored(kube, namespace: str, docs: list[dict], *, client_side: bool) -> None:
    for d in _ours(docs):
        stored = get(kube, namespace, d["kind"], d["metadata"]["name"])
        # the server's defaults and the models agree: what is stored is what the operator reads
        BY_KIND[d["kind"]].model_validate(stored)
        for key, value in d["spec"].items():
            assert stored["spec"][key] == value or isinstance(value, dict), (d["metadata"]["name"], key)
        annotations = stored["metadata"].get("annotations") or {}
        assert (LAST_APPLIED in annotations) == client_side
        assert unknown_fields(stored, BY_KIND[d["kind"]]) == []  # no false alarm on a good manifest


@pytest.mark.parametrize("server_side", [True, False], ids=["server-side", "client-side"])
def test_quickstart_applies(control_plane, crds, kube, k8s_namespace, server_side):
    out = control_plane.apply(QUICKSTART, server_side=server_side, namespace=k8s_namespace)
    docs = [d for p in sorted(QUICKSTART.glob("*.yaml")) for d in _docs(p.read_text())]
    assert out.count("\n") == len(docs), out
    _check_stored(kube, k8s_namespace, docs, client_side=not server_side)
    # applying the same manifests again changes nothing
    before = {d["metadata"]["name"]: get(kube, k8s_namespace, d["kind"], d["metadata"]["name"])["metadata"]["resourceVersion"] for d in docs}
    again = control_plane.apply(QUICKSTART, server_side=server_side, namespace=k8s_namespace)
    assert ("unchanged" in again) or server_side, again
    after = {d["metadata"]["name"]: get(kube, k8s_namespace, d["kind"], d["metadata"]["name"])["metadata"]["resourceVersion"] for d in docs}
    assert after == before


def _group(doc: dict) -> str:
    api_version = doc["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def _served_groups(control_plane) -> set[str]:
    return {_group({"apiVersion": v}) for v in control_plane.kubectl("api-versions").stdout.split()}


@pytest.mark.parametrize("server_side", [True, False], ids=["server-side", "client-side"])
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[str(p.relative_to(ROOT / "examples" / "gitops")) for p in OVERLAYS])
def test_gitops_overlays_apply(control_plane, crds, kube, k8s_namespace, overlay, server_side):
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
    docs = _into(k8s_namespace, _docs(rendered))
    served = _served_groups(control_plane)
    applicable = [d for d in docs if _group(d) in served]
    left_out = {_group(d) for d in docs} - served
    assert left_out <= FLUX_GROUPS, f"kinds this server does not serve: {left_out}"
    if applicable:  # (clusters/kind holds Flux objects only)
        control_plane.apply(applicable, server_side=server_side, namespace=k8s_namespace)
        _check_stored(kube, k8s_namespace, applicable, client_side=not server_side)
