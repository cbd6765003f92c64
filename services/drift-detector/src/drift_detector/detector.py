"""The drift detector's domain core: records in, events out.

:class:`DriftDetector` is fed decoded records by the consumer loop (one thread) and
publishes through a callable, so unit tests drive it with plain dicts and a list.

* ``prediction.completed`` — the feature vector goes into the data-drift window and the
  champion's fraud probability into the prediction-drift window; the prediction waits
  for its label in the :class:`~drift_detector.labels.LabelJoiner`.
* ``prediction.feedback`` — joins a pending prediction; live quality per version/arm,
  the champion's degradation check and the A/B evaluation follow.
* ``model.deployed`` — the registry is asked again which version is ``@champion``; its
  reference sample (stored with its MLflow run) replaces the current one and the
  buffered rows are re-binned.
* ``system.actions`` — a succeeded ``monitor`` action with ``details.window_size`` and
  ``details.duration_s`` shrinks the window (and the step in proportion) until it expires.

Retried batches are idempotent: records at or below the last processed offset of their
partition are skipped, so the loop's rewind-and-retry never counts a row twice.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.labels import Joined, LabelJoiner, PendingPrediction
from drift_detector.models import ModelInfoCache
from drift_detector.psi import Binning, fit_binning
from drift_detector.quality import (
    ABEvaluation,
    ABScheduler,
    Group,
    QualityTracker,
    check_degradation,
    evaluate_ab,
)
from drift_detector.reports import ReportJob, ReportMeta, ReportWorker, new_report_id
from drift_detector.severity import DriftAssessment, DriftPolicy, Level, action_hint, assess
from drift_detector.state import AlertStateMachine, DegradationState
from drift_detector.windows import WindowManager, WindowResult
from fraud_model.features import FEATURE_NAMES
from mlops_platform.contracts import make_event
from mlops_platform.kafka import Record
from mlops_platform.logs import get_logger

log = get_logger(__name__)

SOURCE = "drift-detector"
PREDICTION_COLUMN = "fraud_probability"
CHAMPION_ARM = "champion"
CHALLENGER_ARM = "challenger"

_FEATURES = operator.itemgetter(*FEATURE_NAMES)

Publish = Callable[[str, dict[str, Any], str | None], None]


def event_ms(envelope: Mapping[str, Any] | None, fallback: int = 0) -> int:
    """Event time of an envelope in epoch milliseconds."""
    value = (envelope or {}).get("event_time")
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return fallback


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else _dt(ms).isoformat()


def _finite_map(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


@dataclass
class Monitor:
    """A temporary window override requested by the auto-responder."""

    window_size: int
    step: int
    expires_ms: int
    action_id: str


@dataclass
class DriftTrack:
    """Windows, state machine and latest result of one drift type (data or prediction)."""

    drift_type: str
    columns: list[str]
    window: WindowManager
    machine: AlertStateMachine
    latest: WindowResult | None = None
    assessment: DriftAssessment | None = None
    last_event: dict[str, Any] | None = None
    windows_processed: int = 0

    def __post_init__(self) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=50)


class DriftDetector:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelInfoCache,
        publish: Publish,
        reports: ReportWorker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.publish = publish
        self.reports = reports
        self.clock = clock
        self.lock = threading.RLock()
        self.policy = DriftPolicy(
            watch=settings.psi_watch,
            drift=settings.psi_drift,
            psi_scale=settings.drift_score_psi_scale,
            critical_score=settings.severity_critical_score,
            critical_features=settings.severity_critical_features,
            high_score=settings.severity_high_score,
            high_features=settings.severity_high_features,
        )
        repeat_ms = int(settings.repeat_interval_s * 1000)
        self.tracks: dict[str, DriftTrack] = {}
        kinds = [("data", list(FEATURE_NAMES))]
        if settings.prediction_drift:
            kinds.append(("prediction", [PREDICTION_COLUMN]))
        for kind, columns in kinds:
            self.tracks[kind] = DriftTrack(
                drift_type=kind,
                columns=columns,
                window=WindowManager(
                    columns, settings.window_size, settings.window_size, settings.window_step
                ),
                machine=AlertStateMachine(repeat_ms, settings.clear_windows, settings.publish_recovery),
            )
        self.joiner = LabelJoiner(
            ttl_ms=int(settings.label_ttl_s * 1000),
            max_pending=settings.max_pending,
            max_orphans=settings.max_orphans,
        )
        self.quality = QualityTracker(
            settings.quality_window, settings.quality_eval_every, settings.max_labelled_per_group
        )
        self.degradation: dict[str, DegradationState] = {}
        self.last_degradation: dict[str, dict[str, Any]] = {}
        self.ab = ABScheduler(
            settings.ab_min_samples, settings.ab_min_positives, settings.ab_reevaluate_factor
        )
        self.evaluations: deque[dict[str, Any]] = deque(maxlen=100)
        self.arm_versions: dict[str, str] = {}
        # Envelope of the model.deployed that put each version in service: an A/B
        # evaluation names it as its cause, so a promotion traces back through the
        # challenger's deployment to whatever triggered the retrain.
        self.deployments: dict[str, dict[str, Any]] = {}
        self.reference_version: str | None = None
        self.reference_frame: Any = None
        self.monitor: Monitor | None = None
        self.clock_ms = 0
        self.ignored_predictions = 0
        self._processed: dict[tuple[str, int], int] = {}
        self._expired_reported = 0
        self._last_report: tuple[float, str] | None = None
        self._last_periodic = clock()
        self._published = 0
        m.WINDOW_SIZE.set(settings.window_size)

    # ------------------------------------------------------------------ input

    def handle(self, records: Sequence[Record]) -> int:
        """Process a batch; returns how many events were published."""
        with self.lock:
            before = self._published
            self._sync_registry()
            fresh = [r for r in records if self._first_time(r)]
            predictions: list[Record] = []
            for record in fresh:
                if record.topic == self.settings.predictions_topic:
                    predictions.append(record)
                    continue
                self._flush_predictions(predictions)
                predictions = []
                if record.topic == self.settings.feedback_topic:
                    self._on_label(record)
                elif record.topic == self.settings.deployments_topic:
                    self._on_deployed(record)
                elif record.topic == self.settings.actions_topic:
                    self._on_action(record)
                self._done([record])
            self._flush_predictions(predictions)
            self.joiner.expire()
            self._update_join_metrics()
            return self._published - before

    def _done(self, records: Sequence[Record]) -> None:
        # Marked as soon as handled: if a later record fails, the loop replays the batch one
        # record at a time, and the ones already counted are skipped.
        for record in records:
            self._processed[(record.topic, record.partition)] = record.offset

    def _first_time(self, record: Record) -> bool:
        last = self._processed.get((record.topic, record.partition))
        return last is None or record.offset > last

    # ------------------------------------------------------------------ registry

    def sync(self) -> None:
        """Pick up registry results now (called by the lookup thread, so no traffic is needed)."""
        with self.lock:
            self._sync_registry()

    def _sync_registry(self) -> None:
        """Apply what the background registry lookups brought (a new champion's reference)."""
        target = self.registry.champion
        if target is None or target == self.reference_version:
            return
        reference = self.registry.references.get(target)
        if reference is None:
            self.registry.want_reference(target)
            return
        self._use_reference(target, reference.frame)

    def _use_reference(self, version: str, frame: Any) -> None:
        previous = self.reference_version
        s = self.settings
        for track in self.tracks.values():
            if not set(track.columns) <= set(frame.columns):
                log.warning("reference_lacks_columns", drift_type=track.drift_type, version=version)
                track.window.set_binning(None)
                continue
            binning: Binning = fit_binning(
                frame, track.columns, s.psi_bins, s.psi_discrete_max_values, s.psi_epsilon
            )
            track.window.set_binning(binning)
            track.machine.reset()
            track.latest, track.assessment = None, None
        self.reference_version, self.reference_frame = version, frame
        for other in [v for v in self.registry.references if v != version]:
            self.registry.references.pop(other, None)  # only the serving reference is needed
        if previous is not None:
            m.REFERENCE.labels(previous).set(0)
        m.REFERENCE.labels(version).set(1)
        for track in self.tracks.values():
            m.STATE.labels(track.drift_type).set(0)
        log.info("reference_switched", previous=previous, version=version, rows=len(frame))

    # ------------------------------------------------------------------ predictions

    def _flush_predictions(self, records: list[Record]) -> None:
        if not records:
            return
        self._take_predictions(records)
        self._done(records)

    def _take_predictions(self, records: list[Record]) -> None:
        ours = [r for r in records if r.value.get("model_name") == self.settings.model_name]
        self.ignored_predictions += len(records) - len(ours)
        if not ours:
            return
        times = np.array([event_ms(r.envelope, r.timestamp_ms) for r in ours], dtype=np.int64)
        self.clock_ms = max(self.clock_ms, int(times.max()))
        self._expire_monitor()
        nan = math.nan
        rows = [r.value.get("features") or {} for r in ours]
        try:
            matrix = np.array([_FEATURES(row) for row in rows], dtype=np.float32)  # every feature present
        except KeyError:
            matrix = np.array(
                [[row.get(name, nan) for name in FEATURE_NAMES] for row in rows], dtype=np.float32
            )
        m.PREDICTIONS.inc(len(ours))
        self._feed("data", matrix, times, ours)

        champion_rows = [i for i, r in enumerate(ours) if r.value.get("ab_arm", CHAMPION_ARM) == CHAMPION_ARM]
        if "prediction" in self.tracks and champion_rows:
            probs = np.array([[float(ours[i].value.get(PREDICTION_COLUMN, nan))] for i in champion_rows])
            self._feed("prediction", probs, times[champion_rows], [ours[i] for i in champion_rows])

        for record, time_ms in zip(ours, times.tolist(), strict=True):
            value = record.value
            version = str(value.get("model_version", ""))
            arm = str(value.get("ab_arm") or CHAMPION_ARM)
            self.arm_versions[arm] = version
            self.quality.saw_prediction(version, arm, time_ms)
            joined = self.joiner.add_prediction(
                str(value.get("transaction_id")),
                PendingPrediction(version, arm, float(value.get(PREDICTION_COLUMN, nan)), time_ms),
            )
            if joined is not None:
                self._on_joined(joined, record.envelope)

    def _feed(self, kind: str, matrix: np.ndarray, times: np.ndarray, records: list[Record]) -> None:
        track = self.tracks[kind]
        before = track.window.total
        for result in track.window.feed(matrix, times):
            closing = records[min(result.rows_seen - before - 1, len(records) - 1)]
            self._on_window(track, result, closing.envelope)

    def _on_window(self, track: DriftTrack, result: WindowResult, cause: dict[str, Any]) -> None:
        a = assess(result.feature_psi, self.policy)
        track.latest, track.assessment = result, a
        track.windows_processed += 1
        kind = track.drift_type
        m.WINDOWS.labels(kind).inc()
        m.STATE.labels(kind).set(int(track.machine.level))
        m.SCORE.labels(kind).set(a.drift_score)
        for name, value in result.feature_psi.items():
            m.FEATURE_PSI.labels(kind, name).set(value)
            if kind == "data":
                m.FEATURE_STATE.labels(name).set(int(self.policy.feature_level(value)))
        decision = track.machine.observe(a.level, a.severity, result.end_ms)
        m.STATE.labels(kind).set(int(track.machine.level))
        track.history.append(
            {
                "window_end": _iso(result.end_ms),
                "size": result.size,
                "level": a.level.label,
                "max_psi": round(a.max_psi, 5),
                "drift_score": round(a.drift_score, 5),
                "event": decision.reason if decision else None,
            }
        )
        report_url: str | None = None
        if kind == "data":
            periodic = self.settings.report_periodic_s
            if decision is not None:
                report_url = self._request_report(track, result, a, decision.level, "event")
            elif periodic > 0 and self.clock() - self._last_periodic >= periodic:
                self._last_periodic = self.clock()
                self._request_report(track, result, a, a.level, "periodic")
        if decision is None:
            return
        payload = {
            "severity": decision.severity or "LOW",
            "drift_type": kind,
            "state": decision.level.label,
            "drift_score": float(a.drift_score),
            "affected_features": list(a.affected_features),
            "feature_psi": {k: float(v) for k, v in result.feature_psi.items()},
            "window_start": _dt(result.start_ms),
            "window_end": _dt(result.end_ms),
            "window_size": int(result.size),
            "model_name": self.settings.model_name,
            "model_version": self.reference_version or "",
            "report_url": report_url,
        }
        event = self._emit(
            self.settings.drift_topic, payload, cause, decision.severity or "LOW", decision.reason
        )
        track.last_event = {
            "event_id": event["envelope"]["event_id"],
            "reason": decision.reason,
            "state": payload["state"],
            "severity": payload["severity"],
            "drift_score": payload["drift_score"],
            "affected_features": payload["affected_features"],
            "window_end": _iso(result.end_ms),
            "report_url": report_url,
        }
        log.info(
            "drift_event",
            drift_type=kind,
            reason=decision.reason,
            state=payload["state"],
            severity=payload["severity"],
            affected=payload["affected_features"],
            report_url=report_url,
        )

    def _request_report(
        self, track: DriftTrack, result: WindowResult, a: DriftAssessment, level: Level, reason: str
    ) -> str | None:
        if self.reports is None or self.reference_frame is None:
            return None
        if not set(track.columns) <= set(self.reference_frame.columns):
            return None
        now = self.clock()
        if reason == "event" and self._last_report is not None:
            at, url = self._last_report
            if now - at < self.settings.report_min_interval_s:
                return url
        report_id = new_report_id()
        url = f"{self.settings.base_url}/reports/{report_id}"
        meta = ReportMeta(
            id=report_id,
            url=url,
            created_at=datetime.now(UTC).isoformat(),
            status="pending",
            reason=reason,
            model_name=self.settings.model_name,
            model_version=self.reference_version or "",
            drift_type=track.drift_type,
            state=level.label,
            severity=a.severity,
            drift_score=float(a.drift_score),
            window_start_ms=result.start_ms,
            window_end_ms=result.end_ms,
            window_size=result.size,
            affected_features=list(a.affected_features),
            feature_psi=dict(result.feature_psi),
            psi_threshold=self.settings.psi_drift,
        )
        job = ReportJob(
            meta=meta,
            columns=track.columns,
            current=track.window.window_values(),
            reference=self.reference_frame[track.columns].to_numpy(dtype=np.float32),
            path=self.reports.store.html_path(report_id),
        )
        if not self.reports.submit(job):
            log.warning("report_dropped", report=report_id)
        self._last_report = (now, url)
        return url

    # ------------------------------------------------------------------ monitor actions

    def _on_action(self, record: Record) -> None:
        value = record.value
        if value.get("action") != "monitor" or value.get("status") != "succeeded":
            return
        details = value.get("details") or {}
        if details.get("model_name") not in (None, "", self.settings.model_name):
            return
        try:
            size = int(float(details["window_size"]))
            duration_s = float(details["duration_s"])
        except (KeyError, TypeError, ValueError):
            log.info("monitor_action_without_window", action_id=value.get("action_id"))
            return
        s = self.settings
        size = max(s.min_window_size, min(size, s.window_size))
        step = max(1, min(size, round(size * s.window_step / s.window_size)))
        start = event_ms(record.envelope, record.timestamp_ms)
        expires = start + int(duration_s * 1000)
        # system.actions is kept forever: a fresh consumer group replays old actions. One that
        # already ended (on the stream's clock, or the wall clock before any traffic) is history.
        now = self.clock_ms or int(time.time() * 1000)
        if expires <= now:
            log.info("monitor_action_expired", action_id=value.get("action_id"))
            return
        self.monitor = Monitor(size, step, expires, str(value.get("action_id", "")))
        for track in self.tracks.values():
            track.window.resize(size, step)
        m.WINDOW_SIZE.set(size)
        log.info("monitor_window", window_size=size, step=step, until=_iso(self.monitor.expires_ms))

    def _expire_monitor(self) -> None:
        if self.monitor is not None and self.clock_ms >= self.monitor.expires_ms:
            log.info("monitor_window_expired", action_id=self.monitor.action_id)
            self.monitor = None
            for track in self.tracks.values():
                track.window.resize(self.settings.window_size, self.settings.window_step)
            m.WINDOW_SIZE.set(self.settings.window_size)

    # ------------------------------------------------------------------ deployments

    def _on_deployed(self, record: Record) -> None:
        value = record.value
        if value.get("model_name") != self.settings.model_name:
            return
        version = str(value.get("version", ""))
        log.info("model_deployed_seen", alias=value.get("alias"), version=version, action=value.get("action"))
        if version and version not in self.deployments:
            self.deployments[version] = dict(record.envelope)
            while len(self.deployments) > 100:
                self.deployments.pop(next(iter(self.deployments)))
        # The registry says what @champion is *now*: a replayed old deployment cannot move us back.
        self.registry.want_champion()
        if version:
            self.registry.want_info(version)

    # ------------------------------------------------------------------ labels

    def _on_label(self, record: Record) -> None:
        value = record.value
        m.LABELS.inc()
        time_ms = event_ms(record.envelope, record.timestamp_ms)
        joined = self.joiner.add_label(str(value.get("transaction_id")), bool(value.get("is_fraud")), time_ms)
        if joined is not None:
            self._on_joined(joined, record.envelope)

    def _on_joined(self, joined: Joined, cause: dict[str, Any]) -> None:
        group = self.quality.add(joined)
        m.LABELLED.labels(group.model_version, group.ab_arm).inc()
        if self.quality.due(group):
            self._evaluate_group(group, cause)
            self._maybe_ab(cause)

    def _evaluate_group(self, group: Group, cause: dict[str, Any]) -> None:
        info = self.registry.infos.get(group.model_version)
        if info is None:
            self.registry.want_info(group.model_version)
            return  # evaluated with the next label once the version's threshold is known
        threshold, source = info.threshold, "registry"
        if math.isnan(threshold):
            threshold, source = self.settings.default_threshold, "default"
        current = self.quality.evaluate(group, threshold, source, self.joiner.clock_ms)
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

    def _check_degradation(self, group: Group, baseline: dict[str, float], cause: dict[str, Any]) -> None:
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
            "evaluated_at": _iso(self.joiner.clock_ms),
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
            "baseline_metrics": _finite_map(result.baseline_metrics),
            "current_metrics": _finite_map(result.current_metrics),
            "samples": int(result.samples),
            "action_hint": action_hint(result.severity),
        }
        event = self._emit(s.degraded_topic, payload, cause, result.severity, reason)
        self.last_degradation[version]["event_id"] = event["envelope"]["event_id"]
        log.info(
            "performance_degraded",
            version=version,
            metric=result.metric,
            drop=round(result.performance_drop, 4),
            severity=result.severity,
            reason=reason,
        )

    def _maybe_ab(self, cause: dict[str, Any]) -> None:
        champion = self.arm_versions.get(CHAMPION_ARM)
        challenger = self.arm_versions.get(CHALLENGER_ARM)
        if champion is None or challenger is None or champion == challenger:
            return
        g_champ = self.quality.groups.get((champion, CHAMPION_ARM))
        g_chall = self.quality.groups.get((challenger, CHALLENGER_ARM))
        if g_champ is None or g_chall is None or g_chall.first_prediction_ms is None:
            return
        since = g_chall.first_prediction_ms
        p_champ, y_champ = g_champ.samples.since(since)
        p_chall, y_chall = g_chall.samples.since(since)
        pair = (champion, challenger)
        if not self.ab.due(pair, p_champ.size, p_chall.size, int(y_champ.sum()), int(y_chall.sum())):
            return
        infos = [self.registry.infos.get(v) for v in pair]
        if any(info is None for info in infos):
            for v in pair:
                self.registry.want_info(v)
            return
        thresholds = [
            info.threshold
            if info is not None and not math.isnan(info.threshold)
            else self.settings.default_threshold
            for info in infos
        ]
        result: ABEvaluation = evaluate_ab(
            (champion, p_champ, y_champ, thresholds[0]),
            (challenger, p_chall, y_chall, thresholds[1]),
            fn_cost=self.settings.fn_cost,
            fp_cost=self.settings.fp_cost,
            alpha=self.settings.ab_alpha,
            since_ms=since,
            now_ms=self.joiner.clock_ms,
        )
        self.ab.done(pair, p_champ.size, p_chall.size)
        payload = {
            "model_name": self.settings.model_name,
            "champion_version": champion,
            "challenger_version": challenger,
            "winner": result.winner,
            "metric": result.metric,
            "test_name": result.test_name,
            "p_value": float(result.p_value),
            "significant": result.significant,
            "champion_metrics": _finite_map(result.champion_metrics),
            "challenger_metrics": _finite_map(result.challenger_metrics),
            "champion_samples": result.champion_samples,
            "challenger_samples": result.challenger_samples,
        }
        deployed = self.deployments.get(challenger)
        event = self._emit(self.settings.evaluation_topic, payload, deployed or cause, "n/a", result.winner)
        record = result.as_dict()
        record.update(
            event_id=event["envelope"]["event_id"],
            since=_iso(since),
            evaluated_at=_iso(result.evaluated_at_ms),
        )
        self.evaluations.appendleft(record)
        m.AB_P_VALUE.labels(champion, challenger).set(result.p_value)
        m.EVALUATIONS.labels(result.winner).inc()
        log.info(
            "ab_evaluation",
            champion=champion,
            challenger=challenger,
            winner=result.winner,
            p_value=result.p_value,
            samples=(result.champion_samples, result.challenger_samples),
        )

    # ------------------------------------------------------------------ output

    def _emit(
        self, topic: str, payload: dict[str, Any], cause: dict[str, Any] | None, severity: str, reason: str
    ) -> dict[str, Any]:
        event = make_event(SOURCE, payload, cause=cause or None)
        self.publish(topic, event, self.settings.model_name)
        self._published += 1
        m.EVENTS.labels(topic, severity, reason).inc()
        return event

    def _update_join_metrics(self) -> None:
        m.PENDING.set(len(self.joiner.pending))
        m.ORPHANS.set(len(self.joiner.orphans))
        expired = self.joiner.stats.expired
        delta = expired - self._expired_reported
        if delta > 0:
            m.EXPIRED.inc(delta)
        self._expired_reported = expired

    # ------------------------------------------------------------------ HTTP views

    def drift_view(self) -> dict[str, Any]:
        with self.lock:
            s = self.settings
            window = self.tracks["data"].window
            return {
                "model_name": s.model_name,
                "reference_version": self.reference_version,
                "reference_rows": None if self.reference_frame is None else len(self.reference_frame),
                "thresholds": {"watch": s.psi_watch, "drift": s.psi_drift},
                "window": {
                    "size": window.size,
                    "step": window.step,
                    "default_size": s.window_size,
                    "default_step": s.window_step,
                    "rows_seen": window.total,
                    "monitor": None
                    if self.monitor is None
                    else {
                        "window_size": self.monitor.window_size,
                        "step": self.monitor.step,
                        "expires_at": _iso(self.monitor.expires_ms),
                        "action_id": self.monitor.action_id,
                    },
                },
                "ignored_predictions": self.ignored_predictions,
                "tracks": {kind: self._track_view(track) for kind, track in self.tracks.items()},
            }

    def _track_view(self, track: DriftTrack) -> dict[str, Any]:
        latest, a = track.latest, track.assessment
        features = None
        if latest is not None:
            features = {
                name: {"psi": round(value, 6), "level": self.policy.feature_level(value).label}
                for name, value in sorted(latest.feature_psi.items(), key=lambda kv: -kv[1])
            }
        return {
            "state": track.machine.level.label,
            "severity": track.machine.severity,
            "windows_processed": track.windows_processed,
            "latest_window": None
            if latest is None or a is None
            else {
                "start": _iso(latest.start_ms),
                "end": _iso(latest.end_ms),
                "size": latest.size,
                "level": a.level.label,
                "severity": a.severity,
                "drift_score": round(a.drift_score, 6),
                "affected_features": a.affected_features,
                "watch_features": a.watch_features,
            },
            "features": features,
            "last_event": track.last_event,
            "transitions": [
                {"at": _iso(at), "from": old, "to": new} for at, old, new in track.machine.transitions[-10:]
            ],
            "history": list(track.history)[-20:],
        }

    def quality_view(self) -> dict[str, Any]:
        with self.lock:
            groups = []
            for (version, arm), g in sorted(self.quality.groups.items()):
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
                        "evaluated_at": _iso(g.evaluated_at_ms),
                        "metrics": _finite_map(g.metrics),
                        "baseline": None if info is None else _finite_map(info.baseline),
                        "degradation": self.last_degradation.get(version) if arm == CHAMPION_ARM else None,
                    }
                )
            stats = self.joiner.stats
            return {
                "model_name": self.settings.model_name,
                "arms": dict(self.arm_versions),
                "groups": groups,
                "labels": {
                    "pending_predictions": len(self.joiner.pending),
                    "orphan_labels": len(self.joiner.orphans),
                    **stats.__dict__,
                },
                "settings": {
                    "quality_window": self.settings.quality_window,
                    "min_labelled_samples": self.settings.min_labelled_samples,
                    "min_labelled_positives": self.settings.min_labelled_positives,
                    "degradation_metrics": self.settings.degradation_metrics,
                    "degradation_margin": self.settings.degradation_margin,
                    "label_ttl_s": self.settings.label_ttl_s,
                },
            }

    def evaluations_view(self) -> dict[str, Any]:
        with self.lock:
            champion = self.arm_versions.get(CHAMPION_ARM)
            challenger = self.arm_versions.get(CHALLENGER_ARM)
            current: dict[str, Any] | None = None
            if champion and challenger and champion != challenger:
                g_champ = self.quality.groups.get((champion, CHAMPION_ARM))
                g_chall = self.quality.groups.get((challenger, CHALLENGER_ARM))
                since = g_chall.first_prediction_ms if g_chall else None
                n_champ = g_champ.samples.since(since)[0].size if g_champ and since is not None else 0
                n_chall = g_chall.samples.n if g_chall else 0
                current = {
                    "champion_version": champion,
                    "challenger_version": challenger,
                    "since": _iso(since),
                    "champion_samples": n_champ,
                    "challenger_samples": n_chall,
                    "min_samples": self.settings.ab_min_samples,
                    "last_evaluated_at_samples": self.ab.evaluated.get((champion, challenger)),
                }
            return {
                "test": {
                    "metric": "business_cost_per_txn",
                    "test_name": "welch_t_test",
                    "alpha": self.settings.ab_alpha,
                    "min_samples": self.settings.ab_min_samples,
                    "min_positives": self.settings.ab_min_positives,
                    "reevaluate_factor": self.settings.ab_reevaluate_factor,
                },
                "current_pair": current,
                "evaluations": list(self.evaluations),
            }
