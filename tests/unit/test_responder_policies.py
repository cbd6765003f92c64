"""Cooldowns, dampening, quiet hours and "one at a time", driven by an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auto_responder.config import DEFAULT_COOLDOWNS_S
from auto_responder.model import Action, ActionRecord, Condition, Decision, EventType, Severity
from auto_responder.policies import PolicyConfig, PolicyState, QuietHours, apply_policies

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


def condition(event_type: str = EventType.DATA_DRIFT, subject: str = "") -> Condition:
    return Condition(
        event_type=event_type,
        trigger_topic="data.drift.detected",
        trigger={"event_id": "e1"},
        severity=Severity.HIGH,
        assessed=Severity.HIGH,
        subject=subject,
    )


def decision(action: Action, event_type: str = EventType.DATA_DRIFT, subject: str = "") -> Decision:
    return Decision(condition=condition(event_type, subject), rule_id="r", action=action)


def config(**overrides) -> PolicyConfig:
    return PolicyConfig(**({"cooldowns_s": dict(DEFAULT_COOLDOWNS_S)} | overrides))


def outcome(decisions: list[Decision]) -> list[tuple[str, str | None]]:
    return [(d.action.value, d.suppressed_reason) for d in decisions]


@pytest.mark.parametrize(
    ("action", "cooldown_min"),
    [(Action.RETRAIN, 60), (Action.ROLLBACK, 30), (Action.SCALE, 10), (Action.ALERT, 5), (Action.MONITOR, 2)],
)
def test_cooldown_per_event_type_and_action(action, cooldown_min):
    state = PolicyState()
    cfg = config()
    assert outcome(apply_policies(decision(action), state, cfg, T0)) == [(action.value, None)]
    state.note_executed(EventType.DATA_DRIFT, action.value, T0)

    just_before = T0 + timedelta(minutes=cooldown_min) - timedelta(seconds=1)
    assert outcome(apply_policies(decision(action), state, cfg, just_before)) == [(action.value, "cooldown")]
    after = T0 + timedelta(minutes=cooldown_min)
    assert outcome(apply_policies(decision(action), state, cfg, after)) == [(action.value, None)]
    # Another event type, or another action, is not in that cooldown.
    other_type = decision(action, EventType.PERFORMANCE_DEGRADED)
    assert outcome(apply_policies(other_type, state, cfg, just_before)) == [(action.value, None)]


def test_cooldown_key_includes_the_subject():
    state = PolicyState()
    state.note_executed("service_health_check_failed[predictor]", "alert", T0)
    cfg = config()
    same = decision(Action.ALERT, EventType.HEALTH_CHECK_FAILED, "predictor")
    other = decision(Action.ALERT, EventType.HEALTH_CHECK_FAILED, "recommender")
    assert outcome(apply_policies(same, state, cfg, T0 + timedelta(minutes=1))) == [("alert", "cooldown")]
    assert outcome(apply_policies(other, state, cfg, T0 + timedelta(minutes=1))) == [("alert", None)]


def test_more_than_three_responses_in_an_hour_mean_monitor_only():
    state = PolicyState()
    cfg = config(cooldowns_s={})  # no cooldowns: dampening alone
    for minute in range(4):
        at = T0 + timedelta(minutes=minute)
        assert outcome(apply_policies(decision(Action.SCALE), state, cfg, at)) == [("scale", None)]
        state.note_executed(EventType.DATA_DRIFT, "scale", at)
    fifth = apply_policies(decision(Action.SCALE), state, cfg, T0 + timedelta(minutes=5))
    assert outcome(fifth) == [("scale", "dampening"), ("monitor", None)]
    assert fifth[1].replaces is Action.SCALE
    # Monitoring is not a response: it does not keep dampening alive.
    state.note_executed(EventType.DATA_DRIFT, "monitor", T0 + timedelta(minutes=5))
    assert state.responses_within(EventType.DATA_DRIFT, T0 + timedelta(minutes=5), 3600) == 4
    # An hour after the first response, only three remain in the window.
    later = T0 + timedelta(minutes=60, seconds=1)
    assert outcome(apply_policies(decision(Action.SCALE), state, cfg, later)) == [("scale", None)]


def test_dampened_monitor_still_has_its_own_cooldown():
    state = PolicyState()
    cfg = config()
    for minute in range(4):
        state.note_executed(EventType.DATA_DRIFT, "alert", T0 + timedelta(minutes=minute))
    state.note_executed(EventType.DATA_DRIFT, "monitor", T0 + timedelta(minutes=4))
    decisions = apply_policies(decision(Action.RETRAIN), state, cfg, T0 + timedelta(minutes=5))
    assert outcome(decisions) == [("retrain", "dampening"), ("monitor", "cooldown")]


def test_quiet_hours_turn_retrain_and_rollback_into_alerts():
    quiet = QuietHours(enabled=True, start=22, end=6, timezone="Asia/Seoul")
    cfg = config(quiet_hours=quiet)
    night_in_seoul = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 00:30 KST
    day_in_seoul = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 12:00 KST
    for action in (Action.RETRAIN, Action.ROLLBACK):
        decisions = apply_policies(decision(action), PolicyState(), cfg, night_in_seoul)
        assert outcome(decisions) == [(action.value, "quiet_hours"), ("alert", None)]
        assert decisions[1].replaces is action
        assert outcome(apply_policies(decision(action), PolicyState(), cfg, day_in_seoul)) == [
            (action.value, None)
        ]
    # Other actions are not affected.
    assert outcome(apply_policies(decision(Action.SCALE), PolicyState(), cfg, night_in_seoul)) == [
        ("scale", None)
    ]


@pytest.mark.parametrize(
    ("start", "end", "hour", "active"),
    [
        (22, 6, 22, True),
        (22, 6, 5, True),
        (22, 6, 6, False),
        (22, 6, 12, False),
        (1, 5, 3, True),
        (1, 5, 5, False),
    ],
)
def test_quiet_hours_window(start, end, hour, active):
    quiet = QuietHours(enabled=True, start=start, end=end, timezone="UTC")
    assert quiet.active(datetime(2026, 3, 2, hour, 0, tzinfo=UTC)) is active


def test_quiet_hours_are_off_by_default():
    assert QuietHours().active(datetime(2026, 3, 2, 23, 0, tzinfo=UTC)) is False


def test_a_second_retrain_while_one_runs_is_suppressed():
    decisions = apply_policies(
        decision(Action.RETRAIN), PolicyState(), config(), T0, in_progress={Action.RETRAIN}
    )
    assert outcome(decisions) == [("retrain", "in_progress")]


def record(action: str, status: str, at: datetime, **details: str) -> ActionRecord:
    return ActionRecord(
        action_id="a",
        trigger_event_id="t",
        trigger_event_type="data.drift.detected",
        rule_id="r",
        action=action,
        status=status,
        outcome="",
        at=at,
        details={"event_type": EventType.DATA_DRIFT, "policy_key": EventType.DATA_DRIFT, **details},
    )


def test_replayed_records_restore_cooldowns():
    state = PolicyState()
    # External actions count from their started record; the terminal one does not move it.
    state.note_record(record("retrain", "started", T0))
    state.note_record(record("retrain", "succeeded", T0 + timedelta(minutes=10)))
    assert state.last_run[(EventType.DATA_DRIFT, "retrain")] == T0
    # Quick actions have a single terminal record.
    state.note_record(record("alert", "succeeded", T0))
    # Suppressed decisions and manual actions do not start cooldowns.
    state.note_record(record("monitor", "suppressed", T0))
    state.note_record(record("rollback", "started", T0, manual="true"))
    assert set(state.last_run) == {(EventType.DATA_DRIFT, "retrain"), (EventType.DATA_DRIFT, "alert")}
    assert state.responses_within(EventType.DATA_DRIFT, T0, 3600) == 2
    cfg = config()
    remaining = state.cooldown_remaining(
        EventType.DATA_DRIFT, Action.RETRAIN, T0 + timedelta(minutes=30), 3600
    )
    assert remaining == pytest.approx(1800)
    assert [c["action"] for c in state.active_cooldowns(cfg, T0 + timedelta(minutes=1))] == [
        "alert",
        "retrain",
    ]
