from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from alerter.engine import AlertAlreadyResolved, AlertEngine, AlertNotFound
from alerter.models import ACK_BY_LABEL, ACK_INCIDENT_LABEL, AlertEvent, AlertStatus, DeliveryKind, Severity
from alerter.routing import RoutingConfig

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

RULES = RoutingConfig.from_dict(
    {
        "defaults": {"cooldown": "10m"},
        "routes": [
            {
                "name": "critical",
                "match": {"min_severity": "CRITICAL"},
                "channels": ["slack", "webhook"],
                "escalation": "oncall",
            },
            {"name": "default", "channels": ["webhook", "email"]},
        ],
        "escalations": {
            "oncall": [
                {"after": "5m", "channels": ["email"]},
                {"after": "15m", "channels": ["email", "slack"]},
            ]
        },
    }
)


def event(
    key: str = "k1",
    *,
    at: datetime = T0,
    severity: Severity = Severity.CRITICAL,
    status: AlertStatus = AlertStatus.FIRING,
    alert_id: str | None = None,
    event_id: str | None = None,
    labels: dict[str, str] | None = None,
) -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id or str(uuid.uuid4()),
        severity=severity,
        title=f"title {key}",
        message=f"message {key}",
        dedup_key=key,
        status=status,
        source="drift-detector",
        event_time=at,
        labels=labels or {},
        event_id=event_id or str(uuid.uuid4()),
        correlation_id="corr-1",
    )


def engine(history_max: int = 100, enabled: tuple[str, ...] = ("slack", "webhook", "email")) -> AlertEngine:
    return AlertEngine(
        RULES, enabled_channels=enabled, history_max=history_max, base_url="http://alerter:8006"
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_new_alert_goes_to_its_routes_channels() -> None:
    eng = engine()
    jobs = eng.process(event(alert_id="A1"))
    assert [(j.channel, j.notification.kind) for j in jobs] == [
        ("slack", DeliveryKind.NOTIFY),
        ("webhook", DeliveryKind.NOTIFY),
    ]
    assert jobs[0].notification.url == "http://alerter:8006/alerts/A1"
    alert = eng.get("A1")
    assert alert is not None
    assert alert["status"] == "firing"
    assert alert["routes"] == ["critical"]
    assert [d["state"] for d in alert["deliveries"]] == ["pending", "pending"]


def test_disabled_channels_are_skipped_and_recorded() -> None:
    before = metric("alerter_deliveries_skipped_total", channel="slack", reason="disabled")
    eng = engine(enabled=("webhook",))
    jobs = eng.process(event(alert_id="A1"))
    assert [j.channel for j in jobs] == ["webhook"]
    alert = eng.get("A1")
    assert alert is not None
    assert [(d["channel"], d["state"]) for d in alert["deliveries"]] == [
        ("slack", "skipped"),
        ("webhook", "pending"),
    ]
    assert metric("alerter_deliveries_skipped_total", channel="slack", reason="disabled") == before + 1


def test_same_key_within_cooldown_is_a_duplicate_and_after_it_a_reminder() -> None:
    eng = engine()
    before = metric("alerter_duplicates_suppressed_total", reason="cooldown")
    eng.process(event(alert_id="A1"))
    assert eng.process(event(at=T0 + timedelta(minutes=3))) == []
    assert eng.process(event(at=T0 + timedelta(minutes=9, seconds=59))) == []
    assert metric("alerter_duplicates_suppressed_total", reason="cooldown") == before + 2
    reminder = eng.process(event(at=T0 + timedelta(minutes=10)))
    assert {j.notification.kind for j in reminder} == {DeliveryKind.REMINDER}
    # the cooldown restarts from the reminder
    assert eng.process(event(at=T0 + timedelta(minutes=15))) == []
    alert = eng.get("A1")
    assert alert is not None
    assert alert["occurrences"] == 5
    assert alert["duplicates"] == 3


def test_a_worse_severity_is_not_a_duplicate() -> None:
    eng = engine()
    eng.process(event(alert_id="A1", severity=Severity.MEDIUM))
    jobs = eng.process(event(at=T0 + timedelta(seconds=5), severity=Severity.CRITICAL))
    assert [j.channel for j in jobs] == ["slack", "webhook"]
    alert = eng.get("A1")
    assert alert is not None
    assert alert["severity"] == "CRITICAL"
    assert alert["escalation_policy"] == "oncall"
    # a lower severity later is a plain duplicate
    assert eng.process(event(at=T0 + timedelta(seconds=6), severity=Severity.LOW)) == []


def test_resolved_closes_the_alert_and_tells_the_channels_that_heard_of_it() -> None:
    eng = engine()
    eng.process(event(alert_id="A1"))
    jobs = eng.process(event(at=T0 + timedelta(minutes=1), status=AlertStatus.RESOLVED))
    assert [(j.channel, j.notification.kind) for j in jobs] == [
        ("slack", DeliveryKind.RESOLVED),
        ("webhook", DeliveryKind.RESOLVED),
    ]
    alert = eng.get("A1")
    assert alert is not None
    assert alert["status"] == "resolved"
    assert alert["next_escalation_at"] is None
    # a resolved without an open alert does nothing
    assert eng.process(event(at=T0 + timedelta(minutes=2), status=AlertStatus.RESOLVED)) == []
    # the same key firing again is a new alert, even within the old cooldown; reusing the id is fine
    again = eng.process(event(at=T0 + timedelta(minutes=3), alert_id="A1"))
    assert {j.notification.kind for j in again} == {DeliveryKind.NOTIFY}
    assert [a["alert_id"] for a in eng.query()] == ["A1~2", "A1"]


def test_a_redelivered_record_is_not_a_new_occurrence() -> None:
    eng = engine()
    first = event(alert_id="A1", event_id="e-1")
    assert eng.process(first)
    before = metric("alerter_duplicates_suppressed_total", reason="redelivered")
    assert eng.process(first) == []
    assert metric("alerter_duplicates_suppressed_total", reason="redelivered") == before + 1
    alert = eng.get("A1")
    assert alert is not None and alert["occurrences"] == 1


def test_escalation_levels_fire_in_order_until_acknowledged() -> None:
    eng = engine()
    eng.process(event(alert_id="A1"))
    before = metric("alerter_escalations_total", level="1")
    assert eng.due_escalations(T0 + timedelta(minutes=4, seconds=59)) == []
    level1 = eng.due_escalations(T0 + timedelta(minutes=5))
    assert [(j.channel, j.notification.kind, j.notification.escalation_level) for j in level1] == [
        ("email", DeliveryKind.ESCALATION, 1)
    ]
    assert eng.due_escalations(T0 + timedelta(minutes=6)) == []  # not twice
    assert metric("alerter_escalations_total", level="1") == before + 1
    alert, changed = eng.acknowledge("A1", by="ana", at=T0 + timedelta(minutes=7))
    assert changed and alert["status"] == "acknowledged" and alert["acknowledged_by"] == "ana"
    assert eng.due_escalations(T0 + timedelta(hours=1)) == []
    # repeats of an acknowledged alert are not sent, even after the cooldown
    assert eng.process(event(at=T0 + timedelta(minutes=30))) == []
    assert eng.acknowledge("A1", by="bob")[1] is False


def test_only_the_highest_overdue_level_is_sent() -> None:
    eng = engine()
    eng.process(event(alert_id="A1"))
    jobs = eng.due_escalations(T0 + timedelta(minutes=20))
    assert {(j.channel, j.notification.escalation_level) for j in jobs} == {("email", 2), ("slack", 2)}
    alert = eng.get("A1")
    assert alert is not None and alert["escalation_level"] == 2
    assert eng.due_escalations(T0 + timedelta(hours=5)) == []


def test_resolution_stops_escalation() -> None:
    eng = engine()
    eng.process(event(alert_id="A1"))
    eng.process(event(at=T0 + timedelta(minutes=1), status=AlertStatus.RESOLVED))
    assert eng.due_escalations(T0 + timedelta(hours=1)) == []


def test_ack_errors() -> None:
    eng = engine()
    with pytest.raises(AlertNotFound):
        eng.acknowledge("nope", by="x")
    eng.process(event(alert_id="A1"))
    eng.process(event(at=T0 + timedelta(minutes=1), status=AlertStatus.RESOLVED))
    with pytest.raises(AlertAlreadyResolved):
        eng.acknowledge("A1", by="x")


def test_any_folded_alert_id_finds_the_alert() -> None:
    eng = engine()
    eng.process(event(alert_id="A1"))
    eng.process(event(alert_id="A2", at=T0 + timedelta(seconds=1)))
    found = eng.get("A2")
    assert found is not None and found["alert_id"] == "A1"
    assert eng.acknowledge("A2", by="ana")[0]["alert_id"] == "A1"


def test_replay_rebuilds_state_without_sending() -> None:
    """What a restart does: the records come again with replay=True."""
    records = [
        event(alert_id="A1"),
        event(at=T0 + timedelta(minutes=1)),
        event("k2", alert_id="B1", at=T0 + timedelta(minutes=2)),
        event(
            "k2",
            at=T0 + timedelta(minutes=3),
            status=AlertStatus.ACKNOWLEDGED,
            labels={ACK_INCIDENT_LABEL: "B1", ACK_BY_LABEL: "ana"},
        ),
        event("k3", alert_id="C1", at=T0 + timedelta(minutes=4), severity=Severity.LOW),
        event("k3", at=T0 + timedelta(minutes=5), status=AlertStatus.RESOLVED),
    ]
    eng = engine()
    assert all(eng.process(r, replay=True) == [] for r in records)
    a1, b1, c1 = eng.get("A1"), eng.get("B1"), eng.get("C1")
    assert a1 is not None and b1 is not None and c1 is not None
    assert (a1["status"], a1["occurrences"]) == ("firing", 2)
    assert {d["state"] for d in a1["deliveries"]} == {"replayed"}
    assert (b1["status"], b1["acknowledged_by"]) == ("acknowledged", "ana")
    assert c1["status"] == "resolved"
    # a repeat after the restart is still inside the cooldown
    assert eng.process(event(at=T0 + timedelta(minutes=6))) == []
    # levels that came due while replaying count as sent; later ones still fire
    assert eng.settle_after_replay(T0 + timedelta(minutes=7)) == 1
    assert eng.due_escalations(T0 + timedelta(minutes=8)) == []
    assert {j.notification.escalation_level for j in eng.due_escalations(T0 + timedelta(minutes=15))} == {2}


def test_announce_open_notifies_unacknowledged_open_alerts_once() -> None:
    eng = engine()
    eng.process(event(alert_id="A1"), replay=True)
    eng.process(event("k2", alert_id="B1"), replay=True)
    eng.acknowledge("B1", by="ana")
    jobs = eng.announce_open(T0 + timedelta(minutes=1))
    assert {j.alert_id for j in jobs} == {"A1"}
    assert eng.process(event(at=T0 + timedelta(minutes=2))) == []


def test_query_filters_by_status_and_severity_newest_first() -> None:
    eng = engine()
    eng.process(event("k1", alert_id="A", severity=Severity.CRITICAL))
    eng.process(event("k2", alert_id="B", severity=Severity.LOW, at=T0 + timedelta(seconds=1)))
    eng.process(event("k3", alert_id="C", severity=Severity.LOW, at=T0 + timedelta(seconds=2)))
    eng.process(event("k3", status=AlertStatus.RESOLVED, at=T0 + timedelta(seconds=3)))
    eng.acknowledge("B", by="x")
    assert [a["alert_id"] for a in eng.query()] == ["C", "B", "A"]
    assert [a["alert_id"] for a in eng.query(statuses=["firing"])] == ["A"]
    assert [a["alert_id"] for a in eng.query(statuses=["open"])] == ["B", "A"]
    assert [a["alert_id"] for a in eng.query(statuses=["resolved"])] == ["C"]
    assert [a["alert_id"] for a in eng.query(severities=[Severity.LOW])] == ["C", "B"]
    assert [a["alert_id"] for a in eng.query(limit=1)] == ["C"]


def test_open_alerts_gauge_follows_the_state() -> None:
    eng = engine()
    eng.process(event("k1", severity=Severity.HIGH))
    eng.process(event("k2", severity=Severity.HIGH))
    assert metric("alerter_open_alerts", severity="HIGH") == 2
    eng.process(event("k1", severity=Severity.HIGH, status=AlertStatus.RESOLVED))
    assert metric("alerter_open_alerts", severity="HIGH") == 1


def test_history_is_bounded_and_evicts_closed_alerts_first() -> None:
    eng = engine(history_max=3)
    eng.process(event("k1", alert_id="A"))
    eng.process(event("k2", alert_id="B"))
    eng.process(event("k2", status=AlertStatus.RESOLVED))
    eng.process(event("k3", alert_id="C"))
    eng.process(event("k4", alert_id="D"))
    assert [a["alert_id"] for a in eng.query()] == ["D", "C", "A"]  # B (resolved) went first
    eng.process(event("k5", alert_id="E"))  # all open: the oldest goes
    assert [a["alert_id"] for a in eng.query()] == ["E", "D", "C"]
    assert eng.stats() == {"alerts": 3, "open": 3}
    # k1's alert is gone: the key opens a new alert
    assert eng.process(event("k1", alert_id="A-again"))


def test_delivery_progress_is_recorded() -> None:
    eng = engine()
    job = eng.process(event(alert_id="A1"))[0]
    eng.delivery_update(job, state="retrying", attempts=1, error="HTTP 500")
    alert = eng.get("A1")
    assert alert is not None
    record = alert["deliveries"][0]
    assert (record["state"], record["attempts"], record["error"]) == ("retrying", 1, "HTTP 500")
    eng.delivery_update(job, state="delivered", attempts=2)
    alert = eng.get("A1")
    assert alert is not None
    assert alert["deliveries"][0]["state"] == "delivered"
    assert alert["deliveries"][0]["finished_at"] is not None


def test_alert_event_from_a_record_value() -> None:
    value = {
        "envelope": {"event_id": "e1", "event_time": T0, "source": "auto-responder", "correlation_id": "c1"},
        "alert_id": "A1",
        "severity": "warning",
        "title": "t",
        "message": "m",
        "dedup_key": "k",
        "status": "resolved",
        "labels": {"service": "predictor"},
        "related_event_id": "x",
    }
    parsed = AlertEvent.from_value(value, timestamp_ms=int((T0 + timedelta(seconds=1)).timestamp() * 1000))
    assert parsed.severity is Severity.MEDIUM
    assert parsed.status is AlertStatus.RESOLVED
    assert parsed.source == "auto-responder"
    assert parsed.event_time == T0 + timedelta(seconds=1)
    assert parsed.event_id == "e1" and parsed.correlation_id == "c1"
    assert AlertEvent.from_value({**value, "labels": {"source": "alertmanager"}}).source == "alertmanager"
    assert AlertEvent.from_value(value).event_time == T0
    assert Severity.parse("nonsense") is Severity.MEDIUM
    assert Severity.parse("critical") is Severity.CRITICAL
