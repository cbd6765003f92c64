"""Target drift: the label (fraud) rate of the delayed labels against the serving model's training rate.

Every label joined with a prediction of the monitored model (both A/B arms: they see the
same population) enters a count-based window of the last ``target_window`` labels,
evaluated every ``target_step`` labels. The reference rate is the serving model's: the
``is_fraud`` share of its logged reference sample (a stratified slice of its validation
split, so its training label rate); a new champion brings its own and resets the window.

A window's level:

* the change is tested first: one-sample binomial z-test of the window's rate against the
  reference rate (two-sided, ``target_alpha``); not significant → **stable**;
* significant and the relative change ``|rate − ref| / ref`` above ``target_drift_change``
  (0.5) → **drift**, above ``target_watch_change`` (0.25) → **watch**, else stable.

``drift_score = min(1, relative change / target_score_scale)`` (scale 2.0: a rate three
times the reference saturates), so the shared severity rules apply (drift: CRITICAL above
0.8, HIGH above 0.6, else MEDIUM; watch: LOW). The event is a ``data.drift.detected`` with
``drift_type=target``, ``affected_features=["is_fraud"]`` when drifting, and
``feature_psi={"is_fraud": PSI}`` (the PSI of the two Bernoulli distributions).

Not thread-safe on its own: the dispatcher serialises every call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.events import Emitter, as_datetime, iso
from drift_detector.severity import DriftPolicy, Level, drift_severity
from drift_detector.snapshot import pack_array, unpack_array
from drift_detector.state import AlertStateMachine
from mlops_platform.logs import get_logger

log = get_logger(__name__)

TARGET = "is_fraud"


def _z_crit(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


def bernoulli_psi(reference: float, current: float, epsilon: float = 1e-4) -> float:
    """PSI of two Bernoulli distributions (shares floored at ``epsilon``)."""
    p = min(max(reference, epsilon), 1 - epsilon)
    q = min(max(current, epsilon), 1 - epsilon)
    return (q - p) * math.log(q / p) + ((1 - q) - (1 - p)) * math.log((1 - q) / (1 - p))


@dataclass(frozen=True)
class TargetAssessment:
    rate: float
    reference_rate: float
    relative_change: float
    z: float
    significant: bool
    level: Level
    drift_score: float
    severity: str | None
    psi: float
    size: int


def assess_target(
    labels: int, positives: int, reference_rate: float, settings: Settings, policy: DriftPolicy
) -> TargetAssessment:
    """Level, score and severity of one window of ``labels`` labels with ``positives`` frauds."""
    rate = positives / labels if labels else 0.0
    p = min(max(reference_rate, 1e-6), 1 - 1e-6)
    z = (rate - p) / math.sqrt(p * (1 - p) / max(labels, 1))
    significant = abs(z) > _z_crit(settings.target_alpha)
    change = abs(rate - p) / p
    level = Level.STABLE
    if significant and change > settings.target_drift_change:
        level = Level.DRIFT
    elif significant and change > settings.target_watch_change:
        level = Level.WATCH
    score = min(1.0, change / settings.target_score_scale)
    severity = drift_severity(level, score, 1 if level is Level.DRIFT else 0, policy)
    return TargetAssessment(
        rate=rate,
        reference_rate=reference_rate,
        relative_change=(rate - p) / p,
        z=z,
        significant=significant,
        level=level,
        drift_score=score,
        severity=severity,
        psi=bernoulli_psi(p, rate, settings.psi_epsilon),
        size=labels,
    )


class TargetDrift:
    """The label-rate window of the monitored model and its event state machine."""

    def __init__(self, settings: Settings, policy: DriftPolicy, emitter: Emitter) -> None:
        self.settings = settings
        self.policy = policy
        self.emitter = emitter
        self.window: deque[tuple[bool, int]] = deque(maxlen=settings.target_window)
        self.positives = 0
        self.until_eval = settings.target_window
        self.reference_version: str | None = None
        self.reference_rate: float | None = None
        self.machine = AlertStateMachine(
            int(settings.repeat_interval_s * 1000), settings.clear_windows, settings.publish_recovery
        )
        self.latest: TargetAssessment | None = None
        self.latest_end_ms: int | None = None
        self.windows_processed = 0
        self.last_event: dict[str, Any] | None = None

    def set_reference(self, version: str, rate: float | None, *, keep: bool = False) -> None:
        """A new serving model: its training label rate; the labels seen so far start over.

        ``keep``: the same reference reloaded after a restart; window and state stay.
        """
        self.reference_version = version
        self.reference_rate = rate if rate is not None and math.isfinite(rate) and 0 < rate < 1 else None
        if keep:
            return
        self.window.clear()
        self.positives = 0
        self.until_eval = self.settings.target_window
        self.machine.reset()
        self.latest, self.latest_end_ms = None, None
        m.STATE.labels("target").set(0)
        if self.reference_rate is None:
            log.warning("target_reference_rate_unknown", version=version)

    def to_state(self) -> dict[str, Any]:
        """The label window, schedule, state machine and latest assessment as plain data."""
        latest = None if self.latest is None else {**asdict(self.latest), "level": int(self.latest.level)}
        return {
            "labels": pack_array(np.array([f for f, _ in self.window], dtype=bool)),
            "times": pack_array(np.array([t for _, t in self.window], dtype=np.int64)),
            "positives": self.positives,
            "until_eval": self.until_eval,
            "reference_version": self.reference_version,
            "reference_rate": self.reference_rate,
            "machine": self.machine.to_state(),
            "latest": latest,
            "latest_end_ms": self.latest_end_ms,
            "windows_processed": self.windows_processed,
            "last_event": self.last_event,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the state by a :meth:`to_state` document (the window length is the settings')."""
        labels = unpack_array(state["labels"]).tolist()
        times = unpack_array(state["times"]).tolist()
        self.window.clear()
        self.window.extend(zip((bool(f) for f in labels), (int(t) for t in times), strict=True))
        self.positives = sum(1 for f, _ in self.window if f)
        self.until_eval = int(state["until_eval"])
        self.reference_version = state["reference_version"]
        self.reference_rate = state["reference_rate"]
        self.machine.from_state(state["machine"])
        latest = state["latest"]
        self.latest = (
            None if latest is None else TargetAssessment(**{**latest, "level": Level(latest["level"])})
        )
        self.latest_end_ms = state["latest_end_ms"]
        self.windows_processed = int(state["windows_processed"])
        self.last_event = state["last_event"]

    def take(self, is_fraud: bool, time_ms: int, cause: Mapping[str, Any]) -> None:
        """One joined label of the monitored model."""
        if self.reference_rate is None:
            return
        if len(self.window) == self.window.maxlen and self.window[0][0]:
            self.positives -= 1
        self.window.append((is_fraud, time_ms))
        self.positives += int(is_fraud)
        self.until_eval -= 1
        if self.until_eval > 0:
            return
        self.until_eval = self.settings.target_step
        self._evaluate(cause)

    def _evaluate(self, cause: Mapping[str, Any]) -> None:
        assert self.reference_rate is not None
        s = self.settings
        a = assess_target(len(self.window), self.positives, self.reference_rate, s, self.policy)
        start_ms = min(t for _, t in self.window)
        end_ms = max(t for _, t in self.window)
        self.latest, self.latest_end_ms = a, end_ms
        self.windows_processed += 1
        m.WINDOWS.labels("target").inc()
        m.SCORE.labels("target").set(a.drift_score)
        m.FEATURE_PSI.labels("target", TARGET).set(a.psi)
        m.LABEL_RATE.labels("window").set(a.rate)
        m.LABEL_RATE.labels("reference").set(a.reference_rate)
        decision = self.machine.observe(a.level, a.severity, end_ms)
        m.STATE.labels("target").set(int(self.machine.level))
        if decision is None:
            return
        severity = decision.severity or "LOW"
        score = a.drift_score if decision.level is not Level.STABLE else 0.0
        payload = {
            "severity": severity,
            "drift_type": "target",
            "state": decision.level.label,
            "drift_score": float(score),
            "affected_features": [TARGET] if decision.level is Level.DRIFT else [],
            "feature_psi": {TARGET: float(a.psi)},
            "window_start": as_datetime(start_ms),
            "window_end": as_datetime(end_ms),
            "window_size": int(a.size),
            "model_name": s.model_name,
            "model_version": self.reference_version or "",
            "report_url": None,
        }
        event = self.emitter.emit(s.drift, payload, cause, severity=severity, reason=decision.reason)
        self.last_event = {
            "event_id": event["envelope"]["event_id"],
            "reason": decision.reason,
            "state": payload["state"],
            "severity": severity,
            "drift_score": payload["drift_score"],
            "label_rate": a.rate,
            "reference_rate": a.reference_rate,
            "window_end": iso(end_ms),
        }
        log.info(
            "target_drift_event",
            reason=decision.reason,
            state=payload["state"],
            severity=severity,
            rate=round(a.rate, 5),
            reference_rate=round(a.reference_rate, 5),
        )

    def view(self) -> dict[str, Any]:
        a = self.latest
        return {
            "state": self.machine.level.label,
            "severity": self.machine.severity,
            "windows_processed": self.windows_processed,
            "reference_version": self.reference_version,
            "reference_rate": self.reference_rate,
            "labels_in_window": len(self.window),
            "latest_window": None
            if a is None
            else {
                "end": iso(self.latest_end_ms),
                "size": a.size,
                "label_rate": round(a.rate, 6),
                "reference_rate": round(a.reference_rate, 6),
                "relative_change": round(a.relative_change, 6),
                "z": round(a.z, 4),
                "significant": a.significant,
                "level": a.level.label,
                "severity": a.severity,
                "drift_score": round(a.drift_score, 6),
                "psi": round(a.psi, 6),
            },
            "last_event": self.last_event,
        }
