"""The README's path on a real API server: the quickstart, rolled out by `modelfleet operator`.

The operator runs as users start it (a subprocess with a kubeconfig for the chart's
least-privilege ServiceAccount), schedules through `kueue` (real suspended Indexed Jobs created in
its own namespace), the test admits them (Kueue's part) and runs their Pods for real on this
machine (the kubelet's part, `kubelet_agent.py`): the real Job controller completes the Jobs, the
real trainer writes metrics.json, and the operator gates and promotes -- canary, then waves of two.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from kubernetes import client

from envtest import wait_for
from kubelet_agent import KubeletAgent
from operator_process import OperatorProcess, install_operator_rbac

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"
GROUP, VERSION = "modelfleet.dev", "v1alpha1"


def quickstart_docs() -> list[dict]:
    """examples/quickstart with its data URIs made absolute (readable by the trainer's cwd)."""
    docs = []
    for path in sorted(QUICKSTART.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ModelInstance":
                doc["spec"]["data"]["trainUri"] = str(QUICKSTART / doc["spec"]["data"]["trainUri"])
            if doc:
                docs.append(doc)
    return docs


def _ready(obj: dict) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def test_quickstart_rolls_out_through_kueue_jobs_on_the_real_server(control_plane, crds, kube, k8s_namespace, tmp_path):
    ns = k8s_namespace
    access = install_operator_rbac(control_plane, ns, tmp_path, scheduler="kueue")
    control_plane.apply(quickstart_docs(), namespace=ns)
    api = client.CustomObjectsApi(kube)
    batch = client.BatchV1Api(kube)
    out = tmp_path / "models"
    operator = OperatorProcess(access, ns, out, tmp_path / "operator.log", scheduler="kueue")

    def template() -> dict:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, "modeltemplates", "adult-ctr")

    with KubeletAgent(kube, access.system_namespace, tmp_path / "pods") as agent:
        operator.start()
        try:
            wait_for(
                lambda: _ready(template()).get("reason") == "RolloutComplete" and _ready(template())["status"] == "True",
                timeout=900,
                interval=2,
                what=f"RolloutComplete (operator log:\n{operator.tail()}\nagent errors: {agent.errors[-3:]})",
            )
        finally:
            operator.stop()

    status = template()["status"]
    assert (status["instances"], status["upToDate"], status["rolloutPhase"]) == (4, 4, "Complete")
    instances = api.list_namespaced_custom_object(GROUP, VERSION, ns, "modelinstances")["items"]
    runs = api.list_namespaced_custom_object(GROUP, VERSION, ns, "trainingruns")["items"]
    assert len(runs) == 4
    for inst in instances:
        ready = _ready(inst)
        assert (ready["status"], ready["reason"]) == ("True", "Promoted"), inst["metadata"]["name"]
        assert inst["status"]["promotedRevision"] == inst["status"]["targetRevision"]
    waves = sorted(int(r["metadata"]["labels"]["modelfleet.dev/wave"]) for r in runs)
    assert waves == [1, 2, 2, 3], "a canary, then waves of two (maxConcurrentRuns)"
    for run in runs:
        st = run["status"]
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert st["phase"] == "Succeeded" and conds["Succeeded"] == "True" and conds["Ready"] == "True"
        assert st["observedGeneration"] == run["metadata"]["generation"]
        # The NE the operator gated on is the one the real trainer wrote.
        written = json.loads((Path(run["spec"]["training"]["outputUri"]) / "metrics.json").read_text())
        assert abs(st["metrics"]["ne"] - written["ne"]) < 1e-9
        assert st["appHandle"].startswith(f"kueue://modelfleet/{access.system_namespace}:")

    # kstatus and `kubectl wait` read the run's conditions.
    waited = control_plane.kubectl("wait", "--for=condition=Succeeded", "trainingruns", "--all", "-n", ns, "--timeout=30s")
    assert waited.stdout.count("condition met") == 4

    # Real Indexed Jobs, admitted from suspended, completed by the real Job controller: one per run.
    jobs = batch.list_namespaced_job(access.system_namespace, label_selector=f"modelfleet.dev/run-namespace={ns}").items
    assert sorted(j.metadata.labels["modelfleet.dev/run"] for j in jobs) == sorted(r["metadata"]["name"] for r in runs)
    for job in jobs:
        assert job.spec.completion_mode == "Indexed" and job.metadata.labels["kueue.x-k8s.io/queue-name"] == "q"
        assert job.metadata.labels["modelfleet.dev/run-uid"] in {r["metadata"]["uid"] for r in runs}
        assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
    assert sorted(agent.admitted) == sorted(j.metadata.name for j in jobs)
    assert set(agent.exit_codes.values()) == {0} and len(agent.exit_codes) == 4

    # Every write to our resources came from the operator's ServiceAccount, none from an admin.
    writes = [
        e
        for e in control_plane.audit_events()
        if e.get("verb") in ("create", "patch", "update", "delete")
        and (e.get("objectRef") or {}).get("apiGroup") == GROUP
        and (e.get("objectRef") or {}).get("namespace") == ns
        and (e.get("objectRef") or {}).get("resource") == "trainingruns"
    ]
    assert writes and {e["user"]["username"] for e in writes} == {access.username}
