"""The harness itself: a real control plane that serves our CRDs, RBAC, the Job controller and an audit log."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from envtest import wait_for

TEMPLATE = {
    "apiVersion": "modelfleet.dev/v1alpha1",
    "kind": "ModelTemplate",
    "metadata": {"name": "t"},
    "spec": {"techniques": [{"name": "dropout"}]},
}


def test_crds_are_established_and_served(crds, kube, k8s_namespace):
    assert sorted(crds) == ["modelinstances.modelfleet.dev", "modeltemplates.modelfleet.dev", "trainingruns.modelfleet.dev"]
    api = client.CustomObjectsApi(kube)
    api.create_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "modeltemplates", TEMPLATE)
    got = api.get_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "modeltemplates", "t")
    assert got["metadata"]["generation"] == 1 and got["spec"]["techniques"] == [{"name": "dropout"}]


def test_repeated_technique_names_are_rejected_by_the_list_map_key(crds, kube, k8s_namespace):
    body = yaml.safe_load(yaml.safe_dump(TEMPLATE))
    body["metadata"]["name"] = "dupes"
    body["spec"]["techniques"] = [{"name": "dropout"}, {"name": "dropout"}]
    with pytest.raises(ApiException) as info:
        client.CustomObjectsApi(kube).create_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "modeltemplates", body)
    assert info.value.status == 422
    causes = json.loads(info.value.body)["details"]["causes"]
    assert {(c["field"], c["message"].split(":")[0]) for c in causes} == {("spec.techniques[1]", "Duplicate value")}


def test_the_job_controller_runs_and_the_audit_log_records_requests(control_plane, kube, k8s_namespace):
    start = control_plane.audit_offset()
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    }
    client.BatchV1Api(kube).create_namespaced_job(k8s_namespace, job)
    # No kubelet: the real Job controller still creates the Pod, which stays Pending.
    pods = wait_for(
        lambda: client.CoreV1Api(kube).list_namespaced_pod(k8s_namespace, label_selector="job-name=probe").items,
        what="the Job controller's Pod",
    )
    assert pods[0].status.phase == "Pending"
    events = list(control_plane.audit_events(start))
    creates = {(e["verb"], e["objectRef"]["resource"], e["user"]["username"]) for e in events if e.get("objectRef")}
    assert ("create", "jobs", "modelfleet-envtest-admin") in creates
    assert ("create", "pods", "system:serviceaccount:kube-system:job-controller") in creates


def test_service_account_kubeconfig_is_not_admin(control_plane, k8s_namespace, tmp_path):
    kubeconfig = control_plane.service_account_kubeconfig(k8s_namespace, "reader", tmp_path / "sa.kubeconfig")
    api = client.CoreV1Api(control_plane.api_client(kubeconfig))
    with pytest.raises(ApiException) as info:
        api.list_namespaced_pod(k8s_namespace)
    assert info.value.status == 403
    assert f"system:serviceaccount:{k8s_namespace}:reader" in info.value.body
