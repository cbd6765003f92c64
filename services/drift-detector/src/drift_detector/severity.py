"""Drift levels, the drift score and the severity policies.

Data drift (PSI, financial-industry thresholds):

* a feature is **stable** below ``watch`` (0.1), **watch** up to ``drift`` (0.25),
  **drift** above it; a window takes the level of its worst feature;
* ``drift_score = max(min(1, max_psi / psi_scale), drifted_features / monitored_features)``
  — the strength of the worst shift (PSI 1.0 saturates by default) or, when many
  features move a little past the threshold, the share of drifted features;
* severity: a **watch** window is ``LOW`` (the seed's "strengthen monitoring", which the
  auto-responder maps to *monitor*); a **drift** window is ``CRITICAL`` when
  ``drift_score > 0.8`` or more than 5 features drift, ``HIGH`` when ``> 0.6`` or more
  than 3, ``MEDIUM`` otherwise ("retrain review"). These are the auto-responder's own
  re-assessment rules, so both sides agree on every event.

Performance degradation: relative drop ``> 15 %`` → CRITICAL, ``> 10 %`` → HIGH,
``> 5 %`` → MEDIUM, else LOW; the action hint mirrors the auto-responder's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

SEVERITIES: Final[tuple[str, ...]] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def severity_rank(severity: str | None) -> int:
    """0 for none, then 1..4 from LOW to CRITICAL."""
    return SEVERITIES.index(severity) + 1 if severity in SEVERITIES else 0


class Level(IntEnum):
    STABLE = 0
    WATCH = 1
    DRIFT = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class DriftPolicy:
    watch: float = 0.1
    drift: float = 0.25
    psi_scale: float = 1.0
    critical_score: float = 0.8
    critical_features: int = 5
    high_score: float = 0.6
    high_features: int = 3

    def feature_level(self, value: float) -> Level:
        if value > self.drift:
            return Level.DRIFT
        if value >= self.watch:
            return Level.WATCH
        return Level.STABLE


@dataclass(frozen=True)
class DriftAssessment:
    """What one window's PSI values mean."""

    level: Level
    drift_score: float
    severity: str | None
    affected_features: list[str]
    watch_features: list[str]
    max_psi: float


def assess(feature_psi: Mapping[str, float], policy: DriftPolicy) -> DriftAssessment:
    """Level, score and severity of a window from its PSI per feature."""
    levels = {name: policy.feature_level(value) for name, value in feature_psi.items()}
    affected = sorted((n for n, lv in levels.items() if lv is Level.DRIFT), key=lambda n: -feature_psi[n])
    watch = sorted((n for n, lv in levels.items() if lv is Level.WATCH), key=lambda n: -feature_psi[n])
    max_psi = max(feature_psi.values(), default=0.0)
    share = len(affected) / len(feature_psi) if feature_psi else 0.0
    score = max(min(1.0, max(max_psi, 0.0) / policy.psi_scale), share)
    level = max(levels.values(), default=Level.STABLE)
    return DriftAssessment(
        level=level,
        drift_score=score,
        severity=drift_severity(level, score, len(affected), policy),
        affected_features=affected,
        watch_features=watch,
        max_psi=max_psi,
    )


def drift_severity(level: Level, score: float, n_affected: int, policy: DriftPolicy) -> str | None:
    if level is Level.STABLE:
        return None
    if level is Level.WATCH:
        return "LOW"
    if score > policy.critical_score or n_affected > policy.critical_features:
        return "CRITICAL"
    if score > policy.high_score or n_affected > policy.high_features:
        return "HIGH"
    return "MEDIUM"


def degradation_severity(drop: float) -> str:
    """Severity of a relative performance drop (0.12 = 12 %)."""
    if drop > 0.15:
        return "CRITICAL"
    if drop > 0.10:
        return "HIGH"
    if drop > 0.05:
        return "MEDIUM"
    return "LOW"


def action_hint(severity: str) -> str:
    """What the auto-responder's rules do for a performance degradation of ``severity``."""
    return {"LOW": "monitor", "MEDIUM": "retrain"}.get(severity, "rollback")
