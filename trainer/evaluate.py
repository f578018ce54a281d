"""Held-out metrics: normalized entropy, log loss, AUC and calibration (numpy, exact)."""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-7


def logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def base_entropy(y: np.ndarray) -> float:
    """Log loss of always predicting the base rate."""
    r = float(np.clip(np.mean(y), EPS, 1 - EPS))
    return -(r * math.log(r) + (1 - r) * math.log(1 - r))


def normalized_entropy(p: np.ndarray, y: np.ndarray) -> float:
    """Log loss divided by the entropy of the base rate: < 1 means better than the base rate."""
    return logloss(p, y) / base_entropy(y)


def auc(p: np.ndarray, y: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum formula, ties get average ranks. None when one class is absent."""
    y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sp)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(p)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration(p: np.ndarray, y: np.ndarray) -> float | None:
    """Mean prediction / observed base rate (1.0 is perfectly calibrated on average)."""
    rate = float(np.mean(y))
    return float(np.mean(p)) / rate if rate > 0 else None


def metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float | int | None]:
    return {
        "ne": normalized_entropy(p, y),
        "logloss": logloss(p, y),
        "auc": auc(p, y),
        "calibration": calibration(p, y),
        "examples": int(len(y)),
    }


# --- paired comparison: the gate's noise -------------------------------------------------------


class MetricUndefined(ValueError):
    """NE is undefined on this eval set (empty, or one class only: its base entropy is 0)."""


def check_defined(y: np.ndarray, where: str) -> None:
    """Raise MetricUndefined unless `y` holds both classes (NE divides by the base rate's entropy)."""
    n, pos = int(len(y)), int(np.sum(y))
    if n == 0:
        raise MetricUndefined(f"{where} has no examples: NE is undefined")
    if pos in (0, n):
        raise MetricUndefined(
            f"{where} has {n} examples, all labelled {int(pos == n)}: NE is undefined (the base rate's "
            "entropy is 0); give the eval split examples of both classes (data.evalUri or a larger "
            "data.evalFraction)"
        )


def example_logloss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example log loss (float64); its mean is `logloss(p, y)`."""
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    y = y.astype(np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _entropy(rate: np.ndarray) -> np.ndarray:
    r = np.clip(rate, EPS, 1 - EPS)
    return -(r * np.log(r) + (1 - r) * np.log(1 - r))


def _resampled_means(columns: np.ndarray, resamples: int, seed: int, budget: int = 1 << 22) -> np.ndarray:
    """Bootstrap means of each column of `columns` [n, c]: [resamples, c], in chunks of ~budget cells."""
    n = len(columns)
    rng = np.random.default_rng(seed)
    step = max(1, budget // max(1, n))
    out = []
    for start in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - start), n))
        out.append(columns[idx].mean(axis=1))
    return np.concatenate(out)


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval at `confidence`."""
    a = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


def ne_interval(p: np.ndarray, y: np.ndarray, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of NE over the eval examples."""
    cols = np.stack([example_logloss(p, y), y.astype(np.float64)], axis=1)
    m = _resampled_means(cols, resamples, seed)
    return _bounds(m[:, 0] / _entropy(m[:, 1]), confidence)


def paired_comparison(
    p_new: np.ndarray,
    p_base: np.ndarray,
    y: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float | int]:
    """NE of a new model against a baseline's on the same eval examples, with a paired bootstrap.

    Both models are scored on each resample of the examples, so the noise they share (which
    examples happen to be held out) cancels: the interval is that of the difference, much
    narrower than two separate NE intervals. `relativeNeChange` = NE(new) / NE(base) - 1, which
    does not depend on the base entropy, so it is the ratio of the two mean log losses.
    """
    ll_new, ll_base = example_logloss(p_new, y), example_logloss(p_base, y)
    h = base_entropy(y)
    ne_new, ne_base = float(ll_new.mean() / h), float(ll_base.mean() / h)
    m = _resampled_means(np.stack([ll_new, ll_base, y.astype(np.float64)], axis=1), resamples, seed)
    rel_lo, rel_hi = _bounds(m[:, 0] / m[:, 1] - 1, confidence)
    d_lo, d_hi = _bounds((m[:, 0] - m[:, 1]) / _entropy(m[:, 2]), confidence)
    return {
        "ne": ne_new,
        "baselineNe": ne_base,
        "deltaNe": ne_new - ne_base,
        "deltaNeLow": d_lo,
        "deltaNeHigh": d_hi,
        "relativeNeChange": ne_new / ne_base - 1,
        "relativeNeLow": rel_lo,
        "relativeNeHigh": rel_hi,
        "halfWidth": (rel_hi - rel_lo) / 2,
        "confidence": confidence,
        "resamples": resamples,
        "examples": int(len(y)),
        "positives": int(np.sum(y)),
    }
