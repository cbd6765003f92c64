"""The alert state machine: dedup and cooldown, escalation, acknowledgement, history.

Pure and synchronous (guarded by one lock): the consumer thread, the HTTP handlers
and the escalation ticker all call into it, and it answers with :class:`DeliveryJob`\\ s
that the :class:`~alerter.dispatcher.Dispatcher` sends asynchronously. Nothing here
waits on a network.

An *alert* in the history is one incident: the first record with a ``dedup_key``
opens it (its ``alert_id`` becomes the alert's id), later records with the same key
fold into it until a ``resolved`` record closes it.

Decisions about dedup and cooldown use each record's own time (its Kafka timestamp),
so replaying the topic after a restart rebuilds the same state without sending
anything (``replay=True``). Escalation deadlines are checked against the clock.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alerter import metrics
from alerter.models import (
    ACK_BY_LABEL,
    ACK_INCIDENT_LABEL,
    AlertEvent,
    AlertStatus,
    DeliveryKind,
    Notification,
    Severity,
    delivery_id,
)
from alerter.routing import EscalationPolicy, RoutingConfig
from mlops_platform.logs import get_logger

log = get_logger(__name__)

MAX_DELIVERIES_PER_ALERT = 100
MAX_EVENT_IDS_PER_ALERT = 50


class AlertNotFound(KeyError):
    pass


class AlertAlreadyResolved(ValueError):
    pass


@dataclass
class DeliveryRecord:
    """One notification to one channel, as shown in the history."""

    id: int
    channel: str
    kind: DeliveryKind
    escalation_level: int
    state: str  # pending | delivered | failed | skipped | replayed
    queued_at: datetime
    attempts: int = 0
    error: str | None = None
    finished_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "kind": self.kind.value,
            "escalation_level": self.escalation_level,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
            "queued_at": self.queued_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class DeliveryJob:
    """Send ``notification`` to ``channel``; report progress against ``record_id``."""

    alert_id: str
    record_id: int
    channel: str
    notification: Notification

    @property
    def delivery_id(self) -> str:
        """The journal key and the receivers' idempotency key (see :func:`~alerter.models.delivery_id`)."""
        return delivery_id(self.notification, self.channel)


@dataclass
class Incident:
    id: str
    dedup_key: str
    severity: Severity
    title: str
    message: str
    source: str
    labels: dict[str, str]
    opened_at: datetime
    last_seen_at: datetime
    last_notified_at: datetime
    routes: tuple[str, ...]
    channels: tuple[str, ...]
    cooldown_s: float
    notify_resolved: bool
    escalation: EscalationPolicy | None
    escalation_base_at: datetime
    first_event_id: str | None
    correlation_id: str | None
    related_event_id: str | None
    status: AlertStatus = AlertStatus.FIRING
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_comment: str | None = None
    occurrences: int = 1
    duplicates: int = 0
    escalation_level: int = 0
    alert_ids: list[str] = field(default_factory=list)
    deliveries: deque[DeliveryRecord] = field(default_factory=lambda: deque(maxlen=MAX_DELIVERIES_PER_ALERT))

    @property
    def is_open(self) -> bool:
        return self.status is not AlertStatus.RESOLVED

    @property
    def state(self) -> str:
        """firing | acknowledged | resolved"""
        if not self.is_open:
            return "resolved"
        return "acknowledged" if self.acknowledged_at is not None else "firing"

    def next_escalation_at(self) -> datetime | None:
        if not self.is_open or self.acknowledged_at is not None or self.escalation is None:
            return None
        if self.escalation_level >= len(self.escalation.levels):
            return None
        level = self.escalation.levels[self.escalation_level]
        return self.escalation_base_at + timedelta(seconds=level.after_s)

    def public(self) -> dict[str, Any]:
        next_at = self.next_escalation_at()
        return {
            "alert_id": self.id,
            "dedup_key": self.dedup_key,
            "status": self.state,
            "severity": self.severity.name,
            "title": self.title,
            "message": self.message,
            "source": self.source,
            "labels": dict(self.labels),
            "opened_at": self.opened_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "acknowledged_by": self.acknowledged_by,
            "ack_comment": self.ack_comment,
            "occurrences": self.occurrences,
            "duplicates": self.duplicates,
            "routes": list(self.routes),
            "channels": list(self.channels),
            "escalation_policy": self.escalation.name if self.escalation else None,
            "escalation_level": self.escalation_level,
            "next_escalation_at": next_at.isoformat() if next_at else None,
            "alert_ids": list(self.alert_ids),
            "event_id": self.first_event_id,
            "correlation_id": self.correlation_id,
            "related_event_id": self.related_event_id,
            "deliveries": [d.public() for d in self.deliveries],
        }


class AlertEngine:
    """Dedup, cooldown, escalation and bounded history of alerts."""

    def __init__(
        self,
        routing: RoutingConfig,
        *,
        enabled_channels: Collection[str],
        history_max: int = 1000,
        base_url: str | None = None,
    ) -> None:
        self.routing = routing
        self.enabled_channels = frozenset(enabled_channels)
        self.history_max = history_max
        self.base_url = base_url.rstrip("/") if base_url else None
        self._lock = threading.RLock()
        self._incidents: OrderedDict[str, Incident] = OrderedDict()
        self._open: dict[str, str] = {}  # dedup_key -> incident id
        self._aliases: dict[str, str] = {}  # any alert_id folded in -> incident id
        # Event ids already processed: a record redelivered after a crash (at-least-once)
        # must not count as a new occurrence.
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        self._seen_max = history_max * 20
        self._record_ids = itertools.count(1)

    # ------------------------------------------------------------------ input

    def process(self, alert: AlertEvent, *, replay: bool = False) -> list[DeliveryJob]:
        """Apply one record; return the notifications to send (none when replaying)."""
        with self._lock:
            if not replay:
                metrics.ALERTS_RECEIVED.labels(alert.severity.name, alert.status.value).inc()
            if alert.event_id is not None:
                if alert.event_id in self._seen_events:
                    metrics.DUPLICATES_SUPPRESSED.labels("redelivered").inc()
                    return []
                self._remember_event(alert.event_id)
            if alert.status is AlertStatus.ACKNOWLEDGED:
                self._apply_ack_record(alert)
                jobs: list[DeliveryJob] = []
            elif alert.status is AlertStatus.RESOLVED:
                jobs = self._resolve(alert)
            else:
                jobs = self._fire(alert)
            if replay:
                # Sent (or not) by the previous run: its outcome is not known any more.
                for job in jobs:
                    self._set_delivery(job, state="replayed", attempts=0, error=None, at=None)
                jobs = []
            self._evict()
            self._update_gauge()
            return jobs

    def _fire(self, alert: AlertEvent) -> list[DeliveryJob]:
        now = alert.event_time
        incident_id = self._open.get(alert.dedup_key)
        if incident_id is None:
            return self._open_incident(alert)
        incident = self._incidents[incident_id]
        incident.occurrences += 1
        incident.last_seen_at = max(incident.last_seen_at, now)
        incident.title, incident.message = alert.title or incident.title, alert.message or incident.message
        incident.labels.update(alert.labels)
        self._add_alias(incident, alert.alert_id)
        if alert.severity > incident.severity:
            # Worse than what people were told: not a duplicate, route it afresh.
            decision = self.routing.resolve(alert)
            incident.severity = alert.severity
            incident.routes, incident.channels = decision.routes, decision.channels
            incident.cooldown_s, incident.notify_resolved = decision.cooldown_s, decision.notify_resolved
            if decision.escalation is not None and decision.escalation != incident.escalation:
                incident.escalation, incident.escalation_level = decision.escalation, 0
                incident.escalation_base_at = now
            incident.last_notified_at = now
            log.info("alert_severity_raised", alert_id=incident.id, severity=alert.severity.name)
            return self._jobs(incident, DeliveryKind.NOTIFY, incident.channels, alert)
        if incident.acknowledged_at is not None:
            incident.duplicates += 1
            metrics.DUPLICATES_SUPPRESSED.labels("acknowledged").inc()
            return []
        if (now - incident.last_notified_at).total_seconds() < incident.cooldown_s:
            incident.duplicates += 1
            metrics.DUPLICATES_SUPPRESSED.labels("cooldown").inc()
            return []
        incident.last_notified_at = now
        return self._jobs(incident, DeliveryKind.REMINDER, incident.channels, alert)

    def _open_incident(self, alert: AlertEvent) -> list[DeliveryJob]:
        now = alert.event_time
        decision = self.routing.resolve(alert)
        incident = Incident(
            id=self._new_id(alert.alert_id),
            dedup_key=alert.dedup_key,
            severity=alert.severity,
            title=alert.title,
            message=alert.message,
            source=alert.source,
            labels=dict(alert.labels),
            opened_at=now,
            last_seen_at=now,
            last_notified_at=now,
            routes=decision.routes,
            channels=decision.channels,
            cooldown_s=decision.cooldown_s,
            notify_resolved=decision.notify_resolved,
            escalation=decision.escalation,
            escalation_base_at=now,
            first_event_id=alert.event_id,
            correlation_id=alert.correlation_id,
            related_event_id=alert.related_event_id,
        )
        self._incidents[incident.id] = incident
        self._open[alert.dedup_key] = incident.id
        self._add_alias(incident, alert.alert_id)
        if not decision.channels:
            metrics.UNROUTED.inc()
            log.warning(
                "alert_unrouted", alert_id=incident.id, severity=alert.severity.name, source=alert.source
            )
        return self._jobs(incident, DeliveryKind.NOTIFY, decision.channels, alert)

    def _resolve(self, alert: AlertEvent) -> list[DeliveryJob]:
        incident_id = self._open.get(alert.dedup_key)
        if incident_id is None:
            log.info("resolved_without_open_alert", dedup_key=alert.dedup_key)
            return []
        incident = self._incidents[incident_id]
        incident.status = AlertStatus.RESOLVED
        incident.resolved_at = alert.event_time
        incident.last_seen_at = max(incident.last_seen_at, alert.event_time)
        self._add_alias(incident, alert.alert_id)
        del self._open[alert.dedup_key]
        if not incident.notify_resolved:
            return []
        # Tell whoever was told about it (escalation channels included).
        told = [d.channel for d in incident.deliveries if d.state != "skipped"]
        channels = tuple(dict.fromkeys([*incident.channels, *told]))
        return self._jobs(incident, DeliveryKind.RESOLVED, channels, alert)

    def _apply_ack_record(self, alert: AlertEvent) -> None:
        target = alert.labels.get(ACK_INCIDENT_LABEL) or alert.related_event_id or ""
        incident = self._find(target)
        if incident is None:
            open_id = self._open.get(alert.dedup_key)
            incident = self._incidents.get(open_id) if open_id else None
        if incident is None:
            log.info("ack_for_unknown_alert", target=target, dedup_key=alert.dedup_key)
            return
        self._ack(incident, alert.labels.get(ACK_BY_LABEL) or "unknown", alert.event_time, alert.message)

    # ------------------------------------------------------------------ operations

    def acknowledge(
        self, alert_id: str, *, by: str, at: datetime | None = None, comment: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Acknowledge an open alert (stops its escalation); returns (alert, changed)."""
        with self._lock:
            incident = self._find(alert_id)
            if incident is None:
                raise AlertNotFound(alert_id)
            if not incident.is_open:
                raise AlertAlreadyResolved(alert_id)
            changed = self._ack(incident, by, at or datetime.now(UTC), comment)
            self._update_gauge()
            return incident.public(), changed

    def _ack(self, incident: Incident, by: str, at: datetime, comment: str | None) -> bool:
        if incident.acknowledged_at is not None or not incident.is_open:
            return False
        incident.acknowledged_at, incident.acknowledged_by = at, by
        incident.ack_comment = comment or None
        log.info("alert_acknowledged", alert_id=incident.id, by=by)
        return True

    def due_escalations(self, now: datetime | None = None) -> list[DeliveryJob]:
        """Escalate open, unacknowledged alerts whose next level is due.

        When several levels are overdue at once (e.g. after a pause), only the highest
        one is sent.
        """
        now = now or datetime.now(UTC)
        jobs: list[DeliveryJob] = []
        with self._lock:
            for incident in self._due(now):
                assert incident.escalation is not None
                level = incident.escalation.levels[incident.escalation_level - 1]
                metrics.ESCALATIONS.labels(str(incident.escalation_level)).inc()
                log.info("alert_escalated", alert_id=incident.id, level=incident.escalation_level)
                jobs.extend(
                    self._jobs(
                        incident, DeliveryKind.ESCALATION, level.channels, None, incident.escalation_level
                    )
                )
        return jobs

    def settle_after_replay(self, now: datetime | None = None) -> int:
        """After a restore: treat escalation levels already due as sent; returns how many alerts."""
        with self._lock:
            settled = self._due(now or datetime.now(UTC))
            self._update_gauge()
            return len(settled)

    def announce_open(self, now: datetime | None = None) -> list[DeliveryJob]:
        """Notify every open, unacknowledged alert once more (a new consumer group starting up)."""
        now = now or datetime.now(UTC)
        jobs: list[DeliveryJob] = []
        with self._lock:
            for incident_id in list(self._open.values()):
                incident = self._incidents[incident_id]
                if incident.acknowledged_at is None:
                    incident.last_notified_at = now
                    jobs.extend(self._jobs(incident, DeliveryKind.NOTIFY, incident.channels, None))
        return jobs

    def _due(self, now: datetime) -> list[Incident]:
        """Open, unacknowledged incidents with an overdue level; advances their level."""
        due: list[Incident] = []
        for incident_id in list(self._open.values()):
            incident = self._incidents[incident_id]
            if incident.acknowledged_at is not None or incident.escalation is None:
                continue
            levels = incident.escalation.levels
            top = incident.escalation_level
            while (
                top < len(levels)
                and incident.escalation_base_at + timedelta(seconds=levels[top].after_s) <= now
            ):
                top += 1
            if top > incident.escalation_level:
                incident.escalation_level = top
                due.append(incident)
        return due

    def delivery_update(
        self,
        job: DeliveryJob,
        *,
        state: str,
        attempts: int,
        error: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record a delivery's progress (called by the dispatcher)."""
        with self._lock:
            self._set_delivery(job, state=state, attempts=attempts, error=error, at=at)

    def _set_delivery(
        self, job: DeliveryJob, *, state: str, attempts: int, error: str | None, at: datetime | None
    ) -> None:
        incident = self._incidents.get(job.alert_id)
        if incident is None:  # evicted meanwhile
            return
        record = next((r for r in incident.deliveries if r.id == job.record_id), None)
        if record is None:
            # A delivery resumed from the journal before its alert was back in the history
            # (the alert record is being processed again): the same notification's line.
            n = job.notification
            record = next(
                (
                    r
                    for r in reversed(incident.deliveries)
                    if (r.channel, r.kind, r.escalation_level) == (job.channel, n.kind, n.escalation_level)
                    and r.state in ("pending", "replayed", "retrying")
                ),
                None,
            )
        if record is not None:
            record.state, record.attempts, record.error = state, attempts, error
            if state in ("delivered", "failed"):
                record.finished_at = at or datetime.now(UTC)

    def resumed_job(self, notification: Notification, channel: str) -> DeliveryJob:
        """A delivery the journal says was started but never finished, tied to its history line.

        After a restart the replay marked that line ``replayed``; it becomes ``pending``
        again so ``GET /alerts/{id}`` shows the re-attempt. An alert no longer in the
        history (evicted, or older than the replay window) still gets its delivery.
        """
        with self._lock:
            incident = self._find(notification.alert_id)
            record_id = 0
            if incident is not None:
                record = next(
                    (
                        r
                        for r in reversed(incident.deliveries)
                        if r.channel == channel
                        and r.kind is notification.kind
                        and r.escalation_level == notification.escalation_level
                    ),
                    None,
                )
                if record is None:
                    record = DeliveryRecord(
                        id=next(self._record_ids),
                        channel=channel,
                        kind=notification.kind,
                        escalation_level=notification.escalation_level,
                        state="pending",
                        queued_at=datetime.now(UTC),
                    )
                    incident.deliveries.append(record)
                record.state, record.error, record.finished_at = "pending", None, None
                record_id = record.id
            return DeliveryJob(notification.alert_id, record_id, channel, notification)

    # ------------------------------------------------------------------ queries

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            incident = self._find(alert_id)
            return incident.public() if incident else None

    def query(
        self,
        *,
        statuses: Collection[str] | None = None,
        severities: Collection[Severity] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first; ``statuses`` among firing, acknowledged, resolved, open."""
        wanted = set(statuses or ())
        if "open" in wanted:
            wanted |= {"firing", "acknowledged"}
        with self._lock:
            out: list[dict[str, Any]] = []
            for incident in reversed(self._incidents.values()):
                if wanted and incident.state not in wanted:
                    continue
                if severities and incident.severity not in severities:
                    continue
                out.append(incident.public())
                if len(out) >= limit:
                    break
            return out

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"alerts": len(self._incidents), "open": len(self._open)}

    # ------------------------------------------------------------------ internals

    def _find(self, alert_id: str) -> Incident | None:
        incident = self._incidents.get(alert_id)
        if incident is None and alert_id in self._aliases:
            incident = self._incidents.get(self._aliases[alert_id])
        return incident

    def _new_id(self, alert_id: str) -> str:
        # The first record's alert_id names the alert. A producer may reuse an id for a
        # later, separate alert; suffixes keep ids unique and deterministic on replay.
        candidate = alert_id
        for n in itertools.count(2):
            if candidate not in self._incidents:
                return candidate
            candidate = f"{alert_id}~{n}"
        raise AssertionError("unreachable")

    def _add_alias(self, incident: Incident, alert_id: str) -> None:
        if not alert_id:
            return
        self._aliases[alert_id] = incident.id
        if alert_id not in incident.alert_ids:
            incident.alert_ids.append(alert_id)
            if len(incident.alert_ids) > MAX_EVENT_IDS_PER_ALERT:
                dropped = incident.alert_ids.pop(1)  # keep the first: it names the alert
                if self._aliases.get(dropped) == incident.id:
                    del self._aliases[dropped]

    def _remember_event(self, event_id: str) -> None:
        self._seen_events[event_id] = None
        while len(self._seen_events) > self._seen_max:
            self._seen_events.popitem(last=False)

    def _jobs(
        self,
        incident: Incident,
        kind: DeliveryKind,
        channels: Iterable[str],
        alert: AlertEvent | None,
        level: int = 0,
    ) -> list[DeliveryJob]:
        notification = Notification(
            alert_id=incident.id,
            kind=kind,
            severity=incident.severity,
            status=incident.state,
            title=incident.title,
            message=incident.message,
            dedup_key=incident.dedup_key,
            source=incident.source,
            labels=dict(incident.labels),
            opened_at=incident.opened_at,
            occurrences=incident.occurrences,
            escalation_level=level,
            url=f"{self.base_url}/alerts/{incident.id}" if self.base_url else None,
            event_id=alert.event_id if alert else incident.first_event_id,
            correlation_id=alert.correlation_id if alert else incident.correlation_id,
            related_event_id=alert.related_event_id if alert else incident.related_event_id,
        )
        queued_at = datetime.now(UTC)
        jobs: list[DeliveryJob] = []
        for channel in channels:
            record = DeliveryRecord(
                id=next(self._record_ids),
                channel=channel,
                kind=kind,
                escalation_level=level,
                state="pending",
                queued_at=queued_at,
            )
            if channel not in self.enabled_channels:
                record.state, record.error = "skipped", "channel not configured"
                metrics.DELIVERIES_SKIPPED.labels(channel, "disabled").inc()
            else:
                jobs.append(DeliveryJob(incident.id, record.id, channel, notification))
            incident.deliveries.append(record)
        return jobs

    def _evict(self) -> None:
        while len(self._incidents) > self.history_max:
            victim = next((i for i in self._incidents.values() if not i.is_open), None)
            if victim is None:  # everything is open: drop the oldest all the same
                victim = next(iter(self._incidents.values()))
                log.warning("open_alert_evicted", alert_id=victim.id, history_max=self.history_max)
                self._open.pop(victim.dedup_key, None)
            del self._incidents[victim.id]
            for alias in victim.alert_ids:
                if self._aliases.get(alias) == victim.id:
                    del self._aliases[alias]

    def _update_gauge(self) -> None:
        counts: dict[Severity, int] = {}
        for incident_id in self._open.values():
            severity = self._incidents[incident_id].severity
            counts[severity] = counts.get(severity, 0) + 1
        metrics.set_open_alerts(counts)
