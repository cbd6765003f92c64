"""FDS quality metrics and the cost-optimal decision threshold.

Business cost follows the FDS convention: a missed fraud (FN) costs ``fn_cost`` (100),
a false alarm (FP) costs ``fp_cost`` (1). Ratios that are undefined for the given
input (AUC on a single class, precision when nothing is flagged, ...) are NaN rather
than an exception or a misleading 0, because live windows are often tiny.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

DEFAULT_FN_COST: Final[float] = 100.0
DEFAULT_FP_COST: Final[float] = 1.0

#: Keys returned by :func:`fds_metrics`.
METRIC_NAMES: Final[tuple[str, ...]] = (
    "auc_roc",
    "auprc",
    "recall",
    "precision",
    "f1",
    "fpr",
    "business_cost",
    "tp",
    "fp",
    "tn",
    "fn",
    "n_samples",
    "positive_rate",
)


def _as_arrays(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true).astype(bool).ravel()
    prob = np.asarray(y_prob, dtype=np.float64).ravel()
    if truth.shape != prob.shape:
        raise ValueError(f"y_true has {truth.size} values but y_prob has {prob.size}")
    if np.isnan(prob).any():
        raise ValueError("y_prob contains NaN")
    return truth, prob


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def confusion_counts(y_true: Any, y_prob: Any, threshold: float) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` when flagging ``y_prob >= threshold`` as fraud."""
    truth, prob = _as_arrays(y_true, y_prob)
    flagged = prob >= threshold
    tp = int(np.count_nonzero(flagged & truth))
    fp = int(np.count_nonzero(flagged & ~truth))
    fn = int(np.count_nonzero(~flagged & truth))
    tn = int(truth.size - tp - fp - fn)
    return tp, fp, tn, fn


def business_cost(
    y_true: Any,
    y_prob: Any,
    threshold: float,
    fn_cost: float = DEFAULT_FN_COST,
    fp_cost: float = DEFAULT_FP_COST,
) -> float:
    """``FN * fn_cost + FP * fp_cost`` at ``threshold``."""
    _, fp, _, fn = confusion_counts(y_true, y_prob, threshold)
    return fn * fn_cost + fp * fp_cost


def fds_metrics(
    y_true: Any,
    y_prob: Any,
    threshold: float,
    fn_cost: float = DEFAULT_FN_COST,
    fp_cost: float = DEFAULT_FP_COST,
) -> dict[str, float]:
    """All FDS metrics of fraud scores ``y_prob`` against labels ``y_true``.

    Args:
        y_true: 0/1 or bool labels (1 = fraud).
        y_prob: fraud probabilities; a row is flagged when ``y_prob >= threshold``.
        threshold: decision threshold.

    Returns:
        Keys of :data:`METRIC_NAMES`; threshold-free ``auc_roc``/``auprc`` plus the
        confusion counts and derived ratios at ``threshold``. Undefined values are NaN.
    """
    truth, prob = _as_arrays(y_true, y_prob)
    tp, fp, tn, fn = confusion_counts(truth, prob, threshold)
    positives = tp + fn
    both_classes = 0 < positives < truth.size
    auc = float(roc_auc_score(truth, prob)) if both_classes else math.nan
    # Average precision is defined whenever there is at least one positive.
    auprc = float(average_precision_score(truth, prob)) if positives else math.nan
    return {
        "auc_roc": auc,
        "auprc": auprc,
        "recall": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fpr": _ratio(fp, fp + tn),
        "business_cost": float(fn * fn_cost + fp * fp_cost),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
        "n_samples": float(truth.size),
        "positive_rate": _ratio(positives, truth.size),
    }


def cost_curve(
    y_true: Any,
    y_prob: Any,
    fn_cost: float = DEFAULT_FN_COST,
    fp_cost: float = DEFAULT_FP_COST,
) -> tuple[np.ndarray, np.ndarray]:
    """Business cost at every distinct score used as threshold.

    Returns ``(thresholds, costs)`` with thresholds ascending. The last threshold lies
    just above the highest score, i.e. "flag nothing".
    """
    truth, prob = _as_arrays(y_true, y_prob)
    if truth.size == 0:
        raise ValueError("empty input")
    order = np.argsort(-prob, kind="mergesort")
    sorted_prob, sorted_truth = prob[order], truth[order]
    # Flagging everything with score >= s: counts up to the last occurrence of s.
    tp_cum = np.cumsum(sorted_truth)
    fp_cum = np.cumsum(~sorted_truth)
    last_of_value = np.r_[sorted_prob[1:] != sorted_prob[:-1], True]
    thresholds = sorted_prob[last_of_value]
    tp_at, fp_at = tp_cum[last_of_value], fp_cum[last_of_value]
    positives = int(tp_cum[-1])
    costs = (positives - tp_at) * fn_cost + fp_at * fp_cost
    nothing = np.nextafter(sorted_prob[0], np.inf)
    # Descending so far; prepend "flag nothing" and flip to ascending.
    thresholds = np.r_[nothing, thresholds][::-1]
    costs = np.r_[positives * fn_cost, costs][::-1]
    return thresholds, costs


def cost_optimal_threshold(
    y_true: Any,
    y_prob: Any,
    fn_cost: float = DEFAULT_FN_COST,
    fp_cost: float = DEFAULT_FP_COST,
    grid: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Threshold minimising ``FN * fn_cost + FP * fp_cost``.

    Without ``grid`` every distinct score is a candidate (exact optimum on this data);
    with ``grid`` only those values are tried. Ties go to the highest threshold,
    i.e. the fewest alerts for the same cost.
    """
    if grid is None:
        thresholds, costs = cost_curve(y_true, y_prob, fn_cost, fp_cost)
    else:
        thresholds = np.sort(np.asarray(grid, dtype=np.float64))
        if thresholds.size == 0:
            raise ValueError("empty grid")
        costs = np.array([business_cost(y_true, y_prob, t, fn_cost, fp_cost) for t in thresholds])
    best = np.flatnonzero(costs == costs.min())[-1]
    return float(thresholds[best])
