"""The chart renders with the real Helm SDK, lints clean (strict, a recent Kubernetes), every
object is valid Kubernetes, and the Deployment speaks the operator's real contract (its CLI flags
and environment, parsed by the operator's own code)."""

from __future__ import annotations

import argparse
import tomllib
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from chart_tools import (
    CHART_DIR,
    KUBE_MINOR,
    KUBE_VERSION,
    NAMESPACE,
    NON_DEFAULT_VALUES,
    ROOT,
    chart,
    objects,
    one,
    render,
)

from modelfleet.operator import main as operator_main
from modelfleet.operator.config import OperatorConfig

CASES = {"default": {}, "non-default": NON_DEFAULT_VALUES}
# Kinds whose schemas are not part of Kubernetes; checked against their own CRDs below.
CUSTOM_KINDS = {"ServiceMonitor", "KopfPeering", "ClusterKopfPeering"}


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_chart_version_follows_the_package_version():
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert meta["appVersion"] == version, "bump charts/modelfleet/Chart.yaml appVersion with pyproject.toml"
    assert meta["version"] == version
    assert chart().metadata["appVersion"] == version


def test_chart_declares_the_oldest_supported_kubernetes():
    assert chart().metadata["kubeVersion"] == ">=" + KUBE_VERSIONS[0].lstrip("v") + "-0"


def test_chart_ships_the_generated_crds():
    names = sorted(c["name"] for c in chart().crds)
    assert names == sorted(f"crds/{p.name}" for p in (ROOT / "crds").glob("*.yaml"))


# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest one known here.
KUBE_VERSIONS = ["v1.28.0", KUBE_VERSION]  # 1.28: what tests/realk8s runs against


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_chart_lints_clean_strict(case: str, kube_version: str):
    report = helm.lint(str(CHART_DIR), CASES[case], strict=True, kube_version=kube_version, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], problems or report["errors"]


@pytest.mark.parametrize("kube_minor", ["1.28", KUBE_MINOR])
@pytest.mark.parametrize("case", CASES)
def test_every_rendered_object_is_valid_kubernetes(case: str, kube_minor: str):
    objs = objects(CASES[case])
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"} <= kinds
    for obj in objs:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        # strict: unknown fields (a typo in a template) fail too
        kubernetes_validate.validate(obj, kube_minor, strict=True)


def test_non_default_custom_objects_are_well_formed():
    objs = objects(NON_DEFAULT_VALUES)
    peers = [o for o in objs if o["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peers) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in peers} == {"fleet"}
    crds = {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all((CHART_DIR / "files" / "kopf-peering-crds.yaml").read_text())}
    for p in peers:
        assert p["apiVersion"] == f"{crds['KopfPeering']['spec']['group']}/v1"
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert [e["honorLabels"] for e in sm["spec"]["endpoints"]] == [False]


def test_service_monitor_keeps_the_series_own_namespace_and_instance_labels_by_default():
    """Our series name the ModelInstance in `namespace`/`instance`, which Prometheus would otherwise
    rename to exported_namespace/exported_instance in favour of the scrape target's."""
    sm = one(objects({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")
    assert [e["honorLabels"] for e in sm["spec"]["endpoints"]] == [True]


def test_cluster_wide_peering_creates_a_cluster_peering():
    objs = objects({"peering": {"enabled": True, "name": "modelfleet"}, "replicaCount": 2})
    peer = one(objs, "ClusterKopfPeering")
    assert peer["metadata"]["name"] == "modelfleet" and "namespace" not in peer["metadata"]
    assert not [o for o in objs if o["kind"] == "KopfPeering"]


def _parse_operator_args(container: dict[str, Any]) -> argparse.Namespace:
    assert container["command"] == ["modelfleet"] and container["args"][0] == "operator"
    parser = argparse.ArgumentParser()
    operator_main.configure(parser)
    return parser.parse_args(container["args"][1:])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_default_deployment_runs_the_operator_as_configured():
    objs = objects()
    c = _container(objs)
    args = _parse_operator_args(c)
    assert args.namespace is None  # cluster-wide
    assert args.standalone and args.liveness == "http://0.0.0.0:8081/healthz"
    assert (args.log_format, args.verbose) == ("plain", False)
    config = OperatorConfig.from_env(_env(c))
    values = chart().values
    assert (config.scheduler, config.queue, config.trainer_image, config.output_uri, config.metrics_port) == (
        values["operator"]["scheduler"], values["operator"]["queue"], values["operator"]["trainerImage"],
        values["operator"]["outputUri"], 8080,
    )
    assert c["image"] == f"ghcr.io/modelfleet/operator:{chart().metadata['appVersion']}"
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"


def test_non_default_deployment_runs_the_operator_as_configured():
    objs = objects(NON_DEFAULT_VALUES)
    c = _container(objs)
    args = _parse_operator_args(c)
    assert args.namespace == ["team-a", "team-b"]
    assert not args.standalone and args.peering == "fleet" and args.verbose
    assert args.log_format == "json"
    assert args.liveness == "http://0.0.0.0:9091/healthz"
    env = _env(c)
    config = OperatorConfig.from_env(env)
    assert (config.scheduler, config.queue, config.output_uri, config.metrics_port, config.poll_seconds) == (
        "kueue", "team-a", "s3://ml-models/modelfleet", 9090, 5.0
    )
    assert config.trainer_image == "registry.example.com/modelfleet/trainer:0.1.0-cuda"
    assert env["AWS_REGION"] == "eu-west-1"
    assert (env["MODELFLEET_OUTPUT_PVC"], env["MODELFLEET_OUTPUT_MOUNT"]) == ("modelfleet-data", "/mnt/fleet")
    assert c["image"] == "registry.example.com/modelfleet/operator@sha256:" + "a" * 64
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "modelfleet-data"}} in pod["volumes"]
    assert {"name": "output", "mountPath": "/mnt/fleet"} in c["volumeMounts"]
    assert pod["serviceAccountName"] == "fleet-operator" == one(objs, "ServiceAccount")["metadata"]["name"]
    assert one(objs, "Deployment")["spec"]["replicas"] == 2
    assert "strategy" not in one(objs, "Deployment")["spec"]  # peering: rolling updates are safe


@pytest.mark.parametrize("case", CASES)
def test_probes_and_ports_point_at_what_the_operator_serves(case: str):
    objs = objects(CASES[case])
    c = _container(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    liveness_port = int(_parse_operator_args(c).liveness.rsplit(":", 1)[1].split("/")[0])
    assert ports["healthz"] == liveness_port
    assert ports["metrics"] == int(_env(c)["MODELFLEET_METRICS_PORT"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    svc = one(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_notes_tell_the_user_what_to_do_next():
    notes = render()["modelfleet/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/mf-modelfleet" in notes
    assert "kubectl apply -f examples/quickstart/" in notes and "kubectl get modelfleet" in notes
    assert "queue.scheduling.volcano.sh default" in notes
    kueue_notes = render(NON_DEFAULT_VALUES)["modelfleet/templates/NOTES.txt"]
    assert "get localqueue team-a" in kueue_notes and "team-a, team-b" in kueue_notes


def test_service_monitor_without_service_fails_with_the_reason():
    with pytest.raises(helm.HelmError, match="metrics.service.enabled"):
        render({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


def test_optional_objects_are_off_by_default():
    kinds = [o["kind"] for o in objects()]
    assert "ServiceMonitor" not in kinds and "ClusterKopfPeering" not in kinds
    kinds = [o["kind"] for o in objects({"serviceAccount": {"create": False, "name": "existing"}, "rbac": {"create": False}})]
    assert "ServiceAccount" not in kinds and not {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"} & set(kinds)
