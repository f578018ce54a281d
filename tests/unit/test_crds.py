"""The CRDs are generated from the API models, structural, identical in both places, and they
accept the examples and reject bad input with a message that names the field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError
from schema_tools import CRD_DIR, ROOT, cel_errors, load_crds, schema_errors

from modelfleet.api.crd import render_crds
from modelfleet.api.resources import BY_KIND, ModelInstance, ModelTemplate

CHART_CRD_DIR = ROOT / "charts" / "modelfleet" / "crds"
EXAMPLES = sorted((ROOT / "examples" / "quickstart").glob("*.yaml"))


@pytest.mark.parametrize("folder", [CRD_DIR, CHART_CRD_DIR], ids=["crds", "chart-crds"])
def test_generated_crds_have_not_drifted(folder: Path):
    rendered = render_crds()
    on_disk = {p.name: p.read_text() for p in folder.glob("*.yaml")}
    assert set(on_disk) == set(rendered), "run `modelfleet crds --out crds --out charts/modelfleet/crds`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{folder.name}/{name} drifted; run `modelfleet crds`"


def test_crds_command_writes_the_same_files(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-P", "-m", "modelfleet", "crds", "--out", str(tmp_path)],
        check=True, capture_output=True,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "modelfleet.dev_modelinstances.yaml",
        "modelfleet.dev_modeltemplates.yaml",
        "modelfleet.dev_trainingruns.yaml",
    ]
    for p in tmp_path.iterdir():
        assert p.read_text() == (CRD_DIR / p.name).read_text()


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_crd_schema_is_structural(kind: str):
    crd = load_crds()[kind]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "$defs" not in node, path
        for banned in ("anyOf", "oneOf", "allOf", "title", "const"):
            assert banned not in node or path.endswith(".properties"), f"{banned} at {path}"
        if "properties" in node and not path.endswith(".properties"):
            assert node.get("type") == "object", f"object without type at {path}"
        if node.get("type") == "array":
            assert "items" in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node and not path.endswith(".properties"):
                assert isinstance(node[bound], bool), f"{bound} must be boolean in OpenAPI v3.0 at {path}"


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_crd_is_a_valid_apiextensions_object(kind: str):
    crd = load_crds()[kind]
    kubernetes_validate.validate(crd, "1.32", strict=True)
    names = crd["spec"]["names"]
    assert names["categories"] == ["modelfleet"]
    assert names["shortNames"] == {"ModelTemplate": ["mt"], "ModelInstance": ["mi"], "TrainingRun": ["mfrun"]}[kind]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == {
        "ModelTemplate": ["Revision", "Up-To-Date", "Total", "Ready", "Age"],
        "ModelInstance": ["Template", "Revision", "NE", "Ready", "Age"],
        "TrainingRun": ["Instance", "Revision", "Phase", "Progress", "NE", "Start", "Finish", "Age"],
    }[kind]


def test_defaults_bounds_and_enums_are_carried_over():
    spec = load_crds()["ModelTemplate"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rollout = spec["properties"]["rollout"]["properties"]
    assert rollout["maxConcurrentRuns"]["default"] == 4
    assert rollout["maxConcurrentRuns"]["minimum"] == 1
    assert rollout["onSupersede"]["enum"] == ["Cancel", "Finish"]
    recipe = spec["properties"]["recipe"]["properties"]
    assert recipe["learningRate"]["minimum"] == 0 and recipe["learningRate"]["exclusiveMinimum"] is True
    assert recipe["optimizer"]["enum"] == ["adam", "adamw", "adagrad", "sgd"]
    techniques = spec["properties"]["techniques"]
    # server-side apply merges techniques by name instead of replacing the list
    assert techniques["x-kubernetes-list-type"] == "map" and techniques["x-kubernetes-list-map-keys"] == ["name"]
    params = techniques["items"]["properties"]["params"]
    assert params.get("x-kubernetes-preserve-unknown-fields") is True


# --- examples ---------------------------------------------------------------------------------


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_quickstart_has_a_template_and_at_least_three_instances():
    kinds = [d["kind"] for p in EXAMPLES for d in _docs(p)]
    assert kinds.count("ModelTemplate") == 1
    assert kinds.count("ModelInstance") >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_crds_cel_and_models(path: Path):
    crds = load_crds()
    for doc in _docs(path):
        crd = crds[doc["kind"]]
        assert schema_errors(crd, doc) == []
        assert cel_errors(crd, doc, old=doc) == []
        BY_KIND[doc["kind"]].model_validate(doc)


# --- bad input is rejected with the field named -------------------------------------------------

INSTANCE = {
    "apiVersion": "modelfleet.dev/v1alpha1",
    "kind": "ModelInstance",
    "metadata": {"name": "ctr-feed"},
    "spec": {
        "templateRef": {"name": "ctr"},
        "event": "click",
        "data": {"format": "parquet", "trainUri": "s3://bucket/feed/"},
        "resources": {"nnodes": 2, "gpusPerNode": 8},
    },
}

TEMPLATE = {
    "apiVersion": "modelfleet.dev/v1alpha1",
    "kind": "ModelTemplate",
    "metadata": {"name": "ctr"},
    "spec": {
        "techniques": [{"name": "dcnv2-cross", "params": {"layers": 2}}, {"name": "layer-norm"}],
        "rollout": {"maxConcurrentRuns": 4, "canary": {"count": 1}},
    },
}


def _with(doc: dict, path: str, value=None, delete: bool = False) -> dict:
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


def test_good_objects_pass():
    crds = load_crds()
    assert schema_errors(crds["ModelInstance"], INSTANCE) == []
    assert schema_errors(crds["ModelTemplate"], TEMPLATE) == []
    assert cel_errors(crds["ModelTemplate"], TEMPLATE) == []


@pytest.mark.parametrize(
    "doc, field, words",
    [
        (_with(INSTANCE, "spec.resources.nnodes", "two"), "spec.resources.nnodes", "is not of type 'integer'"),
        (_with(INSTANCE, "spec.resources.gpus", 8), "spec.resources", "'gpus' was unexpected"),
        (_with(INSTANCE, "spec.templateRef", delete=True), "spec", "'templateRef' is a required property"),
        (_with(INSTANCE, "spec.data.format", "avro"), "spec.data.format", "is not one of"),
        (_with(INSTANCE, "spec.resources.nnodes", 0), "spec.resources.nnodes", "less than the minimum"),
        (_with(TEMPLATE, "spec.rollout.onSupersede", "Ignore"), "spec.rollout.onSupersede", "is not one of"),
    ],
    ids=["wrong-type", "unknown-field", "missing-templateRef", "bad-enum", "out-of-bounds", "bad-policy"],
)
def test_bad_objects_are_rejected_naming_the_field(doc, field, words):
    kind = doc["kind"]
    errors = schema_errors(load_crds()[kind], doc)
    assert any(e.startswith(f"{field}:") and words in e for e in errors), errors
    # the same input is rejected by the models (`modelfleet local` and `plan` read manifests with them)
    with pytest.raises(ValidationError) as info:
        BY_KIND[kind].model_validate(doc)
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert any(loc.startswith(field) or field.startswith(loc) for loc in locs), locs


def test_cel_rejects_duplicate_techniques_and_canary_above_concurrency():
    crd = load_crds()["ModelTemplate"]
    dupes = _with(TEMPLATE, "spec.techniques", [{"name": "dropout"}, {"name": "dropout"}])
    # Repeated names are rejected by the API server through the list-map key (tests/realk8s).
    techniques = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["techniques"]
    assert techniques["x-kubernetes-list-type"] == "map" and techniques["x-kubernetes-list-map-keys"] == ["name"]
    big_canary = _with(TEMPLATE, "spec.rollout", {"maxConcurrentRuns": 2, "canary": {"count": 3}})
    assert cel_errors(crd, big_canary) == [".spec: rollout.canary.count must not exceed rollout.maxConcurrentRuns"]
    with pytest.raises(ValidationError, match="technique names must be unique"):
        ModelTemplate.model_validate(dupes)
    with pytest.raises(ValidationError, match="must not exceed rollout.maxConcurrentRuns"):
        ModelTemplate.model_validate(big_canary)


def test_cel_makes_template_ref_immutable():
    crd = load_crds()["ModelInstance"]
    moved = _with(INSTANCE, "spec.templateRef", {"name": "other"})
    assert cel_errors(crd, INSTANCE, old=INSTANCE) == []
    assert cel_errors(crd, moved, old=INSTANCE) == [
        ".spec: templateRef is immutable; create a new ModelInstance instead"
    ]


def test_cel_rules_carry_field_paths():
    crd = load_crds()["ModelTemplate"]
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert {r["fieldPath"] for r in rules} == {".rollout.canary.count"}


def test_wire_form_round_trips_camel_case():
    mi = ModelInstance.model_validate(INSTANCE)
    assert mi.spec.resources.gpus_per_node == 8
    wire = mi.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["spec"]["resources"]["gpusPerNode"] == 8
    assert json.loads(json.dumps(wire))["spec"]["templateRef"] == {"name": "ctr"}
