"""The README's Helm + kubectl path on a real API server, up to where a kubelet would be needed.

`helm upgrade --install modelfleet charts/modelfleet -n modelfleet-system --create-namespace --set ...`
is rendered by the real Helm library (helm-python-sdk: what `helm install` renders; it has no
release storage, so the objects are applied with kubectl, CRDs first as Helm does), into a
namespace that enforces Pod Security "restricted" — the real PodSecurity admission then checks the
operator's Pod when the real ReplicaSet controller creates it. Then `kubectl apply -f
examples/quickstart/` and `kubectl get modelfleet` as the README says.
"""

from __future__ import annotations

import re
import uuid
import sys
from pathlib import Path

import yaml
from kubernetes import client

from envtest import install_crds, wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "chart"))

import chart_tools  # noqa: E402

# The README's namespace, made unique: the control plane is shared by the whole session.
NAMESPACE = f"modelfleet-system-{uuid.uuid4().hex[:6]}"
README_SETS = {
    "operator": {
        "scheduler": "kueue",
        "queue": "team-a",
        "trainerImage": "ghcr.io/modelfleet/trainer:0.1.0",
        "outputUri": "s3://models/modelfleet",
    }
}


def test_readme_helm_command_matches_what_is_applied_here():
    readme = (REPO / "README.md").read_text()
    command = readme[readme.index("helm upgrade --install") :].split("\n\n", 1)[0]
    sets = dict(re.findall(r"--set (operator\.\w+)=(\S+)", command))
    assert set(sets) == {f"operator.{k}" for k in README_SETS["operator"]}
    assert "-n modelfleet-system --create-namespace" in command and "kubectl apply -f examples/quickstart/" in command


def test_chart_installs_and_the_quickstart_applies(control_plane, kube, tmp_path):
    core = client.CoreV1Api(kube)
    core.create_namespace(
        {"metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    chart = chart_tools.chart()
    crd_files = []
    for crd in chart.crds:
        path = tmp_path / Path(crd["name"]).name
        path.write_text(crd["data"] if isinstance(crd["data"], str) else crd["data"].decode())
        crd_files.append(path)
    assert sorted(install_crds(control_plane, crd_files)) == [
        "modelinstances.modelfleet.dev", "modeltemplates.modelfleet.dev", "trainingruns.modelfleet.dev"
    ]
    rendered = chart.render(README_SETS, name="modelfleet", namespace=NAMESPACE, is_install=True)
    docs = [d for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            d.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
    out = control_plane.apply(docs)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds, kinds
    assert out.count("serverside-applied") == len(docs), out

    # The real ReplicaSet controller creates the operator's Pod and the real PodSecurity admission
    # lets it into a "restricted" namespace; it stays Pending (no scheduler, no kubelet here).
    pods = wait_for(
        lambda: core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=modelfleet").items,
        timeout=60, what="the operator's Pod",
    )
    assert pods[0].status.phase == "Pending"
    ctx = pods[0].spec.containers[0].security_context
    assert ctx.read_only_root_filesystem and ctx.run_as_non_root and not ctx.allow_privilege_escalation

    fleet = f"fleet-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", fleet)
    applied = control_plane.kubectl("apply", "-n", fleet, "-f", str(REPO / "examples" / "quickstart")).stdout
    assert applied.count("created") == 5, applied
    listed = control_plane.kubectl("get", "modelfleet", "-n", fleet, "-o", "name").stdout.split()
    assert sorted(listed) == sorted(
        ["modeltemplate.modelfleet.dev/adult-ctr"]
        + [f"modelinstance.modelfleet.dev/adult-{n}" for n in ("husband", "wife", "unmarried", "not-in-family")]
    )
