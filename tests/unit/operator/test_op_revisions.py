"""Revisions: what retrains a model and what must not."""

from __future__ import annotations

from op_world import instance, template

from modelfleet.api.resolve import instance_revision, template_revision

TECHS = [{"name": "grad-clip", "params": {"maxNorm": 1.0}}, {"name": "dropout", "params": {"p": 0.1}}]


def rev(**kw) -> str:
    return template_revision(template(**kw).spec)


def test_reordering_techniques_keeps_the_revision():
    assert rev(techniques=TECHS) == rev(techniques=list(reversed(TECHS)))


def test_labels_annotations_and_rollout_edits_keep_the_revision():
    base = template(techniques=TECHS)
    edited = base.model_copy(deep=True)
    edited.metadata.labels = {"team": "ads"}
    edited.metadata.annotations = {"note": "x"}
    edited.spec.rollout.max_concurrent_runs = 9
    edited.spec.rollout.paused = True
    edited.spec.rollout.gate.tolerance = 0.5
    assert template_revision(base.spec) == template_revision(edited.spec)


def test_technique_params_recipe_and_technique_set_change_the_revision():
    base = rev(techniques=TECHS)
    assert rev(techniques=[TECHS[0], {"name": "dropout", "params": {"p": 0.2}}]) != base
    assert rev(techniques=TECHS[:1]) != base
    assert rev(techniques=TECHS, recipe={"steps": 6, "batchSize": 32}) != base


def test_instance_revision_adds_its_own_data_and_overrides():
    t = template(overridable=["recipe.learningRate"])
    a = instance("a")
    assert instance_revision(t, a) == instance_revision(t, instance("a"))
    assert instance_revision(t, instance("a", event="purchase")) != instance_revision(t, a)
    assert instance_revision(t, instance("a", overrides={"recipe.learningRate": 0.01})) != instance_revision(t, a)
    # an instance's resources or suspend flag do not change what is trained
    assert instance_revision(t, instance("a", suspend=True, resources={"cpu": 4})) == instance_revision(t, a)


def test_data_version_retrains_on_new_data_at_the_same_uris():
    t = template()
    data = {"format": "csv", "trainUri": "s3://ads/ctr/train.csv", "denseColumns": ["x"]}
    unversioned = instance("a", data=data)
    v1 = instance("a", data={**data, "version": "2026-11-22"})
    v1_again = instance("a", data={**data, "version": "2026-11-22"})
    v2 = instance("a", data={**data, "version": "2026-11-23"})
    assert instance_revision(t, v1) == instance_revision(t, v1_again)
    assert len({instance_revision(t, x) for x in (unversioned, v1, v2)}) == 3
    # An unset version is not hashed at all, so instances made before the field existed keep
    # their revisions (an operator upgrade retrains nothing).
    # Pinned: these are the revisions the operator computed before `data.version` existed.
    assert instance_revision(t, unversioned) == "ad34a573b6"
    assert instance_revision(t, instance("a")) == "67e327b8bd"
