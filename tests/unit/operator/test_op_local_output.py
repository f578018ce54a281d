"""`modelfleet local` output: a live table redrawn in place on a terminal, changed lines otherwise."""

from __future__ import annotations

import io

import pytest

from modelfleet.operator.local import ManifestError, Progress, load_manifests


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_the_table_in_place():
    out = Tty()
    p = Progress(out)
    p.show([["a", "r1", "Running", "-", "Training"]], "1 run(s) in flight")
    p.show([["a", "r1", "UpToDate", "0.7000", "Promoted"]], "0 run(s) in flight")
    text = out.getvalue()
    assert text.count("INSTANCE") == 2
    assert "\x1b[3F\x1b[J" in text  # moved up over the 3 lines it wrote, cleared, redrew


def test_progress_in_a_log_prints_only_changes():
    out = io.StringIO()
    p = Progress(out)
    row = ["a", "r1", "Running", "-", "Training"]
    p.show([row], "")
    p.show([row], "")
    p.show([["a", "r1", "UpToDate", "0.7000", "Promoted"]], "")
    assert out.getvalue().splitlines() == ["a: revision r1 Running NE - Training", "a: revision r1 UpToDate NE 0.7000 Promoted"]


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
