"""Metrics and threshold calibration against tables worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facialattr.training import metrics as M

# One attribute, 6 images: labels and scores chosen so every count is easy to read.
LABELS = np.array([[1], [1], [1], [0], [0], [0]])
SCORES = np.array([[0.9], [0.6], [0.3], [0.4], [0.2], [0.1]])


@pytest.mark.parametrize(("threshold", "accuracy", "balanced", "f1"), [
    (0.5, 5 / 6, (2 / 3 + 1) / 2, 2 * 2 / (2 * 2 + 0 + 1)),  # TP 2, TN 3, FN 1
    (0.25, 5 / 6, (1 + 2 / 3) / 2, 2 * 3 / (2 * 3 + 1 + 0)),  # TP 3, TN 2, FP 1
    (0.95, 3 / 6, 0.5, 0.0),  # nothing predicted positive
])
def test_threshold_metrics_match_hand_counts(threshold, accuracy, balanced, f1):
    m = M.threshold_metrics(LABELS, SCORES, threshold)
    assert m["accuracy"][0] == pytest.approx(accuracy)
    assert m["balanced_accuracy"][0] == pytest.approx(balanced)
    assert m["f1"][0] == pytest.approx(f1)


def test_roc_auc_counts_ordered_pairs_and_halves_ties():
    # 9 positive/negative pairs; only (0.3 vs 0.4) is out of order -> 8/9.
    assert M.roc_auc(LABELS, SCORES)[0] == pytest.approx(8 / 9)
    tied = np.array([[0.5], [0.5], [0.5], [0.5]])
    assert M.roc_auc(np.array([[1], [0], [1], [0]]), tied)[0] == pytest.approx(0.5)
    assert np.isnan(M.roc_auc(np.ones((3, 1)), np.random.rand(3, 1))[0])


def test_majority_baseline_answers_the_training_majority():
    labels = np.array([[0, 1], [0, 1], [1, 0], [0, 1]])
    base = M.majority_baseline(labels, priors=np.array([0.1, 0.8]))
    assert base["accuracy"].tolist() == [0.75, 0.75]
    assert base["balanced_accuracy"].tolist() == [0.5, 0.5]


def test_calibrated_threshold_maximises_balanced_accuracy():
    t = M.calibrate_thresholds(LABELS, SCORES)[0]
    assert 0.2 < t <= 0.3  # separates {0.9, 0.6, 0.3, 0.4} from {0.2, 0.1}: bal.acc 5/6
    best = M.threshold_metrics(LABELS, SCORES, t)["balanced_accuracy"][0]
    grid = [M.threshold_metrics(LABELS, SCORES, g)["balanced_accuracy"][0] for g in np.linspace(0.01, 0.99, 99)]
    assert best == pytest.approx(max(grid))


def test_rare_attribute_gets_a_low_threshold():
    rng = np.random.default_rng(0)
    labels = (rng.random((2000, 1)) < 0.03).astype(int)
    scores = np.clip(0.02 + 0.25 * labels + rng.normal(0, 0.05, labels.shape), 0, 1)
    t = M.calibrate_thresholds(labels, scores)[0]
    assert t < 0.3
    assert M.threshold_metrics(labels, scores, t)["balanced_accuracy"][0] > \
        M.threshold_metrics(labels, scores, 0.5)["balanced_accuracy"][0]


def test_identity_halves_share_no_identity_and_cover_everything():
    ids = np.repeat(np.arange(10), 3)
    a, b = M.identity_halves(ids)
    assert not set(ids[a]) & set(ids[b])
    assert sorted(np.r_[a, b].tolist()) == list(range(30))


def test_cross_calibration_is_not_better_than_in_sample_on_noise():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 5)) < 0.3).astype(int)
    scores = rng.random((400, 5))  # no signal: in-sample thresholds overfit, cross ones cannot
    ids = np.repeat(np.arange(200), 2)
    in_sample = M.threshold_metrics(labels, scores, M.calibrate_thresholds(labels, scores))["balanced_accuracy"].mean()
    cross = M.cross_calibrated(labels, scores, ids)["balanced_accuracy"].mean()
    assert in_sample > 0.53 and cross < in_sample


def test_markdown_table_has_a_row_per_attribute_and_a_mean():
    table = M.markdown_table(["A", "B"], {"acc": np.array([0.5, 1.0])})
    assert "| A | 50.0 |" in table and "| **mean** | **75.0** |" in table
