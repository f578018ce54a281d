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
