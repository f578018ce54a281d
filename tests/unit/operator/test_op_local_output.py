"""`modelfleet local` manifests (its live view: test_op_progress_view.py)."""

from __future__ import annotations

import pytest

from modelfleet.operator.local import ManifestError, load_manifests


def test_manifests_keep_data_uris_as_written_read_from_their_folder_and_reject_duplicates(tmp_path):
    from modelfleet.api.resolve import resolve_training_spec
    from modelfleet.api.resources import ModelTemplate

    inst = (
        "apiVersion: modelfleet.dev/v1alpha1\nkind: ModelInstance\nmetadata: {name: a}\n"
        "spec: {templateRef: {name: t}, event: y, data: {format: csv, trainUri: data/x.csv, evalUri: 's3://b/e.csv'}}\n"
    )
    (tmp_path / "a.yaml").write_text(inst + "---\nkind: ConfigMap\nmetadata: {name: ignored}\n")
    m = load_manifests(tmp_path)
    assert m.folder == tmp_path.resolve() and m.sources == {("ModelInstance", "a"): "a.yaml"}
    # hashed as written (a moved folder keeps its revisions) ...
    assert m.instances[0].spec.data.train_uri == "data/x.csv"
    # ... and read from the manifests' folder: the spec the trainer gets has the resolved path
    t = ModelTemplate.model_validate({"metadata": {"name": "t"}, "spec": {}})
    spec = resolve_training_spec(t, m.instances[0], output_uri="/out", base_dir=str(m.folder))
    assert spec.data.train_uri == str(tmp_path.resolve() / "data" / "x.csv")
    assert spec.data.eval_uri == "s3://b/e.csv"
    assert spec.revision == resolve_training_spec(t, m.instances[0], output_uri="/out").revision
    (tmp_path / "b.yml").write_text(inst)
    with pytest.raises(ManifestError, match="also defined in a.yaml"):
        load_manifests(tmp_path)
