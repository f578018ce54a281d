"""values.schema.json makes a mistyped or wrong value fail `helm install`, naming the field.

`helm install --dry-run=client` runs through the Helm SDK with in-memory release storage: the
same code path as a real install up to the API calls, so no cluster is needed."""

from __future__ import annotations

import json
from pathlib import Path

import helm_python as helm
import pytest
from chart_tools import CHART_DIR, NAMESPACE, NON_DEFAULT_VALUES, chart, render


def install(values: dict) -> dict:
    cfg = helm.Config(storage_driver="memory", namespace=NAMESPACE, kubeconfig_content=_NO_CLUSTER)
    try:
        return cfg.install(str(CHART_DIR), "mf", values, dry_run="client", namespace=NAMESPACE)
    finally:
        cfg.close()


# A kubeconfig pointing nowhere: a client dry run must never need it.
_NO_CLUSTER = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
users: [{name: none, user: {}}]
"""


def test_schema_closes_every_object():
    """additionalProperties: false on every object with fixed keys, so no typo slips through."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} is open"
            for k, v in node["properties"].items():
                walk(v, f"{path}.{k}")

    walk(schema, "values")


@pytest.mark.parametrize("values", [{}, NON_DEFAULT_VALUES], ids=["default", "non-default"])
def test_good_values_install(values: dict):
    release = install(values)
    assert release["chart_version"] == chart().metadata["version"]
    assert "kind: Deployment" in release["manifest"]


BAD = {
    "top-level typo": ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    "nested typo": ({"operator": {"schedular": "kueue"}}, "at '/operator': additional properties 'schedular' not allowed"),
    "deep typo": ({"metrics": {"serviceMonitor": {"enable": True}}}, "at '/metrics/serviceMonitor': additional properties 'enable'"),
    "unknown scheduler": ({"operator": {"scheduler": "volcano"}}, "at '/operator/scheduler': value must be one of 'kubernetes', 'kueue'"),
    "laptop scheduler": ({"operator": {"scheduler": "local_cwd"}}, "at '/operator/scheduler'"),
    "wrong type": ({"operator": {"pollSeconds": "10s"}}, "at '/operator/pollSeconds'"),
    "bad namespace": ({"operator": {"watchNamespaces": ["Team_A"]}}, "at '/operator/watchNamespaces/0'"),
    "too many replicas": ({"replicaCount": 6, "peering": {"enabled": True, "name": "p"}}, "at '/replicaCount': maximum: got 6, want 5"),
    "unknown log format": ({"operator": {"logFormat": "logfmt"}}, "at '/operator/logFormat': value must be one of 'plain', 'json'"),
    "bad digest": ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    "bad quantity": ({"resources": {"limits": {"memory": "lots"}}}, "at '/resources/limits/memory'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_values_fail_install_naming_the_field(case: str):
    values, message = BAD[case]
    with pytest.raises(helm.HelmError) as err:
        install(values)
    assert message in str(err.value), str(err.value)


def test_a_mistyped_values_file_fails(tmp_path: Path):
    """The `helm install -f my-values.yaml` path: YAML parsed by Helm, then the schema."""
    path = tmp_path / "my-values.yaml"
    path.write_text("operator:\n  scheduler: kueue\n  queue: team-a\n  trainerimage: my/trainer:1\n")
    values = helm.values_from_yaml(path.read_text())
    with pytest.raises(helm.HelmError, match="additional properties 'trainerimage' not allowed"):
        install(values)


def test_replicas_with_peering_are_allowed():
    objs = install({"replicaCount": 3, "peering": {"enabled": True, "name": "modelfleet"}})
    assert "replicas: 3" in objs["manifest"]


@pytest.mark.parametrize("replicas", [2, 5])
def test_replicas_without_peering_fail_naming_the_value_to_set(replicas: int):
    """Not the schema's bare `maximum: got 2, want 1`: the chart says what to set, and why."""
    for attempt in (lambda: install({"replicaCount": replicas}), lambda: render({"replicaCount": replicas})):
        with pytest.raises(helm.HelmError) as err:
            attempt()
        text = str(err.value)
        assert f"replicaCount={replicas} needs peering.enabled=true" in text, text
        assert "kopf-peering-crds.yaml" in text and "or set replicaCount=1" in text
