"""`modelfleet status --cluster` against a real API server: kubeconfig, context namespace, -n, -o."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "modelfleet", *args], capture_output=True, text=True, timeout=120)


def test_status_reads_the_cluster_with_the_kubeconfigs_credentials(control_plane, crds, kube, k8s_namespace, tmp_path):
    docs = [yaml.safe_load((REPO / "examples" / "quickstart" / f).read_text()) for f in ("template.yaml", "instance-wife.yaml")]
    control_plane.apply(docs, namespace=k8s_namespace)
    api = client.CustomObjectsApi(kube)
    status = {
        "promotedRevision": "abc123",
        "metrics": {"ne": 0.8123},
        "modelUri": "s3://bucket/models/adult-wife-abc123",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Promoted", "message": "ok", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
    }
    api.patch_namespaced_custom_object_status("modelfleet.dev", "v1alpha1", k8s_namespace, "modelinstances", "adult-wife", {"status": status})

    out = cli("status", "--cluster", "--kubeconfig", str(control_plane.admin_kubeconfig), "-n", k8s_namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert (row["instance"], row["template"], row["revision"], row["ne"], row["modelUri"], row["reason"]) == (
        "adult-wife", "adult-ctr", "abc123", 0.8123, "s3://bucket/models/adult-wife-abc123", "Promoted"
    )

    # A ServiceAccount without read rights is refused by RBAC, and the CLI says so in one line.
    sa = control_plane.service_account_kubeconfig(k8s_namespace, "nobody", tmp_path / "sa.kubeconfig")
    denied = cli("status", "--cluster", "--kubeconfig", str(sa))  # the context's namespace
    assert denied.returncode == 2
    assert denied.stderr.strip() == f"modelfleet status: the API server answered 403 Forbidden listing namespace {k8s_namespace}"
