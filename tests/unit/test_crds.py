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
from schema_tools import CRD_DIR, INSTANCE, ROOT, cel_errors, load_crds, schema_errors

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


# --- the models refuse what the CRDs refuse --------------------------------------------------
# The API server's side of every rule is tested on the real server (tests/realk8s/test_schema_rules.py);
# here only what `modelfleet local`/`plan` and the operator's parsing rely on, offline.

def _rules(schema: dict, path: str = ""):
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for key, child in schema.get("properties", {}).items():
        yield from _rules(child, f"{path}.{key}")
    if "items" in schema:
        yield from _rules(schema["items"], f"{path}[]")


def test_every_cel_rule_is_where_the_models_put_it():
    found = {
        kind: sorted((path, r["rule"], r.get("fieldPath")) for path, r in _rules(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
        for kind, crd in load_crds().items()
    }
    train_uri = "self.format == 'synthetic' || has(self.trainUri)"

    def data_rules(at: str) -> list[tuple]:  # DataSpec's own rules (trainer/spec.py), wherever it is embedded
        return [
            (at, train_uri, ".trainUri"),
            (f"{at}.bucketize[]", "has(self.buckets) != has(self.boundaries)", None),
            (f"{at}.encodings[]", "self.kind != 'identity' || has(self.cardinality)", ".cardinality"),
            (f"{at}.encodings[]", "self.kind != 'vocabulary' || has(self.maxSize)", ".maxSize"),
            (f"{at}.encodings[]", "self.kind == 'hash' || !has(self.buckets)", ".buckets"),
            (f"{at}.encodings[]", "self.kind == 'identity' || !has(self.cardinality)", ".cardinality"),
            (f"{at}.encodings[]", "self.kind == 'vocabulary' || !has(self.maxSize)", ".maxSize"),
            (f"{at}.labelValues", "self.positive.all(v, !(v in self.negative))", ".negative"),
        ]

    structure = "!has(self.structure) || self.structure == 'stacked' || self.kind in ['dcnv2', 'lowrank']"
    assert found["ModelTemplate"] == [
        (".spec", "!has(self.rollout) || !has(self.rollout.canary) || !has(self.rollout.canary.count)"
         " || self.rollout.canary.count <= self.rollout.maxConcurrentRuns", ".rollout.canary.count"),
        (".spec.architecture.interaction", structure, ".structure"),
    ]
    assert found["ModelInstance"] == [
        ("", "self.metadata.name.size() <= 52", None),
        (".spec", "self.templateRef.name == oldSelf.templateRef.name", ".templateRef"),
        *data_rules(".spec.data"),
    ]
    assert found["TrainingRun"] == [
        ("", "self.metadata.name.size() <= 63", None),
        (".spec", "self == oldSelf", None),
        (".spec.training.architecture.interaction", structure, ".structure"),
        *data_rules(".spec.training.data"),
    ]


def test_lists_keyed_by_name_reject_repeats_in_the_models_too():
    crd = load_crds()["ModelTemplate"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    tasks = crd["properties"]["architecture"]["properties"]["tasks"]
    assert tasks["x-kubernetes-list-map-keys"] == ["name"] and tasks["items"]["required"] == ["name"]
    with pytest.raises(ValidationError, match="task names must be unique"):
        ModelTemplate.model_validate({**TEMPLATE_DOC, "spec": {"architecture": {"tasks": [{"name": "a"}, {"name": "a"}]}}})
    with pytest.raises(ValidationError, match="technique names must be unique"):
        ModelTemplate.model_validate({**TEMPLATE_DOC, "spec": {"techniques": [{"name": "a"}, {"name": "a"}]}})


TEMPLATE_DOC = {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelTemplate", "metadata": {"name": "ctr"}}


def test_mlp_widths_are_bounded_per_item_in_the_crd():
    arch = load_crds()["ModelTemplate"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["architecture"]
    for key in ("bottomMlp", "overArch"):
        assert arch["properties"][key]["items"] == {"type": "integer", "minimum": 1, "maximum": 65536}


def test_wire_form_round_trips_camel_case():
    mi = ModelInstance.model_validate(INSTANCE)
    assert mi.spec.resources.gpus_per_node == 8
    wire = mi.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["spec"]["resources"]["gpusPerNode"] == 8
    assert json.loads(json.dumps(wire))["spec"]["templateRef"] == {"name": "ctr"}
