"""`unknown_fields`: what kubectl's last-applied-configuration shows of fields the API server pruned
(the real server's side: tests/realk8s/test_schema_pruning.py)."""

from __future__ import annotations

import json

from op_world import instance, template

from modelfleet.api.resources import ModelInstance, ModelTemplate
from modelfleet.operator.validation import LAST_APPLIED, unknown_fields, validate_instance, validate_template


def _applied(doc: dict) -> dict:
    return {"metadata": {"name": "x", "annotations": {LAST_APPLIED: json.dumps(doc) + "\n"}}}


def test_paths_of_unknown_fields_at_any_depth_in_list_items_too():
    doc = {
        "apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelTemplate", "metadata": {"name": "t", "annotations": {}},
        "spec": {
            "techniques": [{"name": "dropout"}, {"name": "ema", "parms": {"decay": 0.9}}],
            "rollout": {"maxConcurentRuns": 3, "canary": {"count": 1}},
            "architecture": {"tasks": [{"name": "click", "wieght": 2}]},
        },
    }
    assert unknown_fields(_applied(doc), ModelTemplate) == [
        "spec.architecture.tasks[0].wieght", "spec.rollout.maxConcurentRuns", "spec.techniques[1].parms",
    ]


def test_free_form_fields_and_good_manifests_are_not_reported():
    doc = {"spec": {"templateRef": {"name": "t"}, "event": "click", "data": {"format": "synthetic"},
                    "overrides": {"recipe.anything": 1}, "servingBudget": {"maxFlopsPerExample": 10}}}
    assert unknown_fields(_applied(doc), ModelInstance) == []
    tmpl = {"spec": {"techniques": [{"name": "lowrank-cross", "params": {"whatever": 1}}]}}
    assert unknown_fields(_applied(tmpl), ModelTemplate) == []


def test_no_annotation_or_an_unreadable_one_reports_nothing():
    assert unknown_fields({"metadata": {"name": "x"}}, ModelInstance) == []
    assert unknown_fields({}, ModelInstance) == []
    assert unknown_fields({"metadata": {"annotations": {LAST_APPLIED: "{not json"}}}, ModelInstance) == []
    assert unknown_fields({"metadata": {"annotations": {LAST_APPLIED: "[1, 2]"}}}, ModelInstance) == []


def test_other_errors_in_the_applied_manifest_do_not_hide_unknown_fields():
    doc = {"spec": {"event": "", "data": {"format": "avro"}, "servingBugdet": {}}}
    assert unknown_fields(_applied(doc), ModelInstance) == ["spec.servingBugdet"]


def test_validation_reports_them_first_as_unknown_fields():
    t = template()
    applied = {"spec": {"templateRef": {"name": "ctr"}, "event": "click", "data": {"format": "synthetic"}, "servingBugdet": {}}}
    i = instance("a")
    i.metadata.annotations[LAST_APPLIED] = json.dumps(applied)
    [p] = validate_instance(i, t)
    assert (p.reason, p.field) == ("UnknownFields", "spec.servingBugdet")
    assert p.message == (
        "spec.servingBugdet: not in the ModelInstance schema; the API server dropped it "
        "(applied without strict field validation). Fix the manifest and apply it again"
    )
    assert validate_instance(i, None)[0].reason == "UnknownFields"  # before TemplateNotFound
    t.metadata.annotations[LAST_APPLIED] = json.dumps({"spec": {"rollout": {"pasued": True}}})
    [p] = validate_template(t)
    assert (p.reason, p.field) == ("UnknownFields", "spec.rollout.pasued")
