"""Validation beyond the schema: every problem names the field, the reason and what is allowed."""

from __future__ import annotations

from op_world import instance, template

from modelfleet.operator.validation import validate_instance, validate_template


def test_unknown_technique_names_its_index_and_the_known_ones():
    t = template(techniques=[{"name": "grad-clip"}, {"name": "warp-drive"}])
    [p] = validate_template(t)
    assert p.reason == "InvalidTechnique"
    assert p.field == "spec.techniques[1].name"
    assert p.message.startswith("spec.techniques[1].name: ") and "warp-drive" in p.message
    assert "lowrank-cross" in p.message  # says what is allowed


def test_bad_technique_param_names_the_param():
    t = template(techniques=[{"name": "grad-clip"}, {"name": "lowrank-cross", "params": {"rank": 0}}])
    [p] = validate_template(t)
    assert p.field == "spec.techniques[1].params.rank"
    assert "rank" in p.message and p.message.startswith(p.field)


def test_valid_template_and_instance_have_no_problems():
    t = template(overridable=["recipe.learningRate"])
    assert validate_template(t) == []
    assert validate_instance(instance("a", overrides={"recipe.learningRate": 0.01}), t) == []


def test_override_outside_the_allow_list():
    t = template(overridable=["recipe.learningRate"])
    [p] = validate_instance(instance("a", overrides={"recipe.batchSize": 64}), t)
    assert p.reason == "InvalidOverride"
    assert p.field == "spec.overrides['recipe.batchSize']"
    assert "recipe.learningRate" in p.message  # what is allowed


def test_override_of_the_wrong_type():
    t = template(overridable=["recipe.learningRate"])
    [p] = validate_instance(instance("a", overrides={"recipe.learningRate": "fast"}), t)
    assert p.reason == "InvalidOverride" and "recipe.learningRate" in p.field


def test_missing_template():
    [p] = validate_instance(instance("a", template_name="nope"), None)
    assert p.reason == "TemplateNotFound" and p.field == "spec.templateRef.name" and "'nope'" in p.message


def test_override_that_breaks_a_technique_is_the_instances_problem():
    t = template(
        techniques=[{"name": "attention-interaction", "params": {"heads": 4}}],
        overridable=["architecture.embedding.dim"],
    )
    assert validate_instance(instance("a"), t) == []
    [p] = validate_instance(instance("a", overrides={"architecture.embedding.dim": 6}), t)
    # Named by the instance's own field (the override), never the template's path.
    assert p.reason == "InvalidOverride" and p.field == "spec.overrides['architecture.embedding.dim']"
    assert "heads" in p.message and "spec.architecture" not in p.message


def test_a_template_problem_is_the_templates_at_the_index_the_user_wrote():
    # task-weighting sorts last by name but is written first: its index is 0, and it is the
    # template's problem (an unknown task), not each instance's.
    t = template(techniques=[{"name": "task-weighting", "params": {"weights": {"nope": 2.0}}}, {"name": "dropout"}])
    [p] = validate_template(t)
    assert p.field == "spec.techniques[0].params.weights.nope", p
    assert "nope" in p.message
    assert validate_instance(instance("a"), t) == []  # the instance is not blamed for it
