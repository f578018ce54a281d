"""The gate's evidence: the paired bootstrap (pure numpy), the predictions file and the
comparison with a baseline, the one-class check, and the trainer writing all of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelfleet.trainer import comparison, evaluate
from modelfleet.trainer.evaluate import MetricUndefined, check_defined, ne_interval, paired_comparison


def _world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from known probabilities: the truth is the best possible model."""
    rng = np.random.default_rng(seed)
    truth = 1 / (1 + np.exp(-rng.normal(-1.0, 1.5, n)))
    return truth, (rng.random(n) < truth).astype(np.float32)


def test_identical_models_differ_by_exactly_nothing():
    p, y = _world(500)
    c = paired_comparison(p, p, y)
    assert c["relativeNeChange"] == 0 and c["relativeNeLow"] == 0 and c["relativeNeHigh"] == 0
    assert c["deltaNe"] == 0 and c["halfWidth"] == 0
    assert c["examples"] == 500 and c["positives"] == int(y.sum())


def test_point_estimates_are_the_ne_of_each_model():
    p, y = _world(800)
    base = np.full_like(p, y.mean())
    c = paired_comparison(p, base, y)
    assert c["ne"] == pytest.approx(evaluate.normalized_entropy(p, y))
    assert c["baselineNe"] == pytest.approx(evaluate.normalized_entropy(base, y))
    assert c["baselineNe"] == pytest.approx(1.0)  # the base rate's NE is 1 by definition
    assert c["relativeNeChange"] == pytest.approx(evaluate.logloss(p, y) / evaluate.logloss(base, y) - 1)
    assert c["deltaNe"] == pytest.approx(c["ne"] - c["baselineNe"])
    assert c["relativeNeLow"] <= c["relativeNeChange"] <= c["relativeNeHigh"]
    assert c["deltaNeLow"] <= c["deltaNe"] <= c["deltaNeHigh"]


def test_a_clearly_better_model_has_an_interval_below_zero_and_a_worse_one_above():
    p, y = _world(2000)
    base = np.full_like(p, y.mean())
    better = paired_comparison(p, base, y)
    worse = paired_comparison(base, p, y)
    assert better["relativeNeHigh"] < 0
    assert worse["relativeNeLow"] > 0


def test_pairing_is_narrower_than_two_separate_intervals():
    # two similar models (the same truth, independently perturbed): the shared noise cancels
    p, y = _world(1000, seed=1)
    rng = np.random.default_rng(2)
    logit = np.log(p / (1 - p))
    a = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3, len(p)))))
    b = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3, len(p)))))
    c = paired_comparison(a, b, y)
    lo_a, hi_a = ne_interval(a, y)
    assert c["halfWidth"] < (hi_a - lo_a) / 2 / 2  # the paired interval is far tighter than NE's own


def test_the_interval_widens_as_the_eval_set_shrinks_and_with_confidence():
    p, y = _world(4000, seed=3)
    base = np.clip(p + 0.05, 0, 1)
    small = paired_comparison(p[:300], base[:300], y[:300])
    large = paired_comparison(p, base, y)
    assert small["halfWidth"] > 1.5 * large["halfWidth"]
    loose = paired_comparison(p, base, y, confidence=0.8)
    assert loose["halfWidth"] < large["halfWidth"]


def test_the_bootstrap_is_seeded_and_covers_about_its_confidence():
    p, y = _world(600, seed=4)
    base = np.clip(p * 0.9 + 0.02, 0, 1)
    assert paired_comparison(p, base, y) == paired_comparison(p, base, y)
    # coverage: draw fresh eval sets from the same world; the true change (on a huge sample)
    # falls inside the 90 % interval of most of them
    big_p, big_y = _world(400_000, seed=5)
    big_b = np.clip(big_p * 0.9 + 0.02, 0, 1)
    true = evaluate.logloss(big_p, big_y) / evaluate.logloss(big_b, big_y) - 1
    hits = 0
    for s in range(40):
        q, yy = _world(600, seed=100 + s)
        c = paired_comparison(q, np.clip(q * 0.9 + 0.02, 0, 1), yy, confidence=0.9, resamples=400, seed=s)
        hits += c["relativeNeLow"] <= true <= c["relativeNeHigh"]
    assert 30 <= hits <= 40  # 36 expected; binomial(40, 0.9) is below 30 with probability < 0.1 %


def test_ne_interval_contains_the_ne():
    p, y = _world(700, seed=6)
    lo, hi = ne_interval(p, y)
    assert lo < evaluate.normalized_entropy(p, y) < hi


@pytest.mark.parametrize(
    "y, match",
    [(np.zeros(50), "all labelled 0"), (np.ones(7), "all labelled 1"), (np.zeros(0), "no examples")],
)
def test_one_class_or_empty_eval_is_undefined(y, match):
    with pytest.raises(MetricUndefined, match=match):
        check_defined(y, "the eval split of data/x.parquet")
    check_defined(np.array([0, 1, 0]), "fine")


def test_compare_pairs_stored_predictions_and_refuses_a_different_eval_set(tmp_path):
    p, y = _world(400, seed=7)
    base_uri = str(tmp_path / "base")
    comparison.write_predictions(base_uri, np.full_like(p, y.mean()), y)
    stored = comparison.read_predictions(base_uri)
    assert stored is not None and np.array_equal(stored[1], y.astype(np.int8))
    c = comparison.compare(base_uri, p, y, confidence=0.9)
    assert c["paired"] and c["baselineUri"] == base_uri and c["confidence"] == 0.9 and c["relativeNeHigh"] < 0

    other = comparison.compare(base_uri, p[:-1], y[:-1], confidence=0.9)  # the data changed
    assert not other["paired"] and "eval sets differ" in other["reason"] and "relativeNeHigh" not in other
    flipped = y.copy()
    flipped[0] = 1 - flipped[0]
    assert not comparison.compare(base_uri, p, flipped, confidence=0.9)["paired"]  # same count, other labels
    missing = comparison.compare(str(tmp_path / "nothing"), p, y, confidence=0.9)
    assert not missing["paired"] and "predictions.parquet" in missing["reason"]


def test_the_trainer_compares_a_seed_edit_with_its_baseline_on_the_same_examples(make_spec, tmp_path):
    from modelfleet.trainer.train import train

    base = make_spec()
    m0 = train(base)
    assert m0.get("comparison") is None and m0["neLow"] < m0["ne"] < m0["neHigh"] and m0["positives"] > 0
    assert (Path(base.output_uri) / "predictions.parquet").exists()
    edit = base.model_copy(
        update={
            "recipe": base.recipe.model_copy(update={"seed": base.recipe.seed + 1}),
            "output_uri": str(tmp_path / "edit"),
            "baseline_uri": base.output_uri,
            "gate_confidence": 0.9,
        }
    )
    m1 = train(edit)
    c = m1["comparison"]
    assert c["paired"] and c["confidence"] == 0.9 and c["examples"] == m0["examples"]  # same eval split
    assert c["baselineNe"] == pytest.approx(m0["ne"]) and c["ne"] == pytest.approx(m1["ne"])
    assert c["ne"] != c["baselineNe"]  # the seed did change the model
    assert json.loads((Path(edit.output_uri) / "metrics.json").read_text())["comparison"] == c


def test_a_one_class_eval_fails_the_run_with_invalid_labels(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelfleet.cli import main
    from modelfleet.trainer.report import ExitCode

    rng = np.random.default_rng(0)
    n = 400
    pq.write_table(pa.table({"x": rng.normal(size=n), "c": rng.integers(0, 5, n).astype(str), "y": rng.integers(0, 2, n)}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"x": rng.normal(size=50), "c": ["a"] * 50, "y": np.zeros(50, dtype=np.int64)}), tmp_path / "eval.parquet")
    spec = {
        "instance": "one-class", "revision": "r", "event": "y", "outputUri": str(tmp_path / "out"),
        "architecture": {"embedding": {"dim": 4, "buckets": 50}, "bottomMlp": [8, 4], "overArch": [8]},
        "recipe": {"steps": 2, "batchSize": 64},
        "data": {"format": "parquet", "trainUri": str(tmp_path / "train.parquet"), "evalUri": str(tmp_path / "eval.parquet"),
                 "denseColumns": ["x"], "sparseColumns": ["c"]},
    }
    assert main(["train", "--spec-json", json.dumps(spec)]) == ExitCode.INVALID_LABELS
    err = capsys.readouterr().err
    assert "eval.parquet" in err and "all labelled 0" in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_instances_sharing_a_template_seed_draw_their_own_noise(make_spec):
    from modelfleet.trainer.train import run_seed

    a = make_spec()
    b = a.model_copy(update={"instance": "other"})
    assert run_seed(a) == run_seed(a.model_copy()) and run_seed(a) != run_seed(b)
    assert run_seed(a) != run_seed(a.model_copy(update={"recipe": a.recipe.model_copy(update={"seed": 4})}))
