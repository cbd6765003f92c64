"""Severity policy and the event state machine."""

from __future__ import annotations

import pytest

from drift_detector.severity import (
    DriftPolicy,
    Level,
    action_hint,
    assess,
    degradation_severity,
    severity_rank,
)
from drift_detector.state import AlertStateMachine, DegradationState

POLICY = DriftPolicy()


def psi_map(**values: float) -> dict[str, float]:
    base = {f"f{i}": 0.01 for i in range(20)}
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (0.0, Level.STABLE),
        (0.099, Level.STABLE),
        (0.1, Level.WATCH),
        (0.25, Level.WATCH),
        (0.2501, Level.DRIFT),
    ],
)
def test_feature_levels_follow_the_financial_thresholds(value: float, level: Level) -> None:
    assert POLICY.feature_level(value) is level


def test_stable_window_has_no_severity() -> None:
    a = assess(psi_map(), POLICY)
    assert a.level is Level.STABLE and a.severity is None and a.affected_features == []
    assert a.drift_score == pytest.approx(0.01)


def test_watch_is_low_and_names_no_affected_feature() -> None:
    a = assess(psi_map(f3=0.2, f4=0.12), POLICY)
    assert a.level is Level.WATCH and a.severity == "LOW"
    assert a.affected_features == [] and a.watch_features == ["f3", "f4"]
    assert a.drift_score == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("values", "severity", "score"),
    [
        ({"f0": 0.3}, "MEDIUM", 0.3),
        ({"f0": 0.61}, "HIGH", 0.61),
        ({"f0": 0.81}, "CRITICAL", 0.81),
        ({"f0": 2.5}, "CRITICAL", 1.0),  # the score saturates
        ({"f0": 0.3, "f1": 0.3, "f2": 0.3, "f3": 0.3}, "HIGH", 0.3),  # > 3 features
        ({f"f{i}": 0.3 for i in range(6)}, "CRITICAL", 0.3),  # > 5 features
    ],
)
def test_drift_severity_from_score_and_feature_count(
    values: dict[str, float], severity: str, score: float
) -> None:
    a = assess(psi_map(**values), POLICY)
    assert a.level is Level.DRIFT
    assert a.severity == severity
    assert a.drift_score == pytest.approx(score)
    assert a.affected_features[0] == max(values, key=lambda k: values[k])


def test_share_of_drifted_features_raises_the_score() -> None:
    values = {f"f{i}": 0.3 for i in range(15)}  # 15 of 20 features at PSI 0.3
    a = assess(psi_map(**values), POLICY)
    assert a.drift_score == pytest.approx(0.75)
    assert a.severity == "CRITICAL"


@pytest.mark.parametrize(
    ("drop", "severity", "hint"),
    [
        (0.03, "LOW", "monitor"),
        (0.051, "MEDIUM", "retrain"),
        (0.11, "HIGH", "rollback"),
        (0.2, "CRITICAL", "rollback"),
    ],
)
def test_degradation_severity_and_action_hint(drop: float, severity: str, hint: str) -> None:
    assert degradation_severity(drop) == severity
    assert action_hint(severity) == hint


def test_severity_rank_orders_levels() -> None:
    assert [severity_rank(s) for s in (None, "LOW", "MEDIUM", "HIGH", "CRITICAL")] == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- state machine


def run(
    machine: AlertStateMachine, windows: list[tuple[Level, str | None]], start: int = 0, step: int = 1000
):
    out = []
    for i, (level, severity) in enumerate(windows):
        decision = machine.observe(level, severity, start + i * step)
        out.append(None if decision is None else (decision.reason, decision.level.label, decision.severity))
    return out


def test_stable_forever_publishes_nothing() -> None:
    machine = AlertStateMachine(repeat_interval_ms=60_000)
    assert run(machine, [(Level.STABLE, None)] * 1000) == [None] * 1000


def test_onset_escalation_and_bounded_repeats() -> None:
    machine = AlertStateMachine(repeat_interval_ms=10_000)
    windows = [(Level.WATCH, "LOW"), (Level.DRIFT, "MEDIUM"), (Level.DRIFT, "CRITICAL")] + [
        (Level.DRIFT, "CRITICAL")
    ] * 30
    out = run(machine, windows)
    assert out[:3] == [
        ("enter", "watch", "LOW"),
        ("enter", "drift", "MEDIUM"),
        ("escalate", "drift", "CRITICAL"),
    ]
    repeats = [o for o in out[3:] if o is not None]
    # 30 windows of 1 s with a 10 s repeat interval: 3 repeats, never one per window.
    assert repeats == [("repeat", "drift", "CRITICAL")] * 3


def test_lowering_needs_consecutive_calmer_windows() -> None:
    machine = AlertStateMachine(repeat_interval_ms=10**9, clear_windows=2)
    out = run(
        machine,
        [
            (Level.DRIFT, "HIGH"),
            (Level.STABLE, None),  # one calm window is not enough
            (Level.DRIFT, "HIGH"),  # resets the streak
            (Level.WATCH, "LOW"),
            (Level.STABLE, None),  # two calmer windows: drift -> stable
            (Level.STABLE, None),
        ],
    )
    assert out == [("enter", "drift", "HIGH"), None, None, None, ("recover", "stable", None), None]
    assert machine.level is Level.STABLE
    assert [t[1:] for t in machine.transitions] == [("stable", "drift"), ("drift", "stable")]


def test_drift_to_watch_is_published_as_lower() -> None:
    machine = AlertStateMachine(repeat_interval_ms=10**9, clear_windows=1)
    out = run(machine, [(Level.DRIFT, "MEDIUM"), (Level.WATCH, "LOW")])
    assert out == [("enter", "drift", "MEDIUM"), ("lower", "watch", "LOW")]


def test_recovery_can_be_silent() -> None:
    machine = AlertStateMachine(repeat_interval_ms=10**9, clear_windows=1, publish_recovery=False)
    out = run(machine, [(Level.WATCH, "LOW"), (Level.STABLE, None), (Level.WATCH, "LOW")])
    assert out == [("enter", "watch", "LOW"), None, ("enter", "watch", "LOW")]


def test_flapping_severity_is_bounded_by_the_repeat_interval() -> None:
    machine = AlertStateMachine(repeat_interval_ms=10_000)
    windows = [(Level.DRIFT, "HIGH" if i % 2 else "CRITICAL") for i in range(100)]
    published = [o for o in run(machine, windows) if o is not None]
    # 100 s of flapping: the first event, then at most one repeat + one re-escalation per interval.
    assert len(published) <= 1 + 2 * (100 // 10)


def test_degradation_state_publishes_on_episodes_and_escalation() -> None:
    state = DegradationState(repeat_interval_ms=10_000)
    seq = [
        ("MEDIUM", 0),
        ("MEDIUM", 1000),
        ("HIGH", 2000),
        ("MEDIUM", 3000),
        ("HIGH", 13_000),
        (None, 14_000),
    ]
    out = [state.observe(severity, t) for severity, t in seq]
    assert out == ["enter", None, "escalate", None, "repeat", None]
    assert state.observe("LOW", 15_000) == "enter"  # a new episode after recovery
