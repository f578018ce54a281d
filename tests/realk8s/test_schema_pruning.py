"""Unknown fields on the real API server: who refuses them, who prunes them silently, what trace
of them survives -- and that the operator reports them from that trace (`UnknownFields`).

Found here (kube-apiserver v1.28, kubectl's defaults):
- `kubectl apply`/`create` ask for Strict field validation: refused, the field named.
- `kubectl apply --server-side`, even with `--validate=false`: refused (the typed patch has no
  place for the field).
- `kubectl apply --validate=false` (client-side): stored without the field; the
  last-applied-configuration annotation keeps what the user wrote.
- `kubectl patch`, and API clients that do not ask (the server's default is Warn): stored without
  the field, a warning header only. With fieldValidation=Ignore, not even that.
- managedFields record only what was stored, so they never show a pruned field.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from schema_cases import INSTANCE, create, get, refusal, with_

from modelfleet.api.resources import ModelInstance, ModelTemplate
from modelfleet.operator import apply, kube as opkube, planner
from modelfleet.operator import status as st
from modelfleet.operator.validation import LAST_APPLIED, unknown_fields, validate_instance

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "examples" / "quickstart" / "template.yaml"
BUDGET = {"maxFlopsPerExample": 1_000_000}
# The quickstart template, and an instance of it with its serving budget spelt wrong.
TYPO = with_(with_(INSTANCE, "spec.templateRef", {"name": "adult-ctr"}), "spec.servingBugdet", BUDGET)
GOOD = with_(with_(INSTANCE, "spec.templateRef", {"name": "adult-ctr"}), "spec.servingBudget", BUDGET)


def _kubectl_apply(control_plane, namespace: str, doc: dict, *args: str, check: bool = True):
    return control_plane.kubectl("apply", "-n", namespace, *args, "-f", "-", input=yaml.safe_dump(doc), check=check)


def _stored(kube, namespace: str) -> dict:
    return get(kube, namespace, "ModelInstance", INSTANCE["metadata"]["name"])


def test_server_side_apply_refuses_unknown_fields_even_without_validation(control_plane, crds, k8s_namespace):
    out = _kubectl_apply(control_plane, k8s_namespace, TYPO, "--server-side", "--validate=false", check=False)
    assert out.returncode != 0
    assert ".spec.servingBugdet: field not declared in schema" in out.stderr


def test_strict_client_side_apply_refuses_them(control_plane, crds, k8s_namespace):
    out = _kubectl_apply(control_plane, k8s_namespace, TYPO, check=False)
    assert out.returncode != 0 and 'unknown field "spec.servingBugdet"' in out.stderr


def test_client_side_apply_without_validation_prunes_but_the_annotation_remembers(control_plane, crds, kube, k8s_namespace):
    _kubectl_apply(control_plane, k8s_namespace, TYPO, "--validate=false")
    stored = _stored(kube, k8s_namespace)
    assert "servingBugdet" not in stored["spec"] and "servingBudget" not in stored["spec"]
    assert "servingBugdet" in json.loads(stored["metadata"]["annotations"][LAST_APPLIED])["spec"]
    assert "servingBugdet" not in json.dumps(stored["metadata"]["managedFields"])
    assert unknown_fields(stored, ModelInstance) == ["spec.servingBugdet"]


def test_a_typo_in_a_reapply_drops_the_field_it_meant_and_is_reported(control_plane, crds, kube, k8s_namespace):
    _kubectl_apply(control_plane, k8s_namespace, GOOD)
    assert _stored(kube, k8s_namespace)["spec"]["servingBudget"] == BUDGET
    # kubectl's three-way merge removes the budget the last apply had; the server prunes the typo
    _kubectl_apply(control_plane, k8s_namespace, TYPO, "--validate=false")
    stored = _stored(kube, k8s_namespace)
    assert "servingBudget" not in stored["spec"]
    assert unknown_fields(stored, ModelInstance) == ["spec.servingBugdet"]
    # the fix, applied again, clears the report
    _kubectl_apply(control_plane, k8s_namespace, GOOD)
    stored = _stored(kube, k8s_namespace)
    assert stored["spec"]["servingBudget"] == BUDGET and unknown_fields(stored, ModelInstance) == []


@pytest.mark.parametrize("field_validation", ["Ignore", "Warn"])
def test_a_plain_create_without_strict_validation_leaves_no_trace(crds, kube, k8s_namespace, field_validation):
    stored = create(kube, k8s_namespace, TYPO, field_validation=field_validation)
    assert "servingBugdet" not in stored["spec"] and not stored["metadata"].get("annotations")
    assert "servingBugdet" not in json.dumps(stored["metadata"]["managedFields"])
    assert unknown_fields(stored, ModelInstance) == []  # nobody can tell any more


def test_kubectl_patch_only_warns(control_plane, crds, kube, k8s_namespace):
    create(kube, k8s_namespace, GOOD)
    out = control_plane.kubectl(
        "patch", "modelinstance", INSTANCE["metadata"]["name"], "-n", k8s_namespace, "--type", "merge",
        "-p", json.dumps({"spec": {"servingBugdet": BUDGET}}),
    )
    assert 'Warning: unknown field "spec.servingBugdet"' in out.stderr
    assert "servingBugdet" not in _stored(kube, k8s_namespace)["spec"]


def test_the_operator_stalls_the_instance_and_warns_naming_the_fields(control_plane, crds, kube, k8s_namespace):
    control_plane.apply(TEMPLATE, server_side=True, namespace=k8s_namespace)
    typo = with_(TYPO, "spec.data", {"format": "synthetic", "synthetic": {"rows": 200, "rowz": 3}})
    _kubectl_apply(control_plane, k8s_namespace, typo, "--validate=false")
    stored = _stored(kube, k8s_namespace)
    template = ModelTemplate.model_validate(get(kube, k8s_namespace, "ModelTemplate", "adult-ctr"))
    instance = ModelInstance.model_validate(stored)

    [problem] = validate_instance(instance, template)
    assert problem.reason == "UnknownFields" and problem.field == "spec.data.synthetic.rowz"
    assert problem.message.startswith("spec.data.synthetic.rowz, spec.servingBugdet: not in the ModelInstance schema")

    # the planner's decision, written to the real server by the operator's store
    store = opkube.KubeStore(kube, k8s_namespace)
    now = dt.datetime.now(dt.UTC)
    plan = planner.plan_template(template, [instance], [], now, output_uri="memory://out", image="img")
    apply.apply_plan(plan, store)
    status = _stored(kube, k8s_namespace)["status"]
    stalled = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert stalled == {"Ready": ("False", "UnknownFields"), "Reconciling": ("False", "UnknownFields"), "Stalled": ("True", "UnknownFields")}
    assert st.find(status["conditions"], "Stalled")["message"] == problem.message
    events = [e for e in store._core.list_namespaced_event(k8s_namespace).items if e.involved_object.name == INSTANCE["metadata"]["name"]]
    assert [(e.type, e.reason, e.message) for e in events] == [("Warning", "UnknownFields", problem.message)]
    assert not store.list("TrainingRun")  # nothing trains on a spec the user did not write
