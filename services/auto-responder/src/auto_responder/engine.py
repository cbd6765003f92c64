"""The decision engine: pure functions from a trigger event to decisions.

Handlers are plain functions keyed by the event's contract (topic) in :data:`HANDLERS`
(cosmicpython style). Each turns a decoded event into a :class:`Condition` (or an
:class:`Ignored` with the reason), :func:`decide` picks the rule's action for the
re-assessed severity, and :func:`plan` runs the result through the policies.
Heartbeats (``system.health``) are stateful and go through
:class:`~auto_responder.watcher.HeartbeatWatcher`, which yields conditions of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auto_responder.model import Action, Condition, Decision, EventType, Severity
from auto_responder.policies import PolicyConfig, PolicyState, apply_policies
from auto_responder.rules import RuleSet
from mlops_platform.contracts import Topic


@dataclass(frozen=True)
class EngineContext:
    """What the handlers need besides the event."""

    rules: RuleSet
    model_name: str
    service_name: str = "auto-responder"
    max_trigger_age_s: float = 6 * 3600.0


@dataclass(frozen=True)
class Ignored:
    """A trigger event that is not a condition for this responder, and why."""

    reason: str


Outcome = Condition | Ignored
Handler = Callable[[Mapping[str, Any], EngineContext], Outcome]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _other_model(value: Mapping[str, Any], ctx: EngineContext) -> Ignored | None:
    name = str(value.get("model_name") or "")
    if name != ctx.model_name:
        return Ignored("other_model")
    return None


def on_data_drift(value: Mapping[str, Any], ctx: EngineContext) -> Outcome:
    """``data.drift.detected`` -> data_drift_detected (a ``stable`` state ends a drift: ignored)."""
    if (other := _other_model(value, ctx)) is not None:
        return other
    if str(value.get("state") or "drift") == "stable":
        return Ignored("drift_ended")
    reported = Severity.parse(value.get("severity"), Severity.MEDIUM)
    features = list(value.get("affected_features") or [])
    psi = {str(k): float(v) for k, v in (value.get("feature_psi") or {}).items()}
    top = max(features, key=lambda f: psi.get(f, 0.0)) if features else ""
    measures = {"drift_score": value.get("drift_score"), "affected_features": features}
    assessed = ctx.rules.reassess(EventType.DATA_DRIFT, reported, measures)
    attributes = {
        "model_name": ctx.model_name,
        "model_version": _text(value.get("model_version")),
        "drift_type": _text(value.get("drift_type") or "data"),
        "state": _text(value.get("state") or "drift"),
        "drift_score": _text(value.get("drift_score")),
        "affected_features": ",".join(features),
        "top_feature": top,
        "window_size": _text(value.get("window_size")),
        "report_url": _text(value.get("report_url")),
    }
    return Condition(
        event_type=EventType.DATA_DRIFT,
        trigger_topic=Topic.DATA_DRIFT_DETECTED,
        trigger=value.get("envelope") or {},
        severity=reported,
        assessed=assessed,
        attributes=attributes,
    )


def on_performance_degraded(value: Mapping[str, Any], ctx: EngineContext) -> Outcome:
    """``model.performance.degraded`` -> model_performance_degraded."""
    if (other := _other_model(value, ctx)) is not None:
        return other
    reported = Severity.parse(value.get("severity"), Severity.MEDIUM)
    assessed = ctx.rules.reassess(
        EventType.PERFORMANCE_DEGRADED, reported, {"performance_drop": value.get("performance_drop")}
    )
    attributes = {
        "model_name": ctx.model_name,
        "model_version": _text(value.get("model_version")),
        "ab_arm": _text(value.get("ab_arm") or "champion"),
        "metric": _text(value.get("metric")),
        "baseline_value": _text(value.get("baseline_value")),
        "current_value": _text(value.get("current_value")),
        "performance_drop": _text(value.get("performance_drop")),
        "samples": _text(value.get("samples")),
        "action_hint": _text(value.get("action_hint")),
    }
    return Condition(
        event_type=EventType.PERFORMANCE_DEGRADED,
        trigger_topic=Topic.MODEL_PERFORMANCE_DEGRADED,
        trigger=value.get("envelope") or {},
        severity=reported,
        assessed=assessed,
        attributes=attributes,
    )


def on_evaluation_completed(value: Mapping[str, Any], ctx: EngineContext) -> Outcome:
    """``model.evaluation.completed`` -> model_evaluation_completed (rules match ``winner``)."""
    if (other := _other_model(value, ctx)) is not None:
        return other
    attributes = {
        "model_name": ctx.model_name,
        "winner": _text(value.get("winner")),
        "champion_version": _text(value.get("champion_version")),
        "challenger_version": _text(value.get("challenger_version")),
        "metric": _text(value.get("metric")),
        "test_name": _text(value.get("test_name")),
        "p_value": _text(value.get("p_value")),
        "significant": _text(bool(value.get("significant"))),
        "champion_samples": _text(value.get("champion_samples")),
        "challenger_samples": _text(value.get("challenger_samples")),
    }
    return Condition(
        event_type=EventType.EVALUATION_COMPLETED,
        trigger_topic=Topic.MODEL_EVALUATION_COMPLETED,
        trigger=value.get("envelope") or {},
        severity=Severity.MEDIUM,
        assessed=Severity.MEDIUM,
        attributes=attributes,
    )


def on_alert(value: Mapping[str, Any], ctx: EngineContext) -> Outcome:
    """``system.alerts`` carrying a Prometheus alert listed in ``alert_conditions``.

    The responder's own alerts are skipped (it would otherwise react to its own voice);
    so are alerts the table does not list, and resolved ones except an overload's (which
    becomes ``system_overload_cleared``: the overload passed).
    """
    envelope = value.get("envelope") or {}
    labels = {str(k): str(v) for k, v in (value.get("labels") or {}).items()}
    if envelope.get("source") == ctx.service_name or labels.get("source") == ctx.service_name:
        return Ignored("own_alert")
    resolved = str(value.get("status") or "firing") != "firing"
    alertname = labels.get("alertname") or str(value.get("title") or "")
    event_type = ctx.rules.alert_event_type(alertname, labels)
    if resolved and event_type != EventType.SYSTEM_OVERLOAD:
        return Ignored("resolved")
    if event_type is None:
        return Ignored("no_rule")
    model = labels.get("model_name")
    if model and model != ctx.model_name:
        return Ignored("other_model")
    severity = Severity.parse(value.get("severity"), Severity.MEDIUM)
    if resolved:
        # A resolved load alert is an explicit "overload passed".
        event_type, severity = EventType.SYSTEM_OVERLOAD_CLEARED, Severity.LOW
    service = labels.get("service") or labels.get("job") or ""
    attributes = {
        "alertname": alertname,
        "alert_id": _text(value.get("alert_id")),
        "service": service,
        "title": _text(value.get("title")),
        "model_name": ctx.model_name,
    }
    return Condition(
        event_type=event_type,
        trigger_topic=Topic.SYSTEM_ALERTS,
        trigger=envelope,
        severity=severity,
        assessed=severity,
        attributes=attributes,
    )


#: Handlers keyed by the contract (catalogue topic) of the trigger event.
HANDLERS: dict[str, Handler] = {
    Topic.DATA_DRIFT_DETECTED: on_data_drift,
    Topic.MODEL_PERFORMANCE_DEGRADED: on_performance_degraded,
    Topic.MODEL_EVALUATION_COMPLETED: on_evaluation_completed,
    Topic.SYSTEM_ALERTS: on_alert,
}


def event_age_s(envelope: Mapping[str, Any], now: datetime) -> float:
    event_time = envelope.get("event_time")
    if not isinstance(event_time, datetime):
        return 0.0
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)
    return (now - event_time).total_seconds()


def to_condition(contract: str, value: Mapping[str, Any], ctx: EngineContext, now: datetime) -> Outcome:
    """Dispatch a decoded event to its handler; stale events are ignored."""
    handler = HANDLERS.get(contract)
    if handler is None:
        return Ignored("unhandled_topic")
    if event_age_s(value.get("envelope") or {}, now) > ctx.max_trigger_age_s:
        return Ignored("stale")
    return handler(value, ctx)


def decide(condition: Condition, rules: RuleSet) -> Decision | None:
    """The rule's decision for a condition, before policies (``None``: no rule applies)."""
    rule = rules.match(condition.event_type, condition.attributes)
    if rule is None:
        return None
    action = rule.action_for(condition.assessed)
    return Decision(
        condition=condition, rule_id=rule.id, action=action, notify=rule.notify, fallback=rule.fallback
    )


def plan(
    condition: Condition,
    rules: RuleSet,
    state: PolicyState,
    config: PolicyConfig,
    now: datetime,
    in_progress: Iterable[Action] = (),
) -> list[Decision]:
    """Rule + policies: every decision to record for ``condition`` (empty: nothing applies)."""
    decision = decide(condition, rules)
    if decision is None:
        return []
    return apply_policies(decision, state, config, now, in_progress)
