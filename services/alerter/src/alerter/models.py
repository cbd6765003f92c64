"""The alerter's domain vocabulary: severities, incoming alert events, notifications."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any


class Severity(IntEnum):
    """Ordered severities of ``system.alerts`` (higher is worse)."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | None, default: Severity | None = None) -> Severity:
        """Parse a severity, accepting Prometheus' usual words (critical, warning, info, ...).

        Unknown words map to ``default`` (MEDIUM): an alert nobody can classify still
        deserves a human's attention.
        """
        text = (value or "").strip().upper()
        if text in cls.__members__:
            return cls[text]
        aliased = _ALIASES.get(text)
        if aliased is not None:
            return aliased
        return default if default is not None else cls.MEDIUM


_ALIASES = {
    "PAGE": Severity.CRITICAL,
    "FATAL": Severity.CRITICAL,
    "ERROR": Severity.HIGH,
    "MAJOR": Severity.HIGH,
    "WARNING": Severity.MEDIUM,
    "WARN": Severity.MEDIUM,
    "MINOR": Severity.LOW,
    "NONE": Severity.INFO,
    "DEBUG": Severity.INFO,
}


class AlertStatus(StrEnum):
    """``status`` values on ``system.alerts``.

    ``acknowledged`` records are written by this service when someone acks an alert,
    so that acknowledgements survive a restart (they are replayed like the rest).
    """

    FIRING = "firing"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"

    @classmethod
    def parse(cls, value: str | None) -> AlertStatus:
        text = (value or "").strip().lower()
        if text in ("resolved", "ok", "cleared"):
            return cls.RESOLVED
        if text in ("acknowledged", "ack", "acked"):
            return cls.ACKNOWLEDGED
        return cls.FIRING


class DeliveryKind(StrEnum):
    """Why a notification is sent."""

    NOTIFY = "notify"  # a new alert, or one whose severity went up
    REMINDER = "reminder"  # still firing after the cooldown
    ESCALATION = "escalation"  # not acknowledged in time
    RESOLVED = "resolved"  # the alert is over


# Labels written by the alerter itself on acknowledgement records.
ACK_INCIDENT_LABEL = "ack_alert_id"
ACK_BY_LABEL = "acknowledged_by"


@dataclass(frozen=True)
class AlertEvent:
    """One record of ``system.alerts``, normalised."""

    alert_id: str
    severity: Severity
    title: str
    message: str
    dedup_key: str
    status: AlertStatus
    source: str
    event_time: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    event_id: str | None = None
    correlation_id: str | None = None
    related_event_id: str | None = None

    @classmethod
    def from_value(cls, value: Mapping[str, Any], *, timestamp_ms: int | None = None) -> AlertEvent:
        """Build from a decoded ``SystemAlert`` value.

        The event time is the record's timestamp when known (the same clock on first
        consumption and on replay after a restart), else the envelope's event time.
        """
        envelope: Mapping[str, Any] = value.get("envelope") or {}
        labels = {str(k): str(v) for k, v in (value.get("labels") or {}).items()}
        if timestamp_ms is not None and timestamp_ms > 0:
            event_time = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        else:
            event_time = _as_datetime(envelope.get("event_time"))
        alert_id = str(value.get("alert_id") or envelope.get("event_id") or "")
        return cls(
            alert_id=alert_id,
            severity=Severity.parse(value.get("severity")),
            title=str(value.get("title") or ""),
            message=str(value.get("message") or ""),
            dedup_key=str(value.get("dedup_key") or alert_id),
            status=AlertStatus.parse(value.get("status")),
            source=labels.get("source") or str(envelope.get("source") or "unknown"),
            event_time=event_time,
            labels=labels,
            event_id=_opt_str(envelope.get("event_id")),
            correlation_id=_opt_str(envelope.get("correlation_id")),
            related_event_id=_opt_str(value.get("related_event_id")),
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.now(UTC)


@dataclass(frozen=True)
class Notification:
    """What a channel renders: an alert plus why it is being sent now."""

    alert_id: str
    kind: DeliveryKind
    severity: Severity
    status: str
    title: str
    message: str
    dedup_key: str
    source: str
    labels: Mapping[str, str]
    opened_at: datetime
    occurrences: int
    escalation_level: int = 0
    url: str | None = None
    event_id: str | None = None
    correlation_id: str | None = None
    related_event_id: str | None = None

    @property
    def attempt_kind(self) -> str:
        """Which notification of the alert this is; part of the delivery id.

        Deterministic: replaying the alerts topic after a restart rebuilds the same
        occurrences and escalation levels, so a record processed again gets the same id.
        """
        if self.kind is DeliveryKind.ESCALATION:
            return f"escalation-{self.escalation_level}"
        if self.kind is DeliveryKind.RESOLVED:
            return "resolved"
        return f"{self.kind.value}-{self.occurrences}"

    @property
    def subject(self) -> str:
        """One line: used as e-mail subject and chat fallback text."""
        prefix = {
            DeliveryKind.NOTIFY: "",
            DeliveryKind.REMINDER: "still firing: ",
            DeliveryKind.ESCALATION: f"ESCALATION {self.escalation_level}: ",
            DeliveryKind.RESOLVED: "RESOLVED: ",
        }[self.kind]
        return f"[{self.severity.name}] {prefix}{self.title}"

    def as_dict(self) -> dict[str, Any]:
        """The generic webhook body (JSON)."""
        return {
            "alert_id": self.alert_id,
            "kind": self.kind.value,
            "severity": self.severity.name,
            "status": self.status,
            "title": self.title,
            "message": self.message,
            "dedup_key": self.dedup_key,
            "source": self.source,
            "labels": dict(self.labels),
            "opened_at": self.opened_at.isoformat(),
            "occurrences": self.occurrences,
            "escalation_level": self.escalation_level,
            "url": self.url,
            "event_id": self.event_id,
            "correlation_id": self.correlation_id,
            "related_event_id": self.related_event_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """The inverse of :meth:`as_dict` (the delivery journal stores notifications that way)."""
        return cls(
            alert_id=str(data["alert_id"]),
            kind=DeliveryKind(data["kind"]),
            severity=Severity[str(data["severity"])],
            status=str(data["status"]),
            title=str(data.get("title") or ""),
            message=str(data.get("message") or ""),
            dedup_key=str(data["dedup_key"]),
            source=str(data.get("source") or ""),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            opened_at=datetime.fromisoformat(str(data["opened_at"])),
            occurrences=int(data.get("occurrences") or 1),
            escalation_level=int(data.get("escalation_level") or 0),
            url=_opt_str(data.get("url")),
            event_id=_opt_str(data.get("event_id")),
            correlation_id=_opt_str(data.get("correlation_id")),
            related_event_id=_opt_str(data.get("related_event_id")),
        )


def delivery_id(notification: Notification, channel: str) -> str:
    """Identity of one notification to one channel: alert id, channel and attempt kind.

    The journal is keyed by it and receivers get it as an idempotency key, so a delivery
    re-attempted after a crash can be recognised as the same one.
    """
    return f"{notification.alert_id}/{channel}/{notification.attempt_kind}"
