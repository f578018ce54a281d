"""Regression tests, on the real API server, for the operator defects it showed and kmock could not
(issue 10, numbered list 1-6 and 8). Each runs `modelfleet operator` as the chart's ServiceAccount
with the kueue scheduler: real suspended Jobs, never admitted unless the test runs the kubelet
stand-in (then the real trainer runs, on tiny synthetic data).
"""

from __future__ import annotations

import contextlib

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from envtest import wait_for
from kubelet_agent import KubeletAgent
from operator_process import Fleet, OperatorProcess, condition, install_operator_rbac, tiny_instance, tiny_template


@contextlib.contextmanager
def running(operator: OperatorProcess):
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def _handle(fleet: Fleet, run: str) -> str | None:
    with contextlib.suppress(ApiException):
        return (fleet.get("trainingruns", run).get("status") or {}).get("appHandle")
    return None


def _only_run(fleet: Fleet) -> dict:
    runs = fleet.list("trainingruns")
    return runs[0] if len(runs) == 1 else {}


def _submitted(fleet: Fleet) -> dict:
    """The namespace's one run once its job is submitted (its handle recorded), else {}."""
    run = _only_run(fleet)
    return run if (run.get("status") or {}).get("appHandle") else {}


@pytest.fixture()
def second_namespace(control_plane):
    import uuid

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def test_1_runs_of_one_name_in_two_namespaces_never_share_or_cancel_each_others_jobs(
    control_plane, crds, kube, k8s_namespace, second_namespace, tmp_path
):
    a, b = Fleet(kube, k8s_namespace), Fleet(kube, second_namespace)
    access = install_operator_rbac(control_plane, [a.ns, b.ns], tmp_path)
    for fleet in (a, b):  # the very same manifests: the same run names in both namespaces
        fleet.create(tiny_template("ctr"))
        fleet.create(tiny_instance("feed", "ctr"))
    with running(OperatorProcess(access, [a.ns, b.ns], tmp_path / "out", tmp_path / "operator.log")) as op:
        ra, rb = wait_for(lambda: _submitted(a) and _submitted(b) and (_submitted(a), _submitted(b)), 60, what=f"both runs submitted\n{op.tail()}")
        assert ra["metadata"]["name"] == rb["metadata"]["name"]
        assert ra["status"]["appHandle"] != rb["status"]["appHandle"], "each run has its own job"
        [ja], [jb] = a.jobs(access.system_namespace), b.jobs(access.system_namespace)
        assert ja.metadata.labels["modelfleet.dev/run-uid"] == ra["metadata"]["uid"]
        assert jb.metadata.labels["modelfleet.dev/run-uid"] == rb["metadata"]["uid"]
        assert ra["status"]["appHandle"].endswith(":" + ja.metadata.name)
        # Deleting A's run cancels A's job only.
        a.delete("trainingruns", ra["metadata"]["name"])
        wait_for(lambda: not [j for j in a.jobs(access.system_namespace) if j.metadata.uid == ja.metadata.uid], 30, what="A's job deleted")
        assert [j.metadata.uid for j in b.jobs(access.system_namespace)] == [jb.metadata.uid]
        assert _handle(b, rb["metadata"]["name"]) == rb["status"]["appHandle"]


def test_2_a_template_name_over_63_characters_keeps_its_rollout_policy_and_failed_jobs_are_deleted(
    control_plane, crds, kube, k8s_namespace, tmp_path
):
    fleet = Fleet(kube, k8s_namespace)
    name = "ranking-" + "x" * 70  # a valid object name, too long for a label value
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path)
    fleet.create(tiny_template(name, maxRetries=0))
    fleet.create(tiny_instance("feed", name))
    # The container crashes (exit 1, not one of the trainer's permanent codes): the Job fails, so
    # the run fails, for good with maxRetries 0.
    with KubeletAgent(kube, access.system_namespace, tmp_path / "pods", crash=1) as agent:
        with running(OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log")) as op:
            run = wait_for(
                lambda: (r := _only_run(fleet)) and (r.get("status") or {}).get("phase") == "Failed" and r,
                180,
                what=f"the run failed\n{op.tail()}\n{agent.errors[-3:]}",
            )
            assert run["status"]["attempts"] == 1, "maxRetries 0 of the long-named template: no retry"
            assert run["metadata"]["annotations"]["modelfleet.dev/template"] == name
            assert len(run["metadata"]["labels"]["modelfleet.dev/template"]) <= 63
            conds = {c["type"]: c["status"] for c in run["status"]["conditions"]}
            assert (conds["Failed"], conds["Stalled"], conds["Succeeded"], conds["Ready"]) == ("True", "True", "False", "False")
            waited = control_plane.kubectl("wait", "--for=condition=Failed", f"trainingrun/{run['metadata']['name']}", "-n", fleet.ns, "--timeout=30s")
            assert "condition met" in waited.stdout
            # The completion woke the right template: it counts the failure.
            wait_for(lambda: (fleet.get("modeltemplates", name).get("status") or {}).get("failed") == 1, 30, what="the template counts the failure")
            # The failed attempt's Job is deleted, and there only ever was one.
            wait_for(lambda: not fleet.jobs(access.system_namespace), 30, what="the failed job deleted")
    assert len(agent.started) == 1 and list(agent.exit_codes.values()) != [0]
    creates = [
        e for e in control_plane.audit_events()
        if e["verb"] == "create" and (e.get("objectRef") or {}).get("resource") == "jobs"
        and (e.get("objectRef") or {}).get("namespace") == access.system_namespace and e["user"]["username"] == access.username
        and e.get("responseStatus", {}).get("code") == 201
    ]
    assert len(creates) == 1


def test_3_objects_near_the_annotation_limit_get_runs_and_a_rejected_create_is_on_the_template(
    control_plane, crds, kube, k8s_namespace, tmp_path
):
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path)
    template = tiny_template("big")
    template["metadata"]["annotations"] = {"example.com/notes": "n" * 200_000}  # the user's own, 200 kB
    fleet.create(template)
    # 300 kB of column names: a copy of this spec in an annotation is over the 256 KiB limit.
    columns = [f"feature_{i:05d}_" + "c" * 36 for i in range(6000)]
    fleet.create(tiny_instance("wide", "big", data={"format": "synthetic", "sparseColumns": columns}))
    # A quota that forbids every run: the API server rejects the create (403), for good until changed.
    quota = {"metadata": {"name": "no-runs"}, "spec": {"hard": {"count/trainingruns.modelfleet.dev": "0"}}}
    fleet.core.create_namespaced_resource_quota(fleet.ns, quota)
    wait_for(lambda: fleet.core.read_namespaced_resource_quota("no-runs", fleet.ns).status.hard, 30, what="quota computed")
    with running(OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log")) as op:
        ready = wait_for(
            lambda: (c := condition(fleet.get("modeltemplates", "big"))).get("reason") == "ApplyRejected" and c,
            60,
            what=f"ApplyRejected on the template\n{op.tail()}",
        )
        assert "exceeded quota" in ready["message"] or "forbidden" in ready["message"].lower()
        assert condition(fleet.get("modeltemplates", "big"), "Stalled")["status"] == "True"
        assert any(e.reason == "ApplyRejected" and e.type == "Warning" for e in fleet.events("big"))
        fleet.core.delete_namespaced_resource_quota("no-runs", fleet.ns)
        # The next retry (backing off from MODELFLEET_RESYNC_SECONDS) creates the run.
        run = wait_for(lambda: _submitted(fleet), 90, what=f"the run created and submitted\n{op.tail()}")
    annotations = run["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 2048, "no copy of the spec in an annotation"
    assert len(run["spec"]["training"]["data"]["sparseColumns"]) == 6000
    assert condition(fleet.get("modeltemplates", "big"))["reason"] != "ApplyRejected"
    big = fleet.get("modeltemplates", "big")
    assert sum(len(v) for v in big["metadata"]["annotations"].values()) < 201_000  # kopf kept a digest only


def test_4_deleting_a_template_stalls_its_instances_and_cancels_their_runs_and_jobs(control_plane, crds, kube, k8s_namespace, tmp_path):
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path)
    fleet.create(tiny_template("ctr"))
    fleet.create(tiny_instance("feed", "ctr"))
    with running(OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log")) as op:
        run = wait_for(lambda: _submitted(fleet), 60, what=f"the run submitted\n{op.tail()}")
        assert len(fleet.jobs(access.system_namespace)) == 1  # suspended: in flight until admitted
        fleet.delete("modeltemplates", "ctr")
        inst = wait_for(
            lambda: (i := fleet.get("modelinstances", "feed")) and condition(i).get("reason") == "TemplateNotFound" and i,
            30,
            what=f"TemplateNotFound on the instance\n{op.tail()}",
        )
        assert condition(inst, "Stalled")["status"] == "True" and "'ctr'" in condition(inst)["message"]
        done = wait_for(
            lambda: (r := fleet.get("trainingruns", run["metadata"]["name"]))["status"].get("phase") == "Cancelled" and r,
            30,
            what="the run cancelled",
        )
        assert done["status"]["reason"] == "TemplateNotFound"
        wait_for(lambda: not fleet.jobs(access.system_namespace), 30, what="its job deleted")


def test_5_problem_paths_are_the_users_and_a_templates_problem_stays_the_templates(control_plane, crds, kube, k8s_namespace, tmp_path):
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path)
    # task-weighting is written first (index 0) but sorts after dropout by name.
    fleet.create(tiny_template("bad", techniques=[{"name": "task-weighting", "params": {"weights": {"nope": 2.0}}}, {"name": "dropout"}]))
    fleet.create(tiny_instance("feed", "bad"))
    good = tiny_template("heads", techniques=[{"name": "attention-interaction", "params": {"heads": 2}}])
    good["spec"]["overridable"] = ["architecture.embedding.dim"]
    fleet.create(good)
    fleet.create(tiny_instance("odd", "heads", overrides={"architecture.embedding.dim": 3}))
    with running(OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log")) as op:
        t = wait_for(lambda: (c := condition(fleet.get("modeltemplates", "bad"))).get("status") == "False" and c, 60, what=f"the template's problem\n{op.tail()}")
        assert t["message"].startswith("spec.techniques[0].params.weights.nope"), t
        i = wait_for(lambda: (c := condition(fleet.get("modelinstances", "feed"))).get("reason") == "TemplateInvalid" and c, 60, what="the instance says why")
        assert "'bad'" in i["message"] and "spec.techniques" not in i["message"]
        o = wait_for(lambda: (c := condition(fleet.get("modelinstances", "odd"))).get("status") == "False" and c, 60, what="the override's problem")
        assert o["message"].startswith("spec.overrides['architecture.embedding.dim']") and "spec.architecture" not in o["message"], o
    assert not fleet.list("trainingruns")


def test_6_a_template_whose_only_instance_is_blocked_is_not_ready(control_plane, crds, kube, k8s_namespace, tmp_path):
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path)
    fleet.create(tiny_template("ctr"))
    fleet.create(tiny_instance("feed", "ctr", servingBudget={"maxFlopsPerExample": 1}))
    with running(OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log")) as op:
        t = wait_for(lambda: (o := fleet.get("modeltemplates", "ctr")).get("status", {}).get("blocked") == 1 and o, 60, what=f"the template counts it\n{op.tail()}")
        ready = condition(t)
        assert (ready["status"], ready["reason"]) == ("False", "InstancesBlocked") and "feed" in ready["message"]
        assert condition(fleet.get("modelinstances", "feed"))["reason"] == "BudgetExceeded"
