"""The DataSpec's feature options: validated alike by the models and by the CRD's CEL rules (the API
server rejects them at apply), per-feature table sizes from the spec alone, and revisions that do
not move for specs that never set them."""

from __future__ import annotations

import sys
from pathlib import Path

import celpy
import pytest
from pydantic import ValidationError
from schema_tools import load_crds

from modelfleet.api.resolve import instance_revision
from modelfleet.trainer.spec import DataSpec, TrainingSpec
from modelfleet.trainer.techniques.catalogue import feature_counts, sparse_table_sizes


def _schema(*path: str) -> dict:
    node = load_crds()["ModelInstance"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for key in ("spec", "data", *path):
        node = node["items"] if key == "[]" else node["properties"][key]
    return node


def _cel_failures(node: dict, value: dict) -> list[str]:
    env = celpy.Environment()
    failed = []
    for rule in node.get("x-kubernetes-validations", []):
        if not bool(env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})):
            failed.append(rule["message"])
    return failed


CASES = [  # (list field, item, the error both must give; None: valid)
    ("encodings", {"column": "a", "kind": "hash"}, None),
    ("encodings", {"column": "a", "kind": "hash", "buckets": 50}, None),
    ("encodings", {"column": "a", "kind": "identity", "cardinality": 5}, None),
    ("encodings", {"column": "a", "kind": "vocabulary", "maxSize": 5, "minCount": 2}, None),
    ("encodings", {"column": "a", "kind": "identity"}, "identity needs cardinality"),
    ("encodings", {"column": "a", "kind": "vocabulary"}, "vocabulary needs maxSize"),
    ("encodings", {"column": "a", "kind": "identity", "cardinality": 5, "buckets": 9}, "buckets applies to kind hash only"),
    ("encodings", {"column": "a", "kind": "hash", "maxSize": 9}, "maxSize applies to kind vocabulary only"),
    ("encodings", {"column": "a", "kind": "vocabulary", "maxSize": 3, "cardinality": 9},
     "cardinality applies to kind identity only"),
    ("bucketize", {"column": "x", "buckets": 4}, None),
    ("bucketize", {"column": "x", "boundaries": [0, 1.5, 10]}, None),
    ("bucketize", {"column": "x"}, "set exactly one of buckets"),
    ("bucketize", {"column": "x", "buckets": 4, "boundaries": [1]}, "set exactly one of buckets"),
]


@pytest.mark.parametrize(("key", "item", "error"), CASES)
def test_feature_options_are_checked_alike_by_the_model_and_at_apply(key, item, error):
    failures = _cel_failures(_schema(key, "[]"), item)
    data = {"format": "csv", "trainUri": "x.csv", "sparseColumns": ["a"], key: [item]}
    if error is None:
        assert failures == []
        DataSpec.model_validate(data)
    else:
        assert any(error in f for f in failures), failures
        with pytest.raises(ValidationError, match=error):
            DataSpec.model_validate(data)


def test_label_values_cannot_be_both():
    both = {"positive": ["yes", "y"], "negative": ["no", "y"]}
    assert _cel_failures(_schema("labelValues"), both) == ["a value cannot be both positive and negative"]
    with pytest.raises(ValidationError, match=r"a value cannot be both positive and negative: \['y'\]"):
        DataSpec.model_validate({"format": "csv", "trainUri": "x.csv", "labelValues": both})


def test_the_model_names_what_the_schema_cannot_see():
    base = {"format": "csv", "trainUri": "x.csv", "sparseColumns": ["a", "b"]}
    with pytest.raises(ValidationError, match=r"data.encodings\[0\].column: 'c' is not one of data.sparseColumns"):
        DataSpec.model_validate({**base, "encodings": [{"column": "c"}]})
    with pytest.raises(ValidationError, match=r"boundaries must increase strictly"):
        DataSpec.model_validate({**base, "bucketize": [{"column": "x", "boundaries": [2, 1]}]})
    with pytest.raises(ValidationError, match="do not apply to synthetic data"):
        DataSpec.model_validate({"format": "synthetic", "bucketize": [{"column": "x", "buckets": 3}]})


def _spec(data: dict, buckets: int = 1000) -> TrainingSpec:
    return TrainingSpec.model_validate({"instance": "i", "revision": "r", "event": "y", "outputUri": "/o",
                                        "architecture": {"embedding": {"buckets": buckets}}, "data": data})


def test_table_sizes_follow_the_encodings_in_feature_order():
    spec = _spec({"format": "csv", "trainUri": "x.csv", "denseColumns": ["p"], "sparseColumns": ["a", "b", "c", "d"],
                  "encodings": [{"column": "b", "kind": "identity", "cardinality": 20},
                                {"column": "c", "kind": "vocabulary", "maxSize": 7},
                                {"column": "d", "kind": "hash", "buckets": 64}],
                  "bucketize": [{"column": "p", "buckets": 10}, {"column": "q", "boundaries": [1, 2]}]})
    assert sparse_table_sizes(spec) == [1000, 21, 8, 64, 10, 3]
    assert feature_counts(spec) == (1, 6)
    criteo = _spec({"format": "criteo", "trainUri": "x.tsv", "bucketize": [{"column": "I1", "buckets": 5}]})
    assert feature_counts(criteo) == (13, 27) and sparse_table_sizes(criteo) == [1000] * 26 + [5]


def test_specs_that_never_set_the_new_fields_keep_their_revisions():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from op_world import instance, template  # the world whose revisions test_op_revisions pins

    t = template()
    data = {"format": "csv", "trainUri": "s3://ads/ctr/train.csv", "denseColumns": ["x"]}
    plain = instance("a", data=data)
    spelled_out = instance("a", data={**data, "encodings": [], "bucketize": [], "fitSampleRows": 65536})
    assert instance_revision(t, plain) == instance_revision(t, spelled_out) == "ad34a573b6"  # pinned before
    assert instance_revision(t, instance("a", data={**data, "fitSampleRows": 100_000})) != "ad34a573b6"
    dumped = DataSpec.model_validate(data).model_dump(by_alias=True)
    assert not {"encodings", "bucketize", "labelValues", "fitSampleRows"} & set(dumped)
