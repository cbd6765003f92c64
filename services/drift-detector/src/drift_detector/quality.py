"""Live model quality per model version and A/B arm, degradation and A/B evaluation.

Labelled predictions are kept per ``(model_version, ab_arm)`` (bounded). Live metrics are
the FDS metrics (:func:`fraud_model.metrics.fds_metrics`: AUC, AUPRC, recall, precision,
FPR, business cost, ...) of the latest ``quality_window`` labelled predictions, at the
threshold the version was trained with. A/B evaluation uses every labelled prediction
since the challenger started, for both arms, so both are judged on the same period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drift_detector.labels import Joined
from drift_detector.severity import degradation_severity
from drift_detector.snapshot import pack_array, unpack_array
from drift_detector.stats import Confusion, drop_p_value, two_proportion_z, welch_cost_test
from fraud_model.metrics import confusion_counts, fds_metrics

GroupKey = tuple[str, str]  # (model_version, ab_arm)


class Samples:
    """Append-only (probability, label, time) arrays; the oldest half is dropped past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.prob = np.empty(1024, dtype=np.float64)
        self.label = np.empty(1024, dtype=bool)
        self.time = np.empty(1024, dtype=np.int64)
        self.n = 0
        self.dropped = 0

    def append(self, prob: float, label: bool, time_ms: int) -> None:
        if self.n == len(self.prob):
            if self.n >= self.limit:
                keep = self.n // 2
                for arr in (self.prob, self.label, self.time):
                    arr[:keep] = arr[self.n - keep : self.n]
                self.dropped += self.n - keep
                self.n = keep
            else:
                size = min(len(self.prob) * 2, self.limit)
                self.prob = np.resize(self.prob, size)
                self.label = np.resize(self.label, size)
                self.time = np.resize(self.time, size)
        self.prob[self.n], self.label[self.n], self.time[self.n] = prob, label, time_ms
        self.n += 1

    def to_state(self) -> dict[str, Any]:
        return {
            "prob": pack_array(self.prob[: self.n]),
            "label": pack_array(self.label[: self.n]),
            "time": pack_array(self.time[: self.n]),
            "dropped": self.dropped,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the samples by a :meth:`to_state` document (the limit is the settings')."""
        prob, label, time = (unpack_array(state[k]) for k in ("prob", "label", "time"))
        self.n = len(prob)
        size = max(self.n, 1024)
        self.prob = np.resize(prob.astype(np.float64), size)
        self.label = np.resize(label.astype(bool), size)
        self.time = np.resize(time.astype(np.int64), size)
        self.dropped = int(state["dropped"])

    def latest(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        start = max(self.n - count, 0)
        return self.prob[start : self.n], self.label[start : self.n]

    def since(self, time_ms: int) -> tuple[np.ndarray, np.ndarray]:
        mask = self.time[: self.n] >= time_ms
        return self.prob[: self.n][mask], self.label[: self.n][mask]


@dataclass
class Group:
    model_version: str
    ab_arm: str
    samples: Samples
    labelled_total: int = 0
    positives_total: int = 0
    since_eval: int = 0
    first_label_ms: int | None = None
    first_prediction_ms: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    threshold_source: str = ""
    evaluated_at_ms: int | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "ab_arm": self.ab_arm,
            "samples": self.samples.to_state(),
            "labelled_total": self.labelled_total,
            "positives_total": self.positives_total,
            "since_eval": self.since_eval,
            "first_label_ms": self.first_label_ms,
            "first_prediction_ms": self.first_prediction_ms,
            "metrics": dict(self.metrics),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "evaluated_at_ms": self.evaluated_at_ms,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace counters, samples and latest metrics by a :meth:`to_state` document."""
        self.samples.from_state(state["samples"])
        self.labelled_total = int(state["labelled_total"])
        self.positives_total = int(state["positives_total"])
        self.since_eval = int(state["since_eval"])
        self.first_label_ms = state["first_label_ms"]
        self.first_prediction_ms = state["first_prediction_ms"]
        self.metrics = {str(k): float(v) for k, v in state["metrics"].items()}
        self.threshold = state["threshold"]
        self.threshold_source = str(state["threshold_source"])
        self.evaluated_at_ms = state["evaluated_at_ms"]


@dataclass(frozen=True)
class Degradation:
    """Outcome of checking a version's live metrics against its training baseline."""

    severity: str | None
    metric: str
    baseline_value: float
    current_value: float
    performance_drop: float
    drops: dict[str, float]
    p_values: dict[str, float]
    baseline_metrics: dict[str, float]
    current_metrics: dict[str, float]
    samples: int


class QualityTracker:
    def __init__(self, quality_window: int, eval_every: int, max_per_group: int) -> None:
        self.quality_window = quality_window
        self.eval_every = eval_every
        self.max_per_group = max_per_group
        self.groups: dict[GroupKey, Group] = {}

    def group(self, version: str, arm: str) -> Group:
        key = (version, arm)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(version, arm, Samples(self.max_per_group))
        return group

    def to_state(self) -> dict[str, Any]:
        return {"groups": [group.to_state() for group in self.groups.values()]}

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace every group by those of a :meth:`to_state` document."""
        self.groups = {}
        for entry in state["groups"]:
            self.group(str(entry["model_version"]), str(entry["ab_arm"])).from_state(entry)

    def saw_prediction(self, version: str, arm: str, time_ms: int) -> None:
        group = self.group(version, arm)
        if group.first_prediction_ms is None or time_ms < group.first_prediction_ms:
            group.first_prediction_ms = time_ms

    def add(self, joined: Joined) -> Group:
        p = joined.prediction
        group = self.group(p.model_version, p.ab_arm)
        group.samples.append(p.probability, joined.is_fraud, p.time_ms)
        group.labelled_total += 1
        group.positives_total += int(joined.is_fraud)
        group.since_eval += 1
        if group.first_label_ms is None:
            group.first_label_ms = p.time_ms
        return group

    def due(self, group: Group) -> bool:
        return group.since_eval >= self.eval_every

    def evaluate(self, group: Group, threshold: float, source: str, now_ms: int) -> dict[str, float]:
        prob, label = group.samples.latest(self.quality_window)
        group.since_eval = 0
        if prob.size == 0:
            return {}
        group.metrics = fds_metrics(label, prob, threshold)
        group.threshold, group.threshold_source, group.evaluated_at_ms = threshold, source, now_ms
        return group.metrics


def check_degradation(
    current: dict[str, float],
    baseline: dict[str, float],
    metrics: list[str],
    margin: float,
    alpha: float,
    min_samples: int,
    min_positives: int,
) -> Degradation | None:
    """Compare live metrics with the training baseline; ``None`` when there is too little data.

    A metric counts when its relative drop exceeds ``margin`` and is significant at
    ``alpha``; the event's ``performance_drop`` is the largest counted drop.
    """
    n = int(current.get("n_samples", 0))
    tp, fp, fn = (int(current.get(k, 0)) for k in ("tp", "fp", "fn"))
    n_pos, n_flagged = tp + fn, tp + fp
    if n < min_samples or n_pos < min_positives:
        return None
    drops: dict[str, float] = {}
    p_values: dict[str, float] = {}
    counted: dict[str, float] = {}
    for metric in metrics:
        base, live = baseline.get(metric, math.nan), current.get(metric, math.nan)
        if math.isnan(base) or math.isnan(live) or base <= 0:
            continue
        drop = min(max((base - live) / base, 0.0), 1.0)
        p = drop_p_value(metric, base, live, n_pos, n - n_pos, n_flagged)
        drops[metric], p_values[metric] = drop, p
        if drop > margin and p < alpha:
            counted[metric] = drop
    if not drops:
        return None
    worst = max(counted, key=lambda m: counted[m]) if counted else max(drops, key=lambda m: drops[m])
    severity = degradation_severity(counted[worst]) if counted else None
    return Degradation(
        severity=severity,
        metric=worst,
        baseline_value=baseline[worst],
        current_value=current[worst],
        performance_drop=drops[worst],
        drops=drops,
        p_values=p_values,
        baseline_metrics={k: v for k, v in baseline.items() if not math.isnan(v)},
        current_metrics={k: v for k, v in current.items() if not math.isnan(v)},
        samples=n,
    )


@dataclass(frozen=True)
class ABEvaluation:
    champion_version: str
    challenger_version: str
    winner: str
    metric: str
    test_name: str
    p_value: float
    significant: bool
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    champion_samples: int
    challenger_samples: int
    recall_p_value: float
    since_ms: int
    evaluated_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in self.__dict__.items()}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


AB_METRIC = "business_cost_per_txn"
AB_TEST = "welch_t_test"


def evaluate_ab(
    champion: tuple[str, np.ndarray, np.ndarray, float],
    challenger: tuple[str, np.ndarray, np.ndarray, float],
    *,
    fn_cost: float,
    fp_cost: float,
    alpha: float,
    since_ms: int,
    now_ms: int,
) -> ABEvaluation:
    """Compare the arms on per-transaction business cost (Welch's t-test, see :mod:`stats`).

    Each tuple is ``(version, probabilities, labels, threshold)``.
    """
    results: dict[str, tuple[Confusion, dict[str, float]]] = {}
    for arm, (_, prob, label, threshold) in (("champion", champion), ("challenger", challenger)):
        tp, fp, tn, fn = confusion_counts(label, prob, threshold)
        metrics = fds_metrics(label, prob, threshold, fn_cost, fp_cost)
        metrics[AB_METRIC] = metrics["business_cost"] / max(metrics["n_samples"], 1.0)
        metrics["threshold"] = threshold
        results[arm] = (Confusion(tp, fp, tn, fn), metrics)
    (c_conf, c_metrics), (x_conf, x_metrics) = results["champion"], results["challenger"]
    test = welch_cost_test(c_conf, x_conf, fn_cost, fp_cost)
    recall = two_proportion_z(c_conf.tp, c_conf.positives, x_conf.tp, x_conf.positives)
    significant = test.p_value < alpha
    if not significant:
        winner = "none"
    else:
        winner = "challenger" if x_metrics[AB_METRIC] < c_metrics[AB_METRIC] else "champion"
    return ABEvaluation(
        champion_version=champion[0],
        challenger_version=challenger[0],
        winner=winner,
        metric=AB_METRIC,
        test_name=AB_TEST,
        p_value=test.p_value,
        significant=significant,
        champion_metrics={k: v for k, v in c_metrics.items() if math.isfinite(v)},
        challenger_metrics={k: v for k, v in x_metrics.items() if math.isfinite(v)},
        champion_samples=c_conf.n,
        challenger_samples=x_conf.n,
        recall_p_value=recall.p_value,
        since_ms=since_ms,
        evaluated_at_ms=now_ms,
    )


@dataclass
class ABScheduler:
    """Once per champion/challenger pair, again only after ``factor`` times more samples."""

    min_samples: int
    min_positives: int
    factor: float
    evaluated: dict[tuple[str, str], int] = field(default_factory=dict)

    def due(
        self,
        pair: tuple[str, str],
        n_champion: int,
        n_challenger: int,
        pos_champion: int,
        pos_challenger: int,
    ) -> bool:
        if min(n_champion, n_challenger) < self.min_samples:
            return False
        if min(pos_champion, pos_challenger) < self.min_positives:
            return False
        last = self.evaluated.get(pair)
        return last is None or min(n_champion, n_challenger) >= self.factor * last

    def done(self, pair: tuple[str, str], n_champion: int, n_challenger: int) -> None:
        self.evaluated[pair] = min(n_champion, n_challenger)

    def to_state(self) -> list[list[Any]]:
        return [[champion, challenger, n] for (champion, challenger), n in self.evaluated.items()]

    def from_state(self, state: list[list[Any]]) -> None:
        self.evaluated = {(str(c), str(x)): int(n) for c, x, n in state}
