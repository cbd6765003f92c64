"""Domain types of the auto-responder: severities, conditions, decisions and action records.

A *condition* is what the responder reacts to (a drift, a degradation, a won evaluation,
a silent service, ...), derived from one trigger event. A *decision* is what the rule
table and the policies make of it: an action to execute or a suppressed one. An *action
record* is one ``system.actions`` event: the decision log entry the responder publishes
(``started``, then ``succeeded``/``failed``; or ``suppressed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any


class Severity(IntEnum):
    """Ordered severities (the contract's strings are the names)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: object, default: Severity | None = None) -> Severity:
        """``"high"`` / ``"HIGH"`` -> HIGH; INFO, WARNING and unknown values map sensibly."""
        text = str(value or "").strip().upper()
        aliases = {"INFO": cls.LOW, "WARNING": cls.MEDIUM, "WARN": cls.MEDIUM, "ERROR": cls.HIGH}
        if text in cls.__members__:
            return cls[text]
        if text in aliases:
            return aliases[text]
        if default is not None:
            return default
        raise ValueError(f"unknown severity {value!r}")


class Action(StrEnum):
    RETRAIN = "retrain"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    SCALE = "scale"
    SCALE_DOWN = "scale_down"
    ALERT = "alert"
    MONITOR = "monitor"
    NONE = "none"


class Status(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPPRESSED = "suppressed"

    @property
    def terminal(self) -> bool:
        return self is not Status.STARTED


class EventType(StrEnum):
    """The seed's event types: what rules and policies (cooldown, dampening) are keyed by."""

    DATA_DRIFT = "data_drift_detected"
    PERFORMANCE_DEGRADED = "model_performance_degraded"
    EVALUATION_COMPLETED = "model_evaluation_completed"
    SYSTEM_OVERLOAD = "system_overload"
    SYSTEM_OVERLOAD_CLEARED = "system_overload_cleared"
    PREDICTION_LATENCY_HIGH = "prediction_latency_high"
    HEALTH_CHECK_FAILED = "service_health_check_failed"
    HEALTH_RECOVERED = "service_health_recovered"
    MANUAL = "manual"


#: Actions that run outside the process (registry, training, scale command): they get a
#: ``started`` record (acknowledged by Kafka) before they run, so a restart never repeats them.
EXTERNAL_ACTIONS = frozenset(
    {Action.RETRAIN, Action.PROMOTE, Action.ROLLBACK, Action.SCALE, Action.SCALE_DOWN}
)


@dataclass(frozen=True)
class Condition:
    """Something to respond to, derived from one trigger event.

    Attributes:
        event_type: the seed's event type (rules and policies key on it).
        trigger_topic: topic of the triggering event (``system.actions.trigger_event_type``).
        trigger: envelope of the triggering event (the cause of everything done about it).
        severity: severity the trigger reported.
        assessed: severity after re-assessment from the payload.
        subject: what it is about beyond the event type (a service for health conditions);
            part of the cooldown / dampening key so one service's outage does not mute another's.
        attributes: payload facts rules can match on and executors use (model_version,
            winner, challenger_version, service, drift_score, ...), as strings.
    """

    event_type: str
    trigger_topic: str
    trigger: Mapping[str, Any]
    severity: Severity
    assessed: Severity
    subject: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def trigger_event_id(self) -> str:
        return str(self.trigger.get("event_id", ""))

    @property
    def policy_key(self) -> str:
        """Key of cooldowns and dampening: the event type, plus the subject when there is one."""
        return f"{self.event_type}[{self.subject}]" if self.subject else self.event_type


@dataclass(frozen=True)
class Decision:
    """One decision about a condition: execute ``action``, or record it as suppressed."""

    condition: Condition
    rule_id: str
    action: Action
    suppressed_reason: str | None = None
    replaces: Action | None = None
    notify: bool = False
    note: str = ""
    #: The rule's action when this one turns out impossible (e.g. rollback without
    #: ``@previous_champion``): decided by the rule table, not reported as a failure.
    fallback: Action | None = None

    @property
    def suppressed(self) -> bool:
        return self.suppressed_reason is not None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass
class ActionRecord:
    """One ``system.actions`` event (the payload, plus its envelope once published)."""

    action_id: str
    trigger_event_id: str
    trigger_event_type: str
    rule_id: str
    action: str
    status: str
    outcome: str
    at: datetime
    trigger_severity: str | None = None
    assessed_severity: str | None = None
    suppressed_reason: str | None = None
    duration_ms: float = 0.0
    details: dict[str, str] = field(default_factory=dict)
    envelope: dict[str, Any] = field(default_factory=dict)
    #: Who asked for a manual action (``<role>:<key name>``); None for the automation's decisions.
    actor: str | None = None

    @property
    def event_type(self) -> str:
        return self.details.get("event_type", "")

    @property
    def policy_key(self) -> str:
        return self.details.get("policy_key", self.event_type)

    @property
    def model_name(self) -> str:
        return self.details.get("model_name", "")

    def payload(self) -> dict[str, Any]:
        """The ``SystemAction`` fields without the envelope."""
        return {
            "action_id": self.action_id,
            "trigger_event_id": self.trigger_event_id,
            "trigger_event_type": self.trigger_event_type,
            "trigger_severity": self.trigger_severity,
            "assessed_severity": self.assessed_severity,
            "rule_id": self.rule_id,
            "action": self.action,
            "status": self.status,
            "suppressed_reason": self.suppressed_reason,
            "outcome": self.outcome,
            "duration_ms": float(self.duration_ms),
            "details": {str(k): str(v) for k, v in self.details.items()},
            "actor": self.actor,
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> ActionRecord:
        """Rebuild a record from a decoded ``system.actions`` value."""
        envelope = dict(value.get("envelope") or {})
        at = envelope.get("event_time")
        if not isinstance(at, datetime):
            at = datetime.now(UTC)
        elif at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return cls(
            action_id=str(value["action_id"]),
            trigger_event_id=str(value["trigger_event_id"]),
            trigger_event_type=str(value["trigger_event_type"]),
            rule_id=str(value["rule_id"]),
            action=str(value["action"]),
            status=str(value["status"]),
            outcome=str(value.get("outcome", "")),
            at=at,
            trigger_severity=value.get("trigger_severity"),
            assessed_severity=value.get("assessed_severity"),
            suppressed_reason=value.get("suppressed_reason"),
            duration_ms=float(value.get("duration_ms") or 0.0),
            details={str(k): str(v) for k, v in (value.get("details") or {}).items()},
            envelope=envelope,
            actor=value.get("actor"),
        )

    def public(self) -> dict[str, Any]:
        """JSON view for the HTTP API."""
        return {
            **self.payload(),
            "at": _iso(self.at),
            "event_id": self.envelope.get("event_id"),
            "correlation_id": self.envelope.get("correlation_id"),
            "causation_id": self.envelope.get("causation_id"),
        }
