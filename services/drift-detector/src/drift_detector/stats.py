"""Statistical tests behind the degradation and A/B decisions.

**A/B comparison — Welch's t-test on the per-transaction business cost.**
The decision the platform has to take is economic: which model loses less money. Each
labelled transaction costs ``fn_cost`` (100) if it was a missed fraud, ``fp_cost`` (1) if it
was a false alarm, and 0 otherwise, at the threshold its model serves with. The arms see
disjoint transactions (the predictor splits by transaction-id hash), so the samples are
independent and unpaired; the arms differ in size (90/10) and in variance, hence Welch's
unequal-variance test rather than Student's. The cost is bounded (0..100), so the
sample means are close to normal at the minimum sample sizes required (and a minimum
number of frauds per arm is required too, since they carry most of the variance).
Two-sided, ``p < alpha``; the lower mean cost wins. Recall is compared as well with a
two-proportion z-test and reported, but does not decide.

**Degradation — one-sided tests against the training baseline.**
A live metric counts as dropped when its relative drop exceeds the margin *and* the drop
is significant: ``z = (baseline - live) / SE`` with the standard error under the baseline
value — binomial for recall (over frauds) and precision (over flagged transactions),
Hanley & McNeil (1982) for ROC AUC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    def recall(self) -> float:
        return self.tp / self.positives if self.positives else math.nan


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float


def cost_moments(c: Confusion, fn_cost: float, fp_cost: float) -> tuple[float, float]:
    """Mean and sample standard deviation of the per-transaction cost."""
    n = c.n
    if n == 0:
        return math.nan, math.nan
    mean = (c.fn * fn_cost + c.fp * fp_cost) / n
    second = (c.fn * fn_cost**2 + c.fp * fp_cost**2) / n
    var = max(second - mean**2, 0.0) * n / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def welch_cost_test(a: Confusion, b: Confusion, fn_cost: float, fp_cost: float) -> TestResult:
    """Two-sided Welch t-test of the mean per-transaction cost of ``a`` vs ``b``."""
    mean_a, sd_a = cost_moments(a, fn_cost, fp_cost)
    mean_b, sd_b = cost_moments(b, fn_cost, fp_cost)
    if a.n < 2 or b.n < 2:
        return TestResult(math.nan, 1.0)
    if sd_a == 0 and sd_b == 0:
        return (
            TestResult(0.0, 1.0)
            if mean_a == mean_b
            else TestResult(math.copysign(math.inf, mean_a - mean_b), 0.0)
        )
    t, p = stats.ttest_ind_from_stats(mean_a, sd_a, a.n, mean_b, sd_b, b.n, equal_var=False)
    return TestResult(float(t), float(p))


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """Two-sided pooled z-test of ``x1/n1`` vs ``x2/n2``."""
    if n1 == 0 or n2 == 0:
        return TestResult(math.nan, 1.0)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return TestResult(0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / se
    return TestResult(z, float(2 * stats.norm.sf(abs(z))))


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC of ``auc`` with the given class sizes."""
    if n_pos == 0 or n_neg == 0:
        return math.nan
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def drop_p_value(metric: str, baseline: float, live: float, n_pos: int, n_neg: int, n_flagged: int) -> float:
    """One-sided p-value of "the live metric is below the baseline"."""
    if math.isnan(baseline) or math.isnan(live):
        return 1.0
    baseline = min(max(baseline, 0.0), 1.0)  # every supported metric is a proportion
    if metric == "auc_roc":
        se = hanley_mcneil_se(baseline, n_pos, n_neg)
    elif metric == "recall":
        se = math.sqrt(baseline * (1 - baseline) / n_pos) if n_pos else math.nan
    elif metric == "precision":
        se = math.sqrt(baseline * (1 - baseline) / n_flagged) if n_flagged else math.nan
    else:
        raise ValueError(f"no significance test for {metric!r}")
    if math.isnan(se):
        return 1.0
    if se == 0:
        return 0.0 if live < baseline else 1.0
    return float(stats.norm.sf((baseline - live) / se))
