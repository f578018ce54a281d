"""Every schema and CEL rule of the CRDs, on the real API server: bad input is refused with the
field named, and the API models (what `modelfleet local`/`plan` read manifests with) refuse the
same input -- with the very same message where the rule is CEL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from schema_cases import GOOD, INSTANCE, RUN, TEMPLATE, create, get, refusal, replace, with_

from modelfleet.api.resources import BY_KIND, CANARY_WITHIN_CONCURRENCY, MAX_INSTANCE_NAME, ModelInstance
from modelfleet.operator.naming import run_name
from modelfleet.trainer.spec import TRAIN_URI_REQUIRED

CANARY = CANARY_WITHIN_CONCURRENCY
LONG_INSTANCE = "i" * (MAX_INSTANCE_NAME + 1)
LONG_RUN = "r" * 64

# (id, object, field the server names, words of its message, CEL message the models repeat or None)
SCHEMA_CASES = [
    ("wrong-type", with_(INSTANCE, "spec.resources.nnodes", "two"), "spec.resources.nnodes", "must be of type integer", None),
    ("missing-required", with_(INSTANCE, "spec.templateRef", delete=True), "spec.templateRef", "Required value", None),
    ("missing-required-nested", with_(RUN, "spec.training.outputUri", delete=True), "spec.training.outputUri", "Required value", None),
    ("bad-enum", with_(INSTANCE, "spec.data.format", "avro"), "spec.data.format", 'Unsupported value: "avro"', None),
    ("bad-policy", with_(TEMPLATE, "spec.rollout.onSupersede", "Ignore"), "spec.rollout.onSupersede", 'Unsupported value: "Ignore"', None),
    ("below-minimum", with_(INSTANCE, "spec.resources.nnodes", 0), "spec.resources.nnodes", "greater than or equal to 1", None),
    ("above-maximum", with_(INSTANCE, "spec.resources.gpusPerNode", 17), "spec.resources.gpusPerNode", "less than or equal to 16", None),
    ("exclusive-minimum", with_(TEMPLATE, "spec.recipe", {"learningRate": 0}), "spec.recipe.learningRate", "greater than 0", None),
    ("bad-pattern", with_(INSTANCE, "spec.templateRef", {"name": "Not_A_Name"}), "spec.templateRef.name", "should match", None),
    ("too-long", with_(INSTANCE, "spec.data.delimiter", ";;"), "spec.data.delimiter", "Too long: may not be longer than 1", None),
    ("empty-uri", with_(INSTANCE, "spec.data.trainUri", ""), "spec.data.trainUri", "at least 1 chars long", None),
    ("too-many-items", with_(TEMPLATE, "spec.architecture", {"bottomMlp": [8] * 17}), "spec.architecture.bottomMlp", "must have at most 16 items", None),
    # point 7: rules that only pydantic enforced before
    ("mlp-width-above", with_(TEMPLATE, "spec.architecture", {"bottomMlp": [64, 65537]}), "spec.architecture.bottomMlp[1]", "less than or equal to 65536", None),
    ("mlp-width-zero", with_(TEMPLATE, "spec.architecture", {"overArch": [0]}), "spec.architecture.overArch[0]", "greater than or equal to 1", None),
    ("task-names-unique", with_(TEMPLATE, "spec.architecture", {"tasks": [{"name": "click"}, {"name": "click"}]}), "spec.architecture.tasks[1]", "Duplicate value", None),
    ("technique-names-unique", with_(TEMPLATE, "spec.techniques", [{"name": "dropout"}, {"name": "dropout", "params": {"p": 0.2}}]), "spec.techniques[1]", "Duplicate value", None),
    # CEL
    ("cel-canary", with_(TEMPLATE, "spec.rollout", {"maxConcurrentRuns": 2, "canary": {"count": 3}}), "spec.rollout.canary.count", CANARY, CANARY),
    ("cel-train-uri", with_(INSTANCE, "spec.data", {"format": "parquet"}), "spec.data.trainUri", TRAIN_URI_REQUIRED, TRAIN_URI_REQUIRED),
    ("cel-train-uri-null", with_(INSTANCE, "spec.data", {"format": "csv", "trainUri": None}), "spec.data.trainUri", TRAIN_URI_REQUIRED, TRAIN_URI_REQUIRED),
    ("cel-train-uri-in-run", with_(RUN, "spec.training.data", {"format": "criteo"}), "spec.training.data.trainUri", TRAIN_URI_REQUIRED, TRAIN_URI_REQUIRED),
    ("cel-instance-name", with_(INSTANCE, "metadata.name", LONG_INSTANCE), "", f"metadata.name must be at most {MAX_INSTANCE_NAME} characters", ModelInstance.name_rule()["message"]),
    ("cel-run-name", with_(RUN, "metadata.name", LONG_RUN), "", "metadata.name must be at most 63 characters", BY_KIND["TrainingRun"].name_rule()["message"]),
]


@pytest.mark.parametrize("doc, field, words, cel_message", [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_the_server_refuses_bad_input_naming_the_field(crds, kube, k8s_namespace, doc, field, words, cel_message):
    status, causes, message = refusal(lambda: create(kube, k8s_namespace, doc))
    assert status == 422, message
    # a CEL rule on the object's root (metadata.name) has no field of its own; its message names it
    named = [m for f, m in causes if f == (field or "<nil>")]
    assert any(words in m for m in named), causes
    with pytest.raises(ValidationError) as info:
        BY_KIND[doc["kind"]].model_validate(doc)
    if cel_message is not None:
        assert any(cel_message in e["msg"] for e in info.value.errors()), info.value.errors()
    else:
        locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
        want = field.replace("[", ".").replace("]", "")
        assert any(want.startswith(loc) or loc.startswith(want) for loc in locs), locs


def test_unknown_fields_are_refused_under_strict_field_validation(crds, kube, k8s_namespace):
    doc = with_(INSTANCE, "spec.resources.gpus", 8)
    status, _, message = refusal(lambda: create(kube, k8s_namespace, doc))
    assert status == 400 and 'unknown field "spec.resources.gpus"' in message
    with pytest.raises(ValidationError, match="gpus"):
        ModelInstance.model_validate(doc)


@pytest.mark.parametrize("kind", list(GOOD))
def test_good_objects_are_stored_and_read_back_by_the_models(crds, kube, k8s_namespace, kind):
    stored = create(kube, k8s_namespace, GOOD[kind])
    # what the server stores (its defaults applied) is what the operator parses
    parsed = BY_KIND[kind].model_validate(stored)
    assert parsed.metadata.name == GOOD[kind]["metadata"]["name"]


def test_multi_node_training_without_gpus_is_allowed(crds, kube, k8s_namespace):
    # The trainer runs one CPU worker per node under torchrun, DDP over gloo
    # (tests/integration/test_trainer_torchx.py), so nnodes > 1 with no GPUs is a valid job.
    doc = with_(INSTANCE, "spec.resources", {"nnodes": 4, "gpusPerNode": 0, "cpu": 8})
    stored = create(kube, k8s_namespace, doc)
    assert stored["spec"]["resources"]["nnodes"] == 4
    assert ModelInstance.model_validate(doc).spec.resources.nnodes == 4


def test_the_longest_instance_name_keeps_its_run_name_whole(crds, kube, k8s_namespace):
    name = "i" * MAX_INSTANCE_NAME
    stored = create(kube, k8s_namespace, with_(INSTANCE, "metadata.name", name))
    assert stored["metadata"]["name"] == name
    revision = "0123456789"
    assert run_name(name, revision) == f"{name}-{revision}" and len(run_name(name, revision)) == 63
    assert run_name(LONG_INSTANCE, revision) != f"{LONG_INSTANCE}-{revision}"  # would need the hash


def test_template_ref_is_immutable(crds, kube, k8s_namespace):
    stored = create(kube, k8s_namespace, INSTANCE)
    moved = with_(stored, "spec.templateRef", {"name": "other"})
    status, causes, _ = refusal(lambda: replace(kube, k8s_namespace, moved))
    assert status == 422
    assert causes == [("spec.templateRef", 'Invalid value: "object": templateRef is immutable; create a new ModelInstance instead')]
    # everything else in the spec may change
    edited = with_(stored, "spec.event", "purchase")
    assert replace(kube, k8s_namespace, edited)["metadata"]["generation"] == 2


def test_a_training_run_spec_is_immutable_but_its_metadata_is_not(crds, kube, k8s_namespace):
    stored = create(kube, k8s_namespace, RUN)
    changed = with_(stored, "spec.training.recipe", {"steps": 10})
    status, causes, _ = refusal(lambda: replace(kube, k8s_namespace, changed))
    assert status == 422
    assert causes == [("spec", "Invalid value: \"object\": a TrainingRun's spec is immutable; create a new run")]
    labelled = get(kube, k8s_namespace, "TrainingRun", RUN["metadata"]["name"])
    labelled["metadata"].setdefault("labels", {})["team"] = "ranking"
    assert replace(kube, k8s_namespace, labelled)["metadata"]["labels"] == {"team": "ranking"}
