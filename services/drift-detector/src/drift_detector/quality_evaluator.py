"""Live model quality: predictions joined with their delayed labels, metrics per version and arm, degradation.

Predictions wait for their label in the :class:`~drift_detector.labels.LabelJoiner`;
each join adds a labelled sample to its ``(model_version, ab_arm)`` group of the
:class:`~drift_detector.quality.QualityTracker`. Every ``quality_eval_every`` labels a
group's live metrics are recomputed at the version's stored threshold and, for the
champion arm, checked against the version's training baseline: a significant drop is an
event on ``model.performance.degraded`` (entering, escalating, or repeating at most
once per repeat interval while it lasts).

Not thread-safe on its own: the dispatcher serialises every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.events import CHAMPION_ARM, PREDICTION_COLUMN, Emitter, event_ms, finite_map, iso
from drift_detector.labels import Joined, LabelJoiner, PendingPrediction
from drift_detector.models import ModelInfoCache
from drift_detector.quality import Group, QualityTracker, check_degradation
from drift_detector.severity import action_hint
from drift_detector.state import DegradationState
from mlops_platform.kafka import Record
from mlops_platform.logs import get_logger

log = get_logger(__name__)


class QualityEvaluator:
    """Label join, live quality per version/arm, and the champion's degradation check."""

    def __init__(self, settings: Settings, *, registry: ModelInfoCache, emitter: Emitter) -> None:
        self.settings = settings
        self.registry = registry
        self.emitter = emitter
        self.joiner = LabelJoiner(
            ttl_ms=int(settings.label_ttl_s * 1000),
            max_pending=settings.max_pending,
            max_orphans=settings.max_orphans,
        )
        self.tracker = QualityTracker(
            settings.quality_window, settings.quality_eval_every, settings.max_labelled_per_group
        )
        #: the version each A/B arm serves, as last seen on a prediction
        self.arm_versions: dict[str, str] = {}
        self.degradation: dict[str, DegradationState] = {}
        self.last_degradation: dict[str, dict[str, Any]] = {}
        self._expired_reported = 0
        #: told about every join (label, label time, cause): the target-drift window
        self.on_joined: Callable[[bool, int, Mapping[str, Any]], None] | None = None

    # ------------------------------------------------------------------ input

    def take_prediction(self, record: Record, time_ms: int) -> bool:
        """A prediction of the monitored model; True when a join made a group's evaluation due."""
        value = record.value
        version = str(value.get("model_version", ""))
        arm = str(value.get("ab_arm") or CHAMPION_ARM)
        self.arm_versions[arm] = version
        self.tracker.saw_prediction(version, arm, time_ms)
        joined = self.joiner.add_prediction(
            str(value.get("transaction_id")),
            PendingPrediction(version, arm, float(value.get(PREDICTION_COLUMN, math.nan)), time_ms),
        )
        return joined is not None and self._on_joined(joined, record.envelope)

    def take_label(self, record: Record) -> bool:
        """A delayed label; True when its join made a group's evaluation due."""
        value = record.value
        m.LABELS.inc()
        time_ms = event_ms(record.envelope, record.timestamp_ms)
        joined = self.joiner.add_label(str(value.get("transaction_id")), bool(value.get("is_fraud")), time_ms)
        return joined is not None and self._on_joined(joined, record.envelope)

    def expire(self) -> None:
        """Drop predictions whose label never came within the TTL; refresh the join gauges."""
        self.joiner.expire()
        m.PENDING.set(len(self.joiner.pending))
        m.ORPHANS.set(len(self.joiner.orphans))
        expired = self.joiner.stats.expired
        delta = expired - self._expired_reported
        if delta > 0:
            m.EXPIRED.inc(delta)
        self._expired_reported = expired

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Pending joins, labelled samples per version/arm and degradation episodes as plain data."""
        return {
            "joiner": self.joiner.to_state(),
            "tracker": self.tracker.to_state(),
            "arm_versions": dict(self.arm_versions),
            "degradation": {v: state.to_state() for v, state in self.degradation.items()},
            "last_degradation": self.last_degradation,
            "expired_reported": self._expired_reported,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the state by a :meth:`to_state` document."""
        self.joiner.from_state(state["joiner"])
        self.tracker.from_state(state["tracker"])
        self.arm_versions = {str(k): str(v) for k, v in state["arm_versions"].items()}
        repeat_ms = int(self.settings.repeat_interval_s * 1000)
        self.degradation = {}
        for version, entry in state["degradation"].items():
            self.degradation[version] = DegradationState(repeat_ms)
            self.degradation[version].from_state(entry)
        self.last_degradation = dict(state["last_degradation"])
        self._expired_reported = int(state["expired_reported"])

    # ------------------------------------------------------------------ evaluation

    def _on_joined(self, joined: Joined, cause: Mapping[str, Any]) -> bool:
        if self.on_joined is not None:
            self.on_joined(joined.is_fraud, joined.label_time_ms, cause)
        group = self.tracker.add(joined)
        m.LABELLED.labels(group.model_version, group.ab_arm).inc()
        if not self.tracker.due(group):
            return False
        self._evaluate_group(group, cause)
        return True

    def _evaluate_group(self, group: Group, cause: Mapping[str, Any]) -> None:
        info = self.registry.infos.get(group.model_version)
        if info is None:
            self.registry.want_info(group.model_version)
            return  # evaluated with the next label once the version's threshold is known
        threshold, source = info.threshold, "registry"
        if math.isnan(threshold):
            threshold, source = self.settings.default_threshold, "default"
        current = self.tracker.evaluate(group, threshold, source, self.joiner.clock_ms)
        if not current:
            return
        version, arm = group.model_version, group.ab_arm
        m.LABELLED_WINDOW.labels(version, arm).set(current["n_samples"])
        if math.isfinite(current["auc_roc"]):
            m.LIVE_AUC.labels(version, arm).set(current["auc_roc"])
        if math.isfinite(current["recall"]):
            m.LIVE_RECALL.labels(version, arm).set(current["recall"])
        for name in ("auprc", "precision", "fpr", "f1", "business_cost", "positive_rate"):
            if math.isfinite(current[name]):
                m.LIVE_METRIC.labels(version, arm, name).set(current[name])
        if arm == CHAMPION_ARM:
            self._check_degradation(group, info.baseline, cause)

    def _check_degradation(self, group: Group, baseline: dict[str, float], cause: Mapping[str, Any]) -> None:
        s = self.settings
        result = check_degradation(
            group.metrics,
            baseline,
            s.degradation_metrics,
            s.degradation_margin,
            s.degradation_alpha,
            s.min_labelled_samples,
            s.min_labelled_positives,
        )
        if result is None:
            return
        version = group.model_version
        for metric, drop in result.drops.items():
            m.PERFORMANCE_DROP.labels(version, metric).set(drop)
        self.last_degradation[version] = {
            "severity": result.severity,
            "metric": result.metric,
            "performance_drop": result.performance_drop,
            "drops": result.drops,
            "p_values": result.p_values,
            "samples": result.samples,
            "evaluated_at": iso(self.joiner.clock_ms),
        }
        state = self.degradation.setdefault(version, DegradationState(int(s.repeat_interval_s * 1000)))
        reason = state.observe(result.severity, self.joiner.clock_ms)
        if reason is None or result.severity is None:
            return
        payload = {
            "model_name": s.model_name,
            "model_version": version,
            "ab_arm": group.ab_arm,
            "severity": result.severity,
            "metric": result.metric,
            "baseline_value": float(result.baseline_value),
            "current_value": float(result.current_value),
            "performance_drop": float(result.performance_drop),
            "baseline_metrics": finite_map(result.baseline_metrics),
            "current_metrics": finite_map(result.current_metrics),
            "samples": int(result.samples),
            "action_hint": action_hint(result.severity),
        }
        event = self.emitter.emit(s.degraded, payload, cause, severity=result.severity, reason=reason)
        self.last_degradation[version]["event_id"] = event["envelope"]["event_id"]
        log.info(
            "performance_degraded",
            version=version,
            metric=result.metric,
            drop=round(result.performance_drop, 4),
            severity=result.severity,
            reason=reason,
        )

    # ------------------------------------------------------------------ view

    def view(self) -> dict[str, Any]:
        """Live metrics, baselines and degradation per version/arm, and join statistics (``GET /quality``)."""
        s = self.settings
        groups = []
        for (version, arm), g in sorted(self.tracker.groups.items()):
            info = self.registry.infos.get(version)
            groups.append(
                {
                    "model_version": version,
                    "ab_arm": arm,
                    "labelled_total": g.labelled_total,
                    "positives_total": g.positives_total,
                    "window_samples": int(g.metrics.get("n_samples", 0)) if g.metrics else 0,
                    "threshold": g.threshold,
                    "threshold_source": g.threshold_source or None,
                    "evaluated_at": iso(g.evaluated_at_ms),
                    "metrics": finite_map(g.metrics),
                    "baseline": None if info is None else finite_map(info.baseline),
                    "degradation": self.last_degradation.get(version) if arm == CHAMPION_ARM else None,
                }
            )
        return {
            "model_name": s.model_name,
            "arms": dict(self.arm_versions),
            "groups": groups,
            "labels": {
                "pending_predictions": len(self.joiner.pending),
                "orphan_labels": len(self.joiner.orphans),
                **self.joiner.stats.__dict__,
            },
            "settings": {
                "quality_window": s.quality_window,
                "min_labelled_samples": s.min_labelled_samples,
                "min_labelled_positives": s.min_labelled_positives,
                "degradation_metrics": s.degradation_metrics,
                "degradation_margin": s.degradation_margin,
                "label_ttl_s": s.label_ttl_s,
            },
        }
