"""The CRDs install on the real API server, from crds/ and as the Helm chart ships them, and
what they declare for kubectl (printer columns, short names, the `modelfleet` category) is what
the server serves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from kubernetes import client
from schema_cases import GOOD, GROUP, VERSION, create, with_

from envtest import install_crds, wait_for
from modelfleet.api.resources import BY_KIND

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from chart_tools import chart  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
BY_KIND_SHORT = {r.short_names[0]: r.singular for r in BY_KIND.values()}


def _conditions(ext, name: str) -> dict[str, str]:
    crd = ext.read_custom_resource_definition(name)
    return {c.type: c.status for c in crd.status.conditions or []}


def test_crds_from_crds_folder_are_established_as_written(crds, kube):
    ext = client.ApiextensionsV1Api(kube)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        ours = yaml.safe_load(path.read_text())
        assert _conditions(ext, ours["metadata"]["name"]) | {"Established": "True", "NamesAccepted": "True"} == _conditions(ext, ours["metadata"]["name"])
        served = kube.sanitize_for_serialization(ext.read_custom_resource_definition(ours["metadata"]["name"]))
        # the server keeps the schema as generated: nothing dropped, nothing it had to rewrite
        assert served["spec"]["versions"][0]["schema"] == ours["spec"]["versions"][0]["schema"]
        assert served["spec"]["versions"][0]["additionalPrinterColumns"] == ours["spec"]["versions"][0]["additionalPrinterColumns"]


def test_the_charts_crds_install_and_are_established(control_plane, kube, tmp_path):
    # The chart's files under another group (so they install beside crds/'s, not over them):
    # the very schemas `helm install` would send, accepted by the server's CEL cost estimator.
    shipped = chart().crds
    assert len(shipped) == 3
    paths = []
    for i, crd in enumerate(shipped):
        text = crd["data"].replace(f".{GROUP}", f".chart.{GROUP}").replace(f"group: {GROUP}", f"group: chart.{GROUP}")
        path = tmp_path / f"{i}.yaml"
        path.write_text(text)
        paths.append(path)
    names = install_crds(control_plane, paths)
    assert sorted(names) == [f"{r.plural}.chart.{GROUP}" for r in sorted(BY_KIND.values(), key=lambda r: r.plural)]
    ext = client.ApiextensionsV1Api(kube)
    for name in names:
        assert _conditions(ext, name)["Established"] == "True"
        ext.delete_custom_resource_definition(name)


def _table(kube, namespace: str, plural: str) -> dict:
    url = f"{kube.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    resp = kube.call_api("GET", url, header_params={"Accept": TABLE})
    resp.read()
    return json.loads(resp.data)


def _status(kube, namespace: str, kind: str, name: str, status: dict) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, BY_KIND[kind].plural, name, {"status": status}
    )


READY = {"type": "Ready", "status": "True", "reason": "Promoted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_printer_columns_come_back_in_a_table(crds, kube, k8s_namespace):
    for kind in ("ModelTemplate", "ModelInstance", "TrainingRun"):
        create(kube, k8s_namespace, GOOD[kind])
    _status(kube, k8s_namespace, "ModelTemplate", "ctr", {
        "revision": "abcdef0123", "upToDate": 1, "instances": 3, "training": 1, "failed": 0, "blocked": 1,
        "rolloutPhase": "Rolling", "conditions": [{**READY, "status": "False", "reason": "RollingOut"}],
    })
    _status(kube, k8s_namespace, "ModelInstance", "ctr-feed", {
        "promotedRevision": "0123456789", "targetRevision": "9876543210", "activeRun": "ctr-feed-9876543210",
        "metrics": {"ne": 0.8125, "auc": 0.75}, "conditions": [READY],
    })
    _status(kube, k8s_namespace, "TrainingRun", "ctr-feed-0123456789", {
        "phase": "Succeeded", "attempts": 2, "appHandle": "kueue://modelfleet/ns:job", "reason": "Completed",
        "metrics": {"ne": 0.8125}, "startTime": "2026-01-01T00:00:00Z", "finishTime": "2026-01-01T01:00:00Z",
    })
    want = {
        "modeltemplates": {"Revision": "abcdef0123", "Up-To-Date": 1, "Total": 3, "Ready": "False", "Training": 1,
                           "Failed": 0, "Blocked": 1, "Phase": "Rolling", "Reason": "RollingOut"},
        "modelinstances": {"Template": "ctr", "Revision": "0123456789", "NE": 0.8125, "Ready": "True",
                           "Target": "9876543210", "Run": "ctr-feed-9876543210", "AUC": 0.75, "Event": "click",
                           "Reason": "Promoted"},
        "trainingruns": {"Instance": "ctr-feed", "Revision": "0123456789", "Phase": "Succeeded", "NE": 0.8125,
                         "Attempts": 2, "App": "kueue://modelfleet/ns:job", "Reason": "Completed"},
    }
    for plural, values in want.items():
        table = _table(kube, k8s_namespace, plural)
        assert table["kind"] == "Table"
        columns = [c["name"] for c in table["columnDefinitions"]]
        kind = next(r for r in BY_KIND.values() if r.plural == plural)
        assert columns == ["Name", *(c["name"] for c in kind.printer_columns)]
        [row] = table["rows"]
        cells = dict(zip(columns, row["cells"], strict=True))
        assert {k: cells[k] for k in values} == values
        assert cells["Age"] and cells["Name"] == GOOD[kind.kind_name]["metadata"]["name"]
        # date columns come back as the time since (e.g. "334d"), not the timestamp
        for column in (c["name"] for c in kind.printer_columns if c["type"] == "date" and c["name"] != "Age"):
            assert cells[column] and cells[column][-1] in "smhdy", (column, cells[column])
        # `kubectl get` shows the priority-0 columns; `-o wide` adds the others
        narrow = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
        assert narrow == ["Name", *(c["name"] for c in kind.printer_columns if not c.get("priority"))]


def test_kubectl_get_modelfleet_lists_all_three_kinds_and_short_names_work(control_plane, crds, kube, k8s_namespace, tmp_path):
    for kind in ("ModelTemplate", "ModelInstance", "TrainingRun"):
        create(kube, k8s_namespace, with_(GOOD[kind], "metadata.labels", {"app": "x"}))
    # a fresh discovery cache: kubectl cached the server's resources before the CRDs existed
    get = ("get", "--cache-dir", str(tmp_path), "-n", k8s_namespace, "-o", "name")
    out = control_plane.kubectl(*get, "modelfleet").stdout.split()
    assert sorted(out) == sorted([
        f"modeltemplate.{GROUP}/ctr", f"modelinstance.{GROUP}/ctr-feed", f"trainingrun.{GROUP}/ctr-feed-0123456789",
    ])
    for short, name in (("mt", "ctr"), ("mi", "ctr-feed"), ("mfrun", "ctr-feed-0123456789")):
        assert control_plane.kubectl(*get, short).stdout.split() == [f"{BY_KIND_SHORT[short]}.{GROUP}/{name}"]


def test_upgrading_the_crds_over_longer_names_refuses_their_updates_not_their_deletion(control_plane, kube, tmp_path):
    # Kubernetes 1.28 has no validation ratcheting: an object stored before a rule existed fails
    # it on every update (status and metadata too) until it is deleted. docs/deploy.md says how to
    # find such objects before upgrading. Under another group, to leave crds/'s CRDs alone.
    group = f"upgrade.{GROUP}"
    text = (ROOT / "crds" / "modelfleet.dev_modelinstances.yaml").read_text().replace(f".{GROUP}", f".{group}").replace(f"group: {GROUP}", f"group: {group}")
    new = yaml.safe_load(text)
    old = json.loads(json.dumps(new))
    del old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    path = tmp_path / "crd.yaml"
    path.write_text(yaml.safe_dump(old))
    [crd_name] = install_crds(control_plane, [path])
    api = client.CustomObjectsApi(kube)
    name = "i" * 60
    body = with_(GOOD["ModelInstance"], "metadata.name", name) | {"apiVersion": f"{group}/{VERSION}"}
    try:
        api.create_namespaced_custom_object(group, VERSION, "default", "modelinstances", body)
        path.write_text(yaml.safe_dump(new))
        install_crds(control_plane, [path])
        ready = {"status": {"conditions": [READY]}}

        def refused() -> bool:
            try:
                api.patch_namespaced_custom_object_status(group, VERSION, "default", "modelinstances", name, ready)
            except client.exceptions.ApiException as exc:
                return exc.status == 422 and "metadata.name must be at most 52 characters" in exc.body
            return False

        assert wait_for(refused, what="the new rule in force")
        api.delete_namespaced_custom_object(group, VERSION, "default", "modelinstances", name)
        assert wait_for(lambda: not api.list_namespaced_custom_object(group, VERSION, "default", "modelinstances")["items"], what="deleted")
    finally:
        client.ApiextensionsV1Api(kube).delete_custom_resource_definition(crd_name)
