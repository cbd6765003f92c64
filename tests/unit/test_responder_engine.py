"""The decision engine: handlers keyed by event type, rule decisions and policies, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auto_responder.config import DEFAULT_COOLDOWNS_S
from auto_responder.engine import HANDLERS, EngineContext, Ignored, decide, plan, to_condition
from auto_responder.model import Action, Condition, EventType, Severity
from auto_responder.policies import PolicyConfig, PolicyState
from auto_responder.rules import load_rules
from mlops_platform.contracts import Topic, new_envelope

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MODEL = "fraud_test"


@pytest.fixture(scope="module")
def ctx() -> EngineContext:
    return EngineContext(rules=load_rules(), model_name=MODEL, service_name="auto-responder")


def envelope(source: str = "drift-detector", age_s: float = 1.0) -> dict:
    env = new_envelope(source)
    env["event_time"] = NOW - timedelta(seconds=age_s)
    return env


def drift(severity="MEDIUM", score=0.3, features=("amount",), model=MODEL, state="drift", **kw) -> dict:
    return {
        "envelope": kw.pop("envelope", envelope()),
        "severity": severity,
        "drift_type": "data",
        "state": state,
        "drift_score": score,
        "affected_features": list(features),
        "feature_psi": {f: 0.3 + i / 10 for i, f in enumerate(features)},
        "window_start": NOW,
        "window_end": NOW,
        "window_size": 1000,
        "model_name": model,
        "model_version": "3",
        "report_url": None,
    }


def degraded(severity="MEDIUM", drop=0.05, arm="champion", version="3") -> dict:
    return {
        "envelope": envelope(),
        "model_name": MODEL,
        "model_version": version,
        "ab_arm": arm,
        "severity": severity,
        "metric": "auc_roc",
        "baseline_value": 0.95,
        "current_value": 0.95 * (1 - drop),
        "performance_drop": drop,
        "baseline_metrics": {},
        "current_metrics": {},
        "samples": 800,
        "action_hint": "retrain",
    }


def evaluation(winner="challenger") -> dict:
    return {
        "envelope": envelope(),
        "model_name": MODEL,
        "champion_version": "3",
        "challenger_version": "4",
        "winner": winner,
        "metric": "auprc",
        "test_name": "bootstrap",
        "p_value": 0.01,
        "significant": winner != "none",
        "champion_metrics": {},
        "challenger_metrics": {},
        "champion_samples": 900,
        "challenger_samples": 120,
    }


def alert(alertname: str, severity="HIGH", source="alerter", labels=None, status="firing") -> dict:
    return {
        "envelope": envelope(source),
        "alert_id": "a1",
        "severity": severity,
        "title": alertname,
        "message": "",
        "dedup_key": alertname,
        "status": status,
        "labels": {"alertname": alertname, **(labels or {})},
        "related_event_id": None,
    }


def test_handlers_are_keyed_by_event_type():
    assert set(HANDLERS) == {
        Topic.DATA_DRIFT_DETECTED,
        Topic.MODEL_PERFORMANCE_DEGRADED,
        Topic.MODEL_EVALUATION_COMPLETED,
        Topic.SYSTEM_ALERTS,
    }


def actions_for(contract: str, value: dict, ctx: EngineContext) -> list[str]:
    condition = to_condition(contract, value, ctx, NOW)
    assert isinstance(condition, Condition), condition
    decision = decide(condition, ctx.rules)
    return [] if decision is None else [decision.action.value]


@pytest.mark.parametrize(
    ("value", "expected_severity", "action"),
    [
        (drift("LOW", 0.1), Severity.LOW, "monitor"),
        (drift("MEDIUM", 0.3), Severity.MEDIUM, "retrain"),
        (drift("LOW", 0.7), Severity.HIGH, "retrain"),  # re-assessed from the score
        (drift("LOW", 0.2, features=list("abcdef")), Severity.CRITICAL, "retrain"),
    ],
)
def test_drift(ctx, value, expected_severity, action):
    condition = to_condition(Topic.DATA_DRIFT_DETECTED, value, ctx, NOW)
    assert isinstance(condition, Condition)
    assert condition.event_type == EventType.DATA_DRIFT
    assert condition.assessed is expected_severity
    assert condition.trigger_event_id == value["envelope"]["event_id"]
    assert actions_for(Topic.DATA_DRIFT_DETECTED, value, ctx) == [action]


def test_drift_condition_carries_the_top_feature(ctx):
    value = drift(features=("amount", "log_amount", "hour_of_day"))
    condition = to_condition(Topic.DATA_DRIFT_DETECTED, value, ctx, NOW)
    assert condition.attributes["top_feature"] == "hour_of_day"  # highest PSI
    assert condition.attributes["affected_features"] == "amount,log_amount,hour_of_day"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (drift(model="another_model"), "other_model"),
        (drift(state="stable"), "drift_ended"),
        (drift(envelope=envelope(age_s=7 * 3600)), "stale"),
    ],
)
def test_drift_events_that_are_not_conditions(ctx, value, reason):
    assert to_condition(Topic.DATA_DRIFT_DETECTED, value, ctx, NOW) == Ignored(reason)


@pytest.mark.parametrize(
    ("value", "action"),
    [
        (degraded("LOW", 0.02), "monitor"),
        (degraded("MEDIUM", 0.05), "retrain"),
        (degraded("LOW", 0.12), "rollback"),  # > 10 % -> HIGH
        (degraded("MEDIUM", 0.2), "rollback"),  # > 15 % -> CRITICAL
        (degraded("CRITICAL", 0.2, arm="challenger"), "alert"),
    ],
)
def test_performance_degraded(ctx, value, action):
    assert actions_for(Topic.MODEL_PERFORMANCE_DEGRADED, value, ctx) == [action]


def test_won_evaluation_promotes_and_others_do_nothing(ctx):
    assert actions_for(Topic.MODEL_EVALUATION_COMPLETED, evaluation("challenger"), ctx) == ["promote"]
    assert actions_for(Topic.MODEL_EVALUATION_COMPLETED, evaluation("champion"), ctx) == []
    assert actions_for(Topic.MODEL_EVALUATION_COMPLETED, evaluation("none"), ctx) == []


def test_prometheus_alerts_become_overload_and_latency_conditions(ctx):
    assert actions_for(Topic.SYSTEM_ALERTS, alert("PredictionLatencyP99High", "HIGH"), ctx) == ["scale"]
    assert actions_for(Topic.SYSTEM_ALERTS, alert("PredictionLatencyP99High", "INFO"), ctx) == ["monitor"]
    lag = alert("ConsumerLagGrowing", "MEDIUM", labels={"service": "predictor"})
    assert actions_for(Topic.SYSTEM_ALERTS, lag, ctx) == ["scale"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (alert("PredictionLatencyP99High", source="auto-responder"), "own_alert"),
        (alert("PredictionLatencyP99High", status="resolved"), "resolved"),
        (alert("DriftDetected"), "no_rule"),
        (alert("PredictionLatencyP99High", labels={"model_name": "another"}), "other_model"),
    ],
)
def test_alerts_that_are_not_conditions(ctx, value, reason):
    assert to_condition(Topic.SYSTEM_ALERTS, value, ctx, NOW) == Ignored(reason)


def test_target_drift_has_its_own_rule(ctx):
    value = drift("HIGH", 0.7) | {"drift_type": "target", "affected_features": ["is_fraud"]}
    value["feature_psi"] = {"is_fraud": 0.05}
    condition = to_condition(Topic.DATA_DRIFT_DETECTED, value, ctx, NOW)
    assert not isinstance(condition, Ignored)
    decision = decide(condition, ctx.rules)
    assert decision is not None and (decision.rule_id, decision.action) == ("target-drift", Action.RETRAIN)
    assert condition.attributes["top_feature"] == "is_fraud"


def test_a_resolved_overload_alert_means_the_overload_passed(ctx):
    lag = alert("ConsumerLagGrowing", "MEDIUM", labels={"service": "predictor"}, status="resolved")
    condition = to_condition(Topic.SYSTEM_ALERTS, lag, ctx, NOW)
    assert not isinstance(condition, Ignored)
    assert (condition.event_type, condition.assessed) == (EventType.SYSTEM_OVERLOAD_CLEARED, Severity.LOW)
    assert actions_for(Topic.SYSTEM_ALERTS, lag, ctx) == ["scale_down"]


def test_plan_applies_the_policies(ctx):
    state = PolicyState()
    config = PolicyConfig(cooldowns_s=dict(DEFAULT_COOLDOWNS_S))
    condition = to_condition(Topic.DATA_DRIFT_DETECTED, drift("HIGH", 0.7), ctx, NOW)
    first = plan(condition, ctx.rules, state, config, NOW)
    assert [(d.action, d.suppressed_reason, d.rule_id, d.notify) for d in first] == [
        (Action.RETRAIN, None, "data-drift", True)
    ]
    state.note_executed(condition.policy_key, "retrain", NOW)
    second = plan(condition, ctx.rules, state, config, NOW + timedelta(minutes=5))
    assert [(d.action, d.suppressed_reason) for d in second] == [(Action.RETRAIN, "cooldown")]
    unmatched = to_condition(Topic.MODEL_EVALUATION_COMPLETED, evaluation("champion"), ctx, NOW)
    assert plan(unmatched, ctx.rules, state, config, NOW) == []
