"""The DataSpec's feature options on the real API server: bad encodings, bucketize and labelValues
are refused at apply with the field named (and by the models with the same message), good ones are
stored with the server's defaults, and those defaults do not change the instance's revision (an
upgrade that adds them to stored objects retrains nothing)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from schema_cases import INSTANCE, TEMPLATE, create, refusal, with_

from modelfleet.api.resolve import instance_revision
from modelfleet.api.resources import ModelInstance, ModelTemplate

DATA = {"format": "parquet", "trainUri": "s3://bucket/feed/", "denseColumns": ["age"], "sparseColumns": ["job", "zip"]}

CASES = [  # (id, data, field the server names, its message; the models say the same)
    ("identity-needs-cardinality", {**DATA, "encodings": [{"column": "job", "kind": "identity"}]},
     "spec.data.encodings[0].cardinality", "kind identity needs cardinality"),
    ("vocabulary-needs-max-size", {**DATA, "encodings": [{"column": "job", "kind": "vocabulary"}]},
     "spec.data.encodings[0].maxSize", "kind vocabulary needs maxSize"),
    ("buckets-on-identity", {**DATA, "encodings": [{"column": "job", "kind": "identity", "cardinality": 3, "buckets": 9}]},
     "spec.data.encodings[0].buckets", "buckets applies to kind hash only"),
    ("bucketize-both", {**DATA, "bucketize": [{"column": "age", "buckets": 4, "boundaries": [1.0]}]},
     "spec.data.bucketize[0]", "set exactly one of buckets"),
    ("label-both", {**DATA, "labelValues": {"positive": ["y"], "negative": ["y"]}},
     "spec.data.labelValues.negative", "a value cannot be both positive and negative"),
]


@pytest.mark.parametrize(("data", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_feature_options_are_refused_at_apply(crds, kube, k8s_namespace, data, field, words):
    doc = with_(INSTANCE, "spec.data", data)
    status, causes, message = refusal(lambda: create(kube, k8s_namespace, doc))
    assert status == 422, message
    assert any(f == field and words in m for f, m in causes), causes
    with pytest.raises(ValidationError, match=re.escape(words)):
        ModelInstance.model_validate(doc)


def test_server_defaults_keep_the_revision(crds, kube, k8s_namespace):
    template = ModelTemplate.model_validate(TEMPLATE)
    plain = with_(INSTANCE, "spec.data", DATA)
    stored = create(kube, k8s_namespace, plain)
    assert stored["spec"]["data"]["fitSampleRows"] == 65536  # the server wrote the default
    assert instance_revision(template, ModelInstance.model_validate(stored)) == instance_revision(
        template, ModelInstance.model_validate(plain)
    )
    featured = with_(with_(INSTANCE, "metadata.name", "ctr-featured"), "spec.data", {
        **DATA,
        "encodings": [{"column": "job", "kind": "vocabulary", "maxSize": 50}, {"column": "zip"}],
        "bucketize": [{"column": "age", "buckets": 10}],
        "labelValues": {"positive": [">50K"], "negative": ["<=50K"]},
    })
    stored = create(kube, k8s_namespace, featured)
    encodings = stored["spec"]["data"]["encodings"]
    assert encodings[1] == {"column": "zip", "kind": "hash", "minCount": 1}  # defaults filled in
    assert instance_revision(template, ModelInstance.model_validate(stored)) == instance_revision(
        template, ModelInstance.model_validate(featured)
    )
