"""TrainingRun status.progress on a real API server: the operator's patch is accepted by the CRD's
schema, kubectl shows it in the PROGRESS column (STEP and ETA with -o wide), nonsense is refused."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelfleet.api.resolve import resolve_training_spec
from modelfleet.api.resources import ModelInstance, ModelTemplate, TrainingRun, TrainingRunSpec
from modelfleet.operator.runs import reconcile_run
from modelfleet.trainer.progress import ProgressWriter

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


class Running:
    """A launcher whose one job is running (the kubelet and the scheduler cannot run here)."""

    scheduler = "fake"

    def find(self, run, attempt, *, labels=None):
        return "fake://job"

    def state(self, handle):
        return "RUNNING"


def test_progress_patch_is_served_with_the_progress_column(control_plane, crds, kube, k8s_namespace, tmp_path):
    template = ModelTemplate.model_validate(yaml.safe_load((QUICKSTART / "template.yaml").read_text()))
    inst = ModelInstance.model_validate(yaml.safe_load((QUICKSTART / "instance-wife.yaml").read_text()))
    out = str(tmp_path / "run")
    spec = TrainingRunSpec(instance="adult-wife", revision="r1", training=resolve_training_spec(template, inst, output_uri=out))
    body = {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "adult-wife-r1"},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
    api = client.CustomObjectsApi(kube)
    api.create_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", body)
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    got = api.get_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", "adult-wife-r1")
    submitted = reconcile_run(TrainingRun.model_validate(got), Running(), now).status_patch  # adopts the job
    api.patch_namespaced_custom_object_status("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", "adult-wife-r1", {"status": submitted})

    # the trainer reported step 90 of 186; the operator's reconcile turns it into its status patch
    clock = [0.0]
    writer = ProgressWriter(out, 186, 0, clock=lambda: clock[0])
    clock[0] = 45.0
    writer.update(90, epoch=1, loss=0.5364, examples=90 * 256)
    got = api.get_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", "adult-wife-r1")
    patch = reconcile_run(TrainingRun.model_validate(got), Running(), now).status_patch
    assert patch["progress"]["progressPercentage"] == 48
    api.patch_namespaced_custom_object_status("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", "adult-wife-r1", {"status": patch})

    stored = api.get_namespaced_custom_object("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", "adult-wife-r1")
    assert stored["status"]["progress"] == patch["progress"]  # nothing pruned by the schema
    kubeconfig = str(control_plane.admin_kubeconfig)
    table = control_plane.kubectl("get", "mfrun", "-n", k8s_namespace, "--kubeconfig", kubeconfig).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:5] == ["NAME", "INSTANCE", "REVISION", "PHASE", "PROGRESS"]
    assert row[:5] == ["adult-wife-r1", "adult-wife", "r1", "Running", "48"]
    wide = control_plane.kubectl("get", "mfrun", "-n", k8s_namespace, "-o", "wide", "--kubeconfig", kubeconfig).stdout.splitlines()
    cells = _table(wide[0], wide[1])
    assert cells["STEP"] == "90" and cells["ETA (S)"] == "48"  # 96 steps left at 2 steps/s

    bad = json.loads(json.dumps(patch))
    bad["progress"]["progressPercentage"] = 150
    with pytest.raises(ApiException) as info:
        api.patch_namespaced_custom_object_status("modelfleet.dev", "v1alpha1", k8s_namespace, "trainingruns", "adult-wife-r1", {"status": bad})
    assert info.value.status == 422 and "progressPercentage" in info.value.body


def _table(header: str, line: str) -> dict[str, str]:
    """A kubectl row by its header's column positions (a name may hold one space: "ETA (S)")."""
    starts = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [s for s, _ in starts[1:]] + [None]
    return {name: line[a:b].strip() for (a, name), b in zip(starts, ends, strict=True)}
