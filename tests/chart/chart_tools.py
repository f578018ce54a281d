"""Render the chart with the real Helm SDK (helm-python-sdk embeds Helm's Go library)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "modelfleet"
RELEASE = "mf"
NAMESPACE = "modelfleet-system"
# The newest Kubernetes version kubernetes-validate has schemas for; lint and validation use it.
KUBE_MINOR = kubernetes_validate.latest_version()
KUBE_VERSION = f"v{KUBE_MINOR}.0"

# Values unlike the defaults in every dimension a template branches on.
NON_DEFAULT_VALUES: dict[str, Any] = {
    "fullnameOverride": "fleet",
    "image": {"repository": "registry.example.com/modelfleet/operator", "digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "replicaCount": 2,
    "operator": {
        "scheduler": "kueue",
        "queue": "team-a",
        "trainerImage": "registry.example.com/modelfleet/trainer:0.1.0-cuda",
        "outputUri": "s3://ml-models/modelfleet",
        "watchNamespaces": ["team-a", "team-b"],
        "pollSeconds": 5,
        "verbose": True,
        "logFormat": "json",
        "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
    },
    "peering": {"enabled": True, "name": "fleet"},
    "storage": {"existingClaim": "modelfleet-data", "mountPath": "/mnt/fleet"},
    "serviceAccount": {"create": True, "name": "fleet-operator", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
    "metrics": {"port": 9090, "service": {"port": 9100}, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "honorLabels": False}},
    "probes": {"port": 9091},
    "podLabels": {"team": "ml"},
    "priorityClassName": "ml-critical",
    "nodeSelector": {"modelfleet.dev/pool": "cpu"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
}


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` / `helm install` would render them."""
    return chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the release would create (templates; NOTES.txt excluded)."""
    out = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(d for d in yaml.safe_load_all(text) if d)
    return out


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]
