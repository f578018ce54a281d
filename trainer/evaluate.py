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
