"""End to end on a real cluster (kind per kind-config.yaml, chart installed, see docs/quickstart.md).

Runs only when MODELFLEET_E2E_KUBECONFIG points at that cluster; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

KUBECONFIG = os.environ.get("MODELFLEET_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="MODELFLEET_E2E_KUBECONFIG is not set (no real cluster)"),
]
ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = os.environ.get("MODELFLEET_E2E_NAMESPACE", "default")


@pytest.fixture(scope="module")
def api():
    from kubernetes import client, config

    config.load_kube_config(config_file=KUBECONFIG)
    return client.CustomObjectsApi()


def test_crds_are_installed_and_served(api):
    from kubernetes import client

    ext = client.ApiextensionsV1Api()
    names = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    assert {"modeltemplates.modelfleet.dev", "modelinstances.modelfleet.dev", "trainingruns.modelfleet.dev"} <= names


def test_quickstart_instances_get_promoted(api):
    docs = [d for p in sorted((ROOT / "examples" / "quickstart").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]
    for doc in docs:
        plural = {"ModelTemplate": "modeltemplates", "ModelInstance": "modelinstances"}[doc["kind"]]
        try:
            api.create_namespaced_custom_object("modelfleet.dev", "v1alpha1", NAMESPACE, plural, doc)
        except Exception as exc:  # already applied by the quickstart script
            if getattr(exc, "status", None) != 409:
                raise
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "ModelInstance"]
    deadline = time.monotonic() + float(os.environ.get("MODELFLEET_E2E_TIMEOUT", "1800"))
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            obj = api.get_namespaced_custom_object("modelfleet.dev", "v1alpha1", NAMESPACE, "modelinstances", name)
            if (obj.get("status") or {}).get("promotedRevision"):
                pending.discard(name)
        time.sleep(10)
    assert not pending, f"not promoted in time: {sorted(pending)}"
