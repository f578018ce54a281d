"""The Volcano path (`MODELFLEET_SCHEDULER=kubernetes`) on the real API server, up to where Volcano's
own controllers would be needed: a minimal `batch.volcano.sh/v1alpha1` Job CRD stands in for
Volcano's, and the operator (as the chart's ServiceAccount) creates the Volcano Job, adopts it
after a crash between submit and recording the handle, and deletes it when the run is deleted.
"""

from __future__ import annotations

from kubernetes import client

from envtest import install_crds, wait_for
from operator_process import Fleet, OperatorProcess, install_operator_rbac, tiny_instance, tiny_template

VOLCANO_JOB_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "jobs.batch.volcano.sh"},
    "spec": {
        "group": "batch.volcano.sh",
        "names": {"kind": "Job", "listKind": "JobList", "plural": "jobs", "singular": "job", "shortNames": ["vcjob"]},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def test_volcano_job_is_created_adopted_after_a_crash_and_deleted_with_its_run(control_plane, crds, kube, k8s_namespace, tmp_path):
    path = tmp_path / "volcano-job-crd.yaml"
    import yaml

    path.write_text(yaml.safe_dump(VOLCANO_JOB_CRD))
    install_crds(control_plane, [path])
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path, scheduler="kubernetes")
    volcano = client.CustomObjectsApi(kube)

    def volcano_jobs() -> list[dict]:
        items = volcano.list_namespaced_custom_object("batch.volcano.sh", "v1alpha1", access.system_namespace, "jobs")["items"]
        return [j for j in items if j["metadata"]["labels"].get("modelfleet.dev/run-namespace") == fleet.ns]

    fleet.create(tiny_template("ctr"))
    fleet.create(tiny_instance("feed", "ctr"))
    operator = OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log", scheduler="kubernetes")
    operator.start()
    try:
        run = wait_for(lambda: [r for r in fleet.list("trainingruns") if (r.get("status") or {}).get("appHandle")], 60, what=f"submitted\n{operator.tail()}")[0]
        [job] = volcano_jobs()
        name = run["metadata"]["name"]
        assert run["status"]["appHandle"] == f"kubernetes://modelfleet/{access.system_namespace}:{job['metadata']['name']}"
        assert job["spec"]["queue"] == "q" and job["metadata"]["labels"]["modelfleet.dev/run-uid"] == run["metadata"]["uid"]
        assert job["spec"]["tasks"][0]["template"]["metadata"]["labels"]["modelfleet.dev/run"] == name
        # A crash right after submit, before the handle was written: the next life must adopt.
        operator.kill()
        fleet.custom.patch_namespaced_custom_object_status(
            fleet.GROUP, fleet.VERSION, fleet.ns, "trainingruns", name, {"status": {"appHandle": None, "attempts": 0, "phase": "Pending"}}
        )
        operator.start()
        adopted = wait_for(lambda: (fleet.get("trainingruns", name).get("status") or {}).get("appHandle"), 60, what=f"adopted\n{operator.tail()}")
        assert adopted == run["status"]["appHandle"]
        assert [j["metadata"]["uid"] for j in volcano_jobs()] == [job["metadata"]["uid"]], "adopted, not submitted again"
        assert any(e.reason == "Adopted" for e in fleet.events(name))
        # Deleting the run cancels (deletes) its Volcano Job through the run's finalizer (the
        # planner then makes the run again, with a job of its own).
        fleet.delete("trainingruns", name)
        wait_for(lambda: job["metadata"]["uid"] not in {j["metadata"]["uid"] for j in volcano_jobs()}, 30, what="the Volcano job deleted")
    finally:
        operator.stop()
