"""Statistical tests (vs scipy on raw samples), degradation checks and the A/B decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from drift_detector.quality import ABScheduler, Samples, check_degradation, evaluate_ab
from drift_detector.stats import (
    Confusion,
    cost_moments,
    drop_p_value,
    hanley_mcneil_se,
    two_proportion_z,
    welch_cost_test,
)
from fraud_model.metrics import fds_metrics


def costs(c: Confusion, fn_cost: float = 100, fp_cost: float = 1) -> np.ndarray:
    return np.concatenate([np.zeros(c.tp + c.tn), np.full(c.fp, fp_cost), np.full(c.fn, fn_cost)])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Confusion(tp=80, fp=300, tn=9600, fn=20), Confusion(tp=15, fp=20, tn=960, fn=5)),
        (Confusion(tp=40, fp=50, tn=1900, fn=10), Confusion(tp=30, fp=80, tn=1870, fn=20)),
        (Confusion(tp=5, fp=0, tn=300, fn=1), Confusion(tp=5, fp=2, tn=290, fn=0)),
    ],
)
def test_welch_from_counts_equals_scipy_on_the_samples(a: Confusion, b: Confusion) -> None:
    result = welch_cost_test(a, b, 100, 1)
    t, p = stats.ttest_ind(costs(a), costs(b), equal_var=False)
    assert result.statistic == pytest.approx(t, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    mean, sd = cost_moments(a, 100, 1)
    assert mean == pytest.approx(costs(a).mean()) and sd == pytest.approx(costs(a).std(ddof=1))


def test_welch_degenerate_samples() -> None:
    zero = Confusion(tp=10, fp=0, tn=100, fn=0)
    assert welch_cost_test(zero, zero, 100, 1).p_value == 1.0
    assert welch_cost_test(Confusion(0, 0, 1, 0), zero, 100, 1).p_value == 1.0


def test_two_proportion_z_equals_chi_square_without_correction() -> None:
    x1, n1, x2, n2 = 45, 60, 30, 55
    z = two_proportion_z(x1, n1, x2, n2)
    chi2, p, _, _ = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert z.statistic**2 == pytest.approx(chi2, rel=1e-9)
    assert z.p_value == pytest.approx(p, rel=1e-9)


def test_hanley_mcneil_se_is_close_and_conservative() -> None:
    # Binormal scores with AUC ~0.85: Hanley & McNeil's exponential approximation is known to
    # overstate the spread here, which only makes the degradation test more cautious.
    rng = np.random.default_rng(3)
    n_pos, n_neg, delta = 60, 2000, 1.466  # Phi(delta / sqrt(2)) ~ 0.85
    aucs = []
    from sklearn.metrics import roc_auc_score

    for _ in range(300):
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        s = np.r_[rng.normal(delta, 1, n_pos), rng.normal(0, 1, n_neg)]
        aucs.append(roc_auc_score(y, s))
    se = hanley_mcneil_se(float(np.mean(aucs)), n_pos, n_neg)
    empirical = float(np.std(aucs))
    assert 0.9 * empirical <= se <= 1.6 * empirical


def test_drop_p_value_one_sided() -> None:
    assert drop_p_value("recall", 0.9, 0.9, 200, 5000, 300) == pytest.approx(0.5)
    assert drop_p_value("recall", 0.9, 0.6, 200, 5000, 300) < 1e-6
    assert drop_p_value("recall", 0.9, 0.95, 200, 5000, 300) > 0.9
    assert drop_p_value("auc_roc", 0.97, 0.6, 100, 5000, 300) < 1e-6
    assert drop_p_value("precision", 0.5, 0.45, 0, 0, 0) == 1.0  # nothing flagged: no evidence
    with pytest.raises(ValueError):
        drop_p_value("auprc", 0.9, 0.5, 10, 10, 10)


def synthetic(n: int, auc_shift: float, rng: np.random.Generator, fraud_rate: float = 0.03):
    y = rng.random(n) < fraud_rate
    score = rng.normal(np.where(y, auc_shift, 0.0), 1.0)
    prob = 1 / (1 + np.exp(-(score - 3)))
    return prob, y


BASELINE = {"auc_roc": 0.97, "recall": 0.9, "precision": 0.3}


def test_degradation_flags_a_real_drop_with_severity() -> None:
    rng = np.random.default_rng(5)
    prob, y = synthetic(6000, 1.0, rng)  # a weak model: AUC ~0.76
    current = fds_metrics(y, prob, 0.1)
    result = check_degradation(current, BASELINE, ["auc_roc", "recall"], 0.05, 0.05, 2000, 30)
    assert result is not None and result.severity == "CRITICAL"
    assert result.metric in ("auc_roc", "recall")
    assert result.performance_drop == max(result.drops.values())
    assert result.baseline_value == BASELINE[result.metric]
    assert result.samples == 6000


def test_degradation_ignores_noise_and_small_samples() -> None:
    rng = np.random.default_rng(6)
    prob, y = synthetic(6000, 2.5, rng)  # as good as the baseline
    current = fds_metrics(y, prob, 0.3)
    assert 0.5 < current["recall"] < 0.95
    baseline = {"auc_roc": current["auc_roc"] + 0.003, "recall": current["recall"] + 0.01}
    result = check_degradation(current, baseline, ["auc_roc", "recall"], 0.05, 0.05, 2000, 30)
    assert result is not None and result.severity is None
    small = fds_metrics(y[:500], prob[:500], 0.3)
    assert check_degradation(small, BASELINE, ["auc_roc"], 0.05, 0.05, 2000, 30) is None


def test_better_challenger_wins_equal_one_does_not() -> None:
    rng = np.random.default_rng(8)
    weak = synthetic(8000, 1.5, rng)
    strong = synthetic(8000, 4.0, rng)
    same = synthetic(8000, 1.5, rng)
    kw = {"fn_cost": 100.0, "fp_cost": 1.0, "alpha": 0.05, "since_ms": 0, "now_ms": 1}
    better = evaluate_ab(("1", *weak, 0.05), ("2", *strong, 0.05), **kw)
    assert better.winner == "challenger" and better.significant and better.p_value < 0.05
    assert (
        better.challenger_metrics["business_cost_per_txn"] < better.champion_metrics["business_cost_per_txn"]
    )
    assert better.champion_samples == 8000 and better.test_name == "welch_t_test"
    worse = evaluate_ab(("2", *strong, 0.05), ("3", *weak, 0.05), **kw)
    assert worse.winner == "champion"
    equal = evaluate_ab(("1", *weak, 0.05), ("4", *same, 0.05), **kw)
    assert equal.winner == "none" and not equal.significant and equal.p_value >= 0.05
    assert math.isfinite(equal.recall_p_value)


def test_ab_scheduler_once_per_pair_then_after_more_samples() -> None:
    s = ABScheduler(min_samples=100, min_positives=5, factor=2.0)
    assert not s.due(("1", "2"), 99, 500, 10, 10)
    assert not s.due(("1", "2"), 500, 500, 10, 4)
    assert s.due(("1", "2"), 150, 120, 10, 10)
    s.done(("1", "2"), 150, 120)
    assert not s.due(("1", "2"), 300, 200, 20, 20)
    assert s.due(("1", "2"), 300, 240, 20, 20)
    assert s.due(("1", "3"), 150, 120, 10, 10)  # a new pair


def test_samples_are_bounded_and_keep_the_newest() -> None:
    samples = Samples(limit=1000)
    for i in range(2600):
        samples.append(i / 2600, i % 2 == 0, i)
    assert samples.n <= 1000 and samples.dropped == 2600 - samples.n
    prob, _ = samples.latest(10)
    assert prob[-1] == pytest.approx(2599 / 2600)
    since, _ = samples.since(2500)
    assert since.size == 100
