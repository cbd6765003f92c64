"""FDS metrics against scikit-learn and hand-computed costs; threshold search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from fraud_model.metrics import (
    METRIC_NAMES,
    business_cost,
    cost_curve,
    cost_optimal_threshold,
    fds_metrics,
)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.random(5_000) < 0.03
    p = np.clip(rng.normal(0.2 + 0.4 * y, 0.15), 0, 1)
    return y, p


def test_metrics_match_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    threshold = 0.45
    m = fds_metrics(y, p, threshold)
    pred = p >= threshold
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert set(m) == set(METRIC_NAMES)
    assert m["auc_roc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auprc"] == pytest.approx(average_precision_score(y, p))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["fpr"] == pytest.approx(fp / (fp + tn))
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["business_cost"] == fn * 100 + fp * 1
    assert m["n_samples"] == len(y) and m["positive_rate"] == pytest.approx(y.mean())


def test_hand_computed_cost() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.6, 0.1, 0.7, 0.3, 0.2, 0.1, 0.05]
    m = fds_metrics(y, p, threshold=0.5)
    # flagged: 0.9 (TP), 0.6 (TP), 0.7 (FP); missed: 0.1 (FN)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["business_cost"] == 1 * 100 + 1 * 1
    assert business_cost(y, p, 0.5, fn_cost=10, fp_cost=3) == 13
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 5)


def test_single_class_input_gives_nan_not_errors() -> None:
    negatives = fds_metrics([0, 0, 0], [0.1, 0.7, 0.2], threshold=0.5)
    assert math.isnan(negatives["auc_roc"]) and math.isnan(negatives["auprc"])
    assert math.isnan(negatives["recall"])
    assert negatives["fpr"] == pytest.approx(1 / 3) and negatives["business_cost"] == 1
    positives = fds_metrics([1, 1], [0.9, 0.2], threshold=0.5)
    assert math.isnan(positives["auc_roc"]) and math.isnan(positives["fpr"])
    assert positives["recall"] == 0.5 and positives["business_cost"] == 100
    nothing_flagged = fds_metrics([0, 1], [0.1, 0.2], threshold=0.9)
    assert math.isnan(nothing_flagged["precision"]) and nothing_flagged["f1"] == 0.0
    empty = fds_metrics([], [], threshold=0.5)
    assert empty["n_samples"] == 0 and math.isnan(empty["auc_roc"])


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        fds_metrics([0, 1], [0.5], threshold=0.5)
    with pytest.raises(ValueError):
        fds_metrics([0, 1], [0.5, math.nan], threshold=0.5)


def test_threshold_search_picks_minimum_cost_on_toy_example() -> None:
    y = [0, 0, 1, 0, 1, 0]
    p = [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]
    # >=0.3 flags 4 rows: 0 FN, 2 FP -> cost 2 (best); >=0.9 misses one fraud -> 101.
    assert cost_optimal_threshold(y, p) == 0.3
    # False alarms dearer than misses: flag nothing (threshold above every score).
    nothing = cost_optimal_threshold(y, p, fn_cost=1, fp_cost=100)
    assert nothing > 0.95 and business_cost(y, p, nothing, 1, 100) == 2
    assert cost_optimal_threshold(y, p, grid=[0.05, 0.25, 0.5]) == 0.25


def test_threshold_search_matches_brute_force(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    best = cost_optimal_threshold(y, p)
    candidates = np.r_[np.unique(p), 2.0]
    brute = min(business_cost(y, p, t) for t in candidates)
    assert business_cost(y, p, best) == brute
    thresholds, costs = cost_curve(y, p)
    assert np.all(np.diff(thresholds) > 0)
    sample = np.random.default_rng(1).choice(len(thresholds), 50)
    for i in sample:
        assert costs[i] == business_cost(y, p, thresholds[i])
