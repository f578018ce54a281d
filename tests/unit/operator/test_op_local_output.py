"""`modelfleet local` manifests (its live view: test_op_progress_view.py)."""

from __future__ import annotations

import pytest

from modelfleet.operator.local import ManifestError, load_manifests


def test_manifests_resolve_relative_data_uris_and_reject_duplicates(tmp_path):
    inst = (
        "apiVersion: modelfleet.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: a}\n"
        "spec: {templateRef: {name: t}, event: y, data: {format: csv, trainUri: data/x.csv, evalUri: 's3://b/e.csv'}}\n"
    )
    (tmp_path / "a.yaml").write_text(inst + "---\nkind: ConfigMap\nmetadata: {name: ignored}\n")
    m = load_manifests(tmp_path)
    assert m.instances[0].spec.data.train_uri == str(tmp_path.resolve() / "data" / "x.csv")
    assert m.instances[0].spec.data.eval_uri == "s3://b/e.csv"
    (tmp_path / "b.yml").write_text(inst)
    with pytest.raises(ManifestError, match="also defined in a.yaml"):
        load_manifests(tmp_path)
