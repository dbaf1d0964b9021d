"""Per-attribute classification metrics and threshold calibration, numpy only.

Balanced accuracy (mean of the true-positive and true-negative rates) is the
target metric: plain accuracy rewards always answering "no" for Bald. Thresholds
are calibrated per attribute to maximise balanced accuracy; because choosing and
measuring thresholds on the same set flatters them, :func:`cross_calibrated`
fits on one identity-disjoint half of val and measures on the other (both ways).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc")


def _counts(labels: np.ndarray, predicted: np.ndarray):
    y = labels.astype(bool)
    p = predicted.astype(bool)
    tp = (y & p).sum(0).astype(np.float64)
    tn = (~y & ~p).sum(0).astype(np.float64)
    fp = (~y & p).sum(0).astype(np.float64)
    fn = (y & ~p).sum(0).astype(np.float64)
    return tp, tn, fp, fn


def _div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, thresholds) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and F1 per attribute at ``thresholds`` (scalar or [A])."""
    labels, scores = np.atleast_2d(labels), np.atleast_2d(scores)
    tp, tn, fp, fn = _counts(labels, scores >= np.asarray(thresholds))
    n = tp + tn + fp + fn
    tpr, tnr = _div(tp, tp + fn), _div(tn, tn + fp)
    # An attribute absent from the set has only one class: its balanced accuracy is that class's rate.
    has_pos, has_neg = (tp + fn) > 0, (tn + fp) > 0
    bacc = np.where(has_pos & has_neg, (tpr + tnr) / 2, np.where(has_pos, tpr, tnr))
    return {"accuracy": _div(tp + tn, n), "balanced_accuracy": bacc, "f1": _div(2 * tp, 2 * tp + fp + fn)}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC per column (Mann-Whitney U with tied ranks averaged); nan when one class is absent."""
    labels, scores = np.atleast_2d(labels), np.atleast_2d(scores)
    out = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        y = labels[:, j].astype(bool)
        n_pos, n_neg = y.sum(), (~y).sum()
        if n_pos and n_neg:
            ranks = _average_ranks(scores[:, j])
            out[j] = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, first, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    for start, count in zip(first[counts > 1], counts[counts > 1], strict=True):
        ranks[order[start:start + count]] = start + (count + 1) / 2
    return ranks


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, thresholds=0.5) -> dict[str, np.ndarray]:
    """:func:`threshold_metrics` at ``thresholds`` plus ROC AUC, per attribute (fractions in [0, 1])."""
    result = threshold_metrics(labels, scores, thresholds)
    result["roc_auc"] = roc_auc(labels, scores)
    return result


def majority_baseline(labels: np.ndarray, priors: np.ndarray) -> dict[str, np.ndarray]:
    """Always answering each attribute's training-majority class."""
    constant = np.broadcast_to((np.asarray(priors) >= 0.5).astype(float), labels.shape)
    result = threshold_metrics(labels, constant, 0.5)
    result["roc_auc"] = np.full(labels.shape[1], 0.5)
    return result


def calibrate_thresholds(labels: np.ndarray, scores: np.ndarray, *, lo: float = 0.01, hi: float = 0.99) -> np.ndarray:
    """Per attribute, the threshold that maximises balanced accuracy on (labels, scores).

    Candidates are midpoints between consecutive distinct scores, so the answer
    separates the data the same way any threshold in that gap would.
    """
    thresholds = np.full(labels.shape[1], 0.5)
    for j in range(labels.shape[1]):
        y = labels[:, j].astype(bool)
        n_pos, n_neg = y.sum(), (~y).sum()
        if not n_pos or not n_neg:
            continue
        order = np.argsort(-scores[:, j], kind="mergesort")
        s, yy = scores[order, j], y[order]
        tp = np.cumsum(yy)  # predicting positive for the top k+1 scores
        fp = np.cumsum(~yy)
        last_of_run = np.r_[s[1:] != s[:-1], True]
        bacc = (tp / n_pos + 1 - fp / n_neg) / 2
        bacc = np.where(last_of_run, bacc, -1)
        k = int(np.argmax(bacc))
        below = s[k + 1] if k + 1 < len(s) else s[k] - 1e-3
        thresholds[j] = (s[k] + below) / 2
        if bacc[k] <= 0.5:  # nothing beats a constant answer: keep the neutral threshold
            thresholds[j] = 0.5
    return np.clip(thresholds, lo, hi)


def identity_halves(identities: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two index sets with no identity in both (images without identity are split by index)."""
    ids = np.asarray(identities)
    ids = np.where(ids < 0, -np.arange(1, len(ids) + 1), ids)
    unique = np.unique(ids)
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(unique)[: len(unique) // 2].tolist())
    mask = np.array([i in chosen for i in ids])
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def cross_calibrated(labels: np.ndarray, scores: np.ndarray, identities: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Threshold metrics where each half is measured with thresholds fitted on the other half."""
    a, b = identity_halves(identities, seed=seed)
    predicted = np.zeros_like(scores, dtype=bool)
    for fit, measure in ((a, b), (b, a)):
        t = calibrate_thresholds(labels[fit], scores[fit])
        predicted[measure] = scores[measure] >= t
    return threshold_metrics(labels, predicted.astype(float), 0.5)


def summarise(per_attribute: dict[str, np.ndarray]) -> dict[str, float]:
    """The mean over attributes of each metric (nan entries ignored)."""
    return {k: float(np.nanmean(v)) for k, v in per_attribute.items()}


def markdown_table(names: Sequence[str], columns: dict[str, np.ndarray], *, digits: int = 1) -> str:
    """A markdown table, one row per attribute plus the mean; values in percent."""
    header = "| attribute | " + " | ".join(columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{100 * v[i]:.{digits}f}" for v in columns.values()) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{100 * np.nanmean(v):.{digits}f}**" for v in columns.values()) + " |")
    return "\n".join(lines)
