"""Data and prediction drift: PSI windows against the champion's reference, the event state machine, reports.

* Predictions of the monitored model feed the data-drift window (feature vectors, both
  A/B arms) and the prediction-drift window (the champion arm's fraud probability).
  Each closed window is assessed (:func:`~drift_detector.severity.assess`); the state
  machine (:class:`~drift_detector.state.AlertStateMachine`) decides whether it is an
  event on ``data.drift.detected``, and an Evidently report of the window is requested.
* The reference is the serving champion's (asked from the registry in the background;
  a ``model.deployed`` makes it ask again): both its features and its ``fraud_probability``
  scores. A new reference re-bins the buffered feature rows and empties the prediction
  window, which only takes scores of the reference's own version.
* A succeeded ``monitor`` action shrinks the window (and the step in proportion) until it
  expires on the stream's event-time clock.

Not thread-safe on its own: the dispatcher serialises every call.
"""

from __future__ import annotations

import math
import operator
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.events import (
    CHAMPION_ARM,
    PREDICTION_COLUMN,
    Emitter,
    as_datetime,
    event_ms,
    iso,
)
from drift_detector.models import ModelInfoCache
from drift_detector.psi import Binning, fit_binning
from drift_detector.reports import ReportJob, ReportMeta, ReportWorker, new_report_id
from drift_detector.scaleout import PartialCollector
from drift_detector.severity import DriftAssessment, DriftPolicy, Level, assess
from drift_detector.state import AlertStateMachine
from drift_detector.target import TARGET, TargetDrift
from drift_detector.windows import WindowManager, WindowResult
from fraud_model.features import FEATURE_NAMES
from mlops_platform.kafka import Record
from mlops_platform.logs import get_logger

log = get_logger(__name__)

_FEATURES = operator.itemgetter(*FEATURE_NAMES)


def _feature_matrix(records: Sequence[Record]) -> np.ndarray:
    """The predictions' feature vectors ``[n, FEATURE_NAMES]`` (a missing feature is NaN)."""
    rows = [r.value.get("features") or {} for r in records]
    try:
        return np.array([_FEATURES(row) for row in rows], dtype=np.float32)  # every feature present
    except KeyError:
        nan = math.nan
        return np.array([[row.get(name, nan) for name in FEATURE_NAMES] for row in rows], dtype=np.float32)


def _scores(records: Sequence[Record], rows: Sequence[int]) -> np.ndarray:
    """The ``fraud_probability`` of the records at ``rows``, as a one-column matrix."""
    return np.array([[float(records[i].value.get(PREDICTION_COLUMN, math.nan))] for i in rows])


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

    def to_state(self) -> dict[str, Any]:
        return {
            "window": self.window.to_state(),
            "machine": self.machine.to_state(),
            "latest": None if self.latest is None else asdict(self.latest),
            "last_event": self.last_event,
            "windows_processed": self.windows_processed,
            "history": list(self.history),
        }

    def from_state(self, state: dict[str, Any], policy: DriftPolicy) -> None:
        """Replace the state by a :meth:`to_state` document (the assessment is recomputed)."""
        self.window.from_state(state["window"])
        self.machine.from_state(state["machine"])
        latest = state["latest"]
        self.latest = None if latest is None else WindowResult(**latest)
        self.assessment = None if self.latest is None else assess(self.latest.feature_psi, policy)
        self.last_event = state["last_event"]
        self.windows_processed = int(state["windows_processed"])
        self.history.clear()
        self.history.extend(state["history"])


class DriftEvaluator:
    """PSI windows, drift severity and state machine, report requests and the monitor override."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelInfoCache,
        emitter: Emitter,
        reports: ReportWorker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.emitter = emitter
        self.reports = reports
        self.clock = clock
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
        self.target = TargetDrift(settings, self.policy, emitter) if settings.target_drift else None
        self.reference_version: str | None = None
        self.reference_frame: Any = None
        #: the reference version of restored windows, until it is loaded again (see from_state)
        self.restored_reference: str | None = None
        #: when waiting for that reference ends (set at the first wait; survives restores)
        self.reference_wait_until: float | None = None
        self.monitor: Monitor | None = None
        #: the stream's event-time clock (latest prediction), for the monitor's expiry
        self.clock_ms = 0
        self._last_report: tuple[float, str] | None = None
        self._last_periodic = clock()
        m.WINDOW_SIZE.set(settings.window_size)

    # ------------------------------------------------------------------ reference

    def sync_registry(self) -> None:
        """Apply what the background registry lookups brought (a new champion's reference)."""
        target = self.registry.champion
        if target is None or target == self.reference_version:
            if target is None and self.registry.champion_resolved:
                self.restored_reference = None  # no champion any more: nothing to wait for
            return
        reference = self.registry.references.get(target)
        if reference is None:
            self.registry.want_reference(target)
            return
        keep = target == self.restored_reference
        self.restored_reference = None
        self._use_reference(target, reference.frame, keep=keep)

    def awaiting_reference(self) -> bool:
        """True while restored windows wait for their own reference to be loaded again.

        Fed before that, they would pass evaluation points without bins (no result, a
        missed event). Waiting ends when the reference is back, when the registry names
        another champion (the windows start over with it anyway), or after
        ``restore_reference_wait_s`` (the windows are re-binned whenever it arrives).
        """
        pending = self.restored_reference
        if pending is None:
            return False
        if self.registry.champion_resolved and self.registry.champion != pending:
            return False
        if self.reference_wait_until is None:
            self.reference_wait_until = self.clock() + self.settings.restore_reference_wait_s
        if self.clock() >= self.reference_wait_until:
            log.warning("restored_reference_not_loaded", version=pending)
            return False
        return True

    def _use_reference(self, version: str, frame: Any, *, keep: bool = False) -> None:
        """Bins from the reference ``frame``; ``keep``: the restored windows' own reference, state stays."""
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
            if keep:
                continue
            if track.drift_type == "prediction":
                # Scores are the serving model's own: the previous champion's scores still in
                # the window say nothing about the new one (features are model-independent and
                # are simply re-binned).
                track.window.clear()
            track.machine.reset()
            track.latest, track.assessment = None, None
        self.reference_version, self.reference_frame = version, frame
        if self.target is not None:
            rate = float(frame[TARGET].astype(float).mean()) if TARGET in frame.columns else None
            self.target.set_reference(version, rate, keep=keep)
        for other in [v for v in self.registry.references if v != version]:
            self.registry.references.pop(other, None)  # only the serving reference is needed
        if previous is not None:
            m.REFERENCE.labels(previous).set(0)
        m.REFERENCE.labels(version).set(1)
        for track in self.tracks.values():
            m.STATE.labels(track.drift_type).set(0 if not keep else int(track.machine.level))
        log.info("reference_switched", previous=previous, version=version, rows=len(frame), restored=keep)

    def on_deployed(self, record: Record) -> None:
        """Any alias change of the model: ask the registry what serves now."""
        version = str(record.value.get("version", ""))
        # The registry says what @champion is *now*: a replayed old deployment cannot move us back.
        self.registry.want_champion()
        if version:
            self.registry.want_info(version)

    def take_label(self, is_fraud: bool, time_ms: int, cause: Mapping[str, Any]) -> None:
        """A label joined with a prediction of the monitored model: the target-drift window."""
        if self.target is not None:
            self.target.take(is_fraud, time_ms, cause)

    # ------------------------------------------------------------------ predictions

    def take_predictions(self, records: Sequence[Record], times: np.ndarray) -> None:
        """Feed the monitored model's predictions (event times in ``times``) into the windows."""
        self.clock_ms = max(self.clock_ms, int(times.max()))
        self._expire_monitor()
        matrix = _feature_matrix(records)
        m.PREDICTIONS.inc(len(records))
        self._feed("data", matrix, times, records)

        champion_rows = self._champion_rows(records)
        if "prediction" in self.tracks and champion_rows:
            probs = _scores(records, champion_rows)
            self._feed("prediction", probs, times[champion_rows], [records[i] for i in champion_rows])

    def count_predictions(
        self, records: Sequence[Record], times: np.ndarray, partial: PartialCollector
    ) -> None:
        """Scale-out: bin the predictions into ``partial`` (the merger judges the windows), not our windows.

        The same rows as :meth:`take_predictions` feeds: every prediction's features, the
        champion arm's scores of the reference's version.
        """
        m.PREDICTIONS.inc(len(records))
        data = self.tracks["data"].window.binning
        if data is not None:
            partial.add("data", data, _feature_matrix(records), times)
        champion_rows = self._champion_rows(records)
        track = self.tracks.get("prediction")
        if track is not None and track.window.binning is not None and champion_rows:
            partial.add(
                "prediction", track.window.binning, _scores(records, champion_rows), times[champion_rows]
            )

    def _champion_rows(self, records: Sequence[Record]) -> list[int]:
        # Only scores of the model whose reference is in force: around a promotion the old
        # champion's in-flight predictions (and the new one's, before its reference is loaded)
        # would compare one model's scores with another's.
        return [
            i
            for i, r in enumerate(records)
            if r.value.get("ab_arm", CHAMPION_ARM) == CHAMPION_ARM
            and self.reference_version is not None
            and str(r.value.get("model_version", "")) == self.reference_version
        ]

    def evaluate_window(self, kind: str, result: WindowResult, cause: Mapping[str, Any]) -> None:
        """Judge a window evaluated elsewhere (the scale-out merger's summed counts) like one of ours."""
        self._on_window(self.tracks[kind], result, cause)

    def advance_clock(self, time_ms: int) -> None:
        """Move the event-time clock (the merger's, which sees no predictions); a monitor may expire."""
        self.clock_ms = max(self.clock_ms, int(time_ms))
        self._expire_monitor()

    def _feed(self, kind: str, matrix: np.ndarray, times: np.ndarray, records: Sequence[Record]) -> None:
        track = self.tracks[kind]
        before = track.window.total
        for result in track.window.feed(matrix, times):
            closing = records[min(result.rows_seen - before - 1, len(records) - 1)]
            self._on_window(track, result, closing.envelope)

    def _on_window(self, track: DriftTrack, result: WindowResult, cause: Mapping[str, Any]) -> None:
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
                "window_end": iso(result.end_ms),
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
        severity = decision.severity or "LOW"
        payload = {
            "severity": severity,
            "drift_type": kind,
            "state": decision.level.label,
            "drift_score": float(a.drift_score),
            "affected_features": list(a.affected_features),
            "feature_psi": {k: float(v) for k, v in result.feature_psi.items()},
            "window_start": as_datetime(result.start_ms),
            "window_end": as_datetime(result.end_ms),
            "window_size": int(result.size),
            "model_name": self.settings.model_name,
            "model_version": self.reference_version or "",
            "report_url": report_url,
        }
        event = self.emitter.emit(
            self.settings.drift, payload, cause, severity=severity, reason=decision.reason
        )
        track.last_event = {
            "event_id": event["envelope"]["event_id"],
            "reason": decision.reason,
            "state": payload["state"],
            "severity": payload["severity"],
            "drift_score": payload["drift_score"],
            "affected_features": payload["affected_features"],
            "window_end": iso(result.end_ms),
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

    def on_action(self, record: Record) -> None:
        """A succeeded ``monitor`` action with a window size and a duration: tighter window for a while."""
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
        log.info("monitor_window", window_size=size, step=step, until=iso(self.monitor.expires_ms))

    def _expire_monitor(self) -> None:
        if self.monitor is not None and self.clock_ms >= self.monitor.expires_ms:
            log.info("monitor_window_expired", action_id=self.monitor.action_id)
            self.monitor = None
            for track in self.tracks.values():
                track.window.resize(self.settings.window_size, self.settings.window_step)
            m.WINDOW_SIZE.set(self.settings.window_size)

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Windows, state machines, monitor override and event clock as plain data.

        The reference itself is not included, only its version: it is reloaded from
        MLflow (:meth:`awaiting_reference`), and its bins re-bin the restored rows.
        """
        return {
            "reference_version": self.reference_version or self.restored_reference,
            "clock_ms": self.clock_ms,
            "monitor": None if self.monitor is None else asdict(self.monitor),
            "tracks": {kind: track.to_state() for kind, track in self.tracks.items()},
            "target": None if self.target is None else self.target.to_state(),
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the state by a :meth:`to_state` document; the reference is loaded again."""
        for kind, track_state in state["tracks"].items():
            track = self.tracks.get(kind)
            if track is not None:  # a drift type switched off since is dropped
                track.from_state(track_state, self.policy)
        if self.target is not None and state["target"] is not None:
            self.target.from_state(state["target"])
        self.clock_ms = int(state["clock_ms"])
        self.monitor = None if state["monitor"] is None else Monitor(**state["monitor"])
        self.reference_version, self.reference_frame = None, None
        self.restored_reference = state["reference_version"]
        m.WINDOW_SIZE.set(self.tracks["data"].window.size)

    # ------------------------------------------------------------------ view

    def view(self) -> dict[str, Any]:
        """Reference, thresholds, window in force and every track's state (``GET /drift``)."""
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
                    "expires_at": iso(self.monitor.expires_ms),
                    "action_id": self.monitor.action_id,
                },
            },
            "tracks": {kind: self._track_view(track) for kind, track in self.tracks.items()},
            "target": None if self.target is None else self.target.view(),
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
                "start": iso(latest.start_ms),
                "end": iso(latest.end_ms),
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
                {"at": iso(at), "from": old, "to": new} for at, old, new in track.machine.transitions[-10:]
            ],
            "history": list(track.history)[-20:],
        }
