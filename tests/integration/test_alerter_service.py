"""The alerter as a process against the real broker and registry, delivering to real local sinks.

Each test runs ``python -m alerter`` on a fresh alerts topic (``ALERTER_ALERTS_TOPIC``,
carrying ``system.alerts`` events) with its own consumer group, points its channels at an
HTTP receiver and an SMTP server (aiosmtpd) started here, publishes alerts with the
platform's producer and watches what arrives. Nothing asserts on elapsed time except lower
bounds that follow from the configured backoff.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer

from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.alert_sinks import AlertSinks
from tests.support.keys import identity
from tests.support.processes import ServiceLauncher, ServiceProcess
from tests.support.topics import consume

pytestmark = pytest.mark.integration

ROUTES = """
defaults: {cooldown: 10m}
routes:
  - name: critical
    match: {min_severity: CRITICAL}
    channels: [webhook, slack, email]
    escalation: oncall
  - name: default
    channels: [webhook]
escalations:
  oncall:
    - {after: 4s, channels: [slack]}
    - {after: 8s, channels: [email]}
"""


@dataclass
class Alerter:
    """The alerter's API, over a ``python -m alerter`` process started by the launcher."""

    service: ServiceProcess

    @property
    def log_path(self) -> Path:
        return self.service.log_path

    def get(self, path: str, **params: Any) -> Any:
        return self.service.json(path, **params)

    def post(self, path: str, json: Any = None) -> httpx.Response:
        return self.service.post(path, json=json, timeout=30)

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        response = self.service.get(f"/alerts/{alert_id}")
        return response.json() if response.status_code == 200 else None

    def metric(self, name: str, **labels: str) -> float:
        return self.service.metric_sum(name, **labels)

    def stop(self) -> int:
        return self.service.stop()


@pytest.fixture
def sinks() -> Iterator[AlertSinks]:
    with AlertSinks() as running:
        yield running


@pytest.fixture
def alerts_topic(topic_factory: Callable[..., str], serde: AvroSerde) -> str:
    return topic_factory("alerts", partitions=1)


@pytest.fixture
def start_alerter(
    tmp_path: Path, sinks: AlertSinks, alerts_topic: str, serde: AvroSerde, launcher: ServiceLauncher
) -> Callable[..., Alerter]:
    # The launcher is set up after the sinks, so it stops the alerters before the sinks go.
    group = f"test-alerter-{uuid.uuid4().hex[:10]}"
    # Its own delivery journal (created by the alerter), shared by its restarts like the group.
    journal = f"alerter-deliveries.test-{uuid.uuid4().hex[:10]}"

    def start(routes: str = ROUTES, channels: dict[str, str] | None = None, **env: str) -> Alerter:
        routes_file = tmp_path / "routes.yaml"
        routes_file.write_text(routes)
        full_env = {
            "ALERTER_ALERTS_TOPIC": alerts_topic,
            "ALERTER_GROUP_ID": group,
            "ALERTER_JOURNAL_TOPIC": journal,
            "ALERTER_ROUTES_FILE": str(routes_file),
            "ALERTER_ESCALATION_INTERVAL_S": "0.2",
            "ALERTER_DELIVERY_BACKOFF_BASE_S": "0.3",
            "ALERTER_DELIVERY_BACKOFF_JITTER": "0",
            "ALERTER_DELIVERY_MAX_ATTEMPTS": "3",
            "ALERTER_INSTANCE_ID": f"test-{uuid.uuid4().hex[:6]}",
            # JSON lines: the restart test looks for the "alerter_stopped" event in the log.
            "LOG_FORMAT": "json",
            **(sinks.alerter_env() if channels is None else channels),
            **env,
        }
        return Alerter(launcher.start("alerter", "ALERTER_", full_env, timeout_s=90, stop_timeout_s=60))

    return start


@pytest.fixture
def publish(
    platform_settings: PlatformSettings, serde: AvroSerde, alerts_topic: str
) -> Callable[..., dict[str, Any]]:
    producer = EventProducer(platform_settings, "alerter-test", serde)

    def send(
        title: str,
        *,
        key: str | None = None,
        severity: str = "CRITICAL",
        status: str = "firing",
        source: str = "drift-detector",
        alert_id: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        event = make_event(
            source,
            {
                "alert_id": alert_id or f"alert-{uuid.uuid4().hex[:8]}",
                "severity": severity,
                "title": title,
                "message": f"{title}: details",
                "dedup_key": key or title,
                "status": status,
                "labels": labels or {},
                "related_event_id": None,
            },
        )
        producer.publish(alerts_topic, event, key=event["dedup_key"], schema_topic=Topic.SYSTEM_ALERTS)
        return event

    return send


def bodies(sinks: AlertSinks, path: str, alert_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        r.body
        for r in sinks.requests(path)
        if isinstance(r.body, dict)
        and r.body.get("alert_id") == alert_id
        and (kind is None or r.body.get("kind") == kind)
    ]


def by_delivery_id(sinks: AlertSinks, path: str) -> dict[str, list[int]]:
    """Requests that reached ``path`` grouped by their ``X-Delivery-Id`` header: the statuses."""
    seen: dict[str, list[int]] = {}
    for r in sinks.requests(path):
        headers = {k.lower(): v for k, v in r.headers.items()}
        seen.setdefault(headers.get("x-delivery-id", "?"), []).append(r.status)
    return seen


def slack_texts(sinks: AlertSinks) -> list[str]:
    return [str(r.body.get("text")) for r in sinks.requests("/slack") if isinstance(r.body, dict)]


def wait(predicate: Callable[[], Any], what: str, alerter: Alerter, timeout_s: float = 60) -> None:
    alerter.service.wait(what, predicate, timeout_s, interval_s=0.1)


# --------------------------------------------------------------------------- tests


def test_delivers_to_webhook_slack_and_email_dedups_and_resolves(
    start_alerter: Callable[..., Alerter], publish: Callable[..., dict[str, Any]], sinks: AlertSinks
) -> None:
    alerter = start_alerter()
    ready = alerter.get("/ready")
    assert ready["checks"]["channels"]["ok"]
    assert "webhook: POST http://127.0.0.1" in ready["checks"]["channels"]["detail"]

    first = publish("Drift on amount", key="drift:fraud", alert_id="A1")
    wait(lambda: bodies(sinks, "/webhook", "A1"), "webhook delivery", alerter)
    wait(lambda: any("Drift on amount" in t for t in slack_texts(sinks)), "slack delivery", alerter)
    wait(lambda: any("Drift on amount" in m.subject for m in sinks.mails()), "e-mail delivery", alerter)

    webhook = bodies(sinks, "/webhook", "A1")[0]
    assert webhook["severity"] == "CRITICAL" and webhook["kind"] == "notify"
    assert webhook["dedup_key"] == "drift:fraud" and webhook["source"] == "drift-detector"
    assert webhook["event_id"] == first["envelope"]["event_id"]
    assert webhook["url"].endswith("/alerts/A1")
    slack = next(r.body for r in sinks.requests("/slack"))
    assert slack["blocks"][0]["type"] == "header"
    mail = sinks.mails()[0]
    assert mail.subject == "[CRITICAL] Drift on amount"
    assert mail.rcpt_tos == ["oncall@localhost"] and mail.message["From"] == "alerter@localhost"

    # same dedup key within the cooldown: counted, not sent
    publish("Drift on amount", key="drift:fraud", alert_id="A1-again")
    publish("Drift on amount", key="drift:fraud", alert_id="A1-third")
    publish("Queue is slow", key="other", severity="LOW", alert_id="B1")  # ordered after the duplicates
    wait(lambda: bodies(sinks, "/webhook", "B1"), "the alert after the duplicates", alerter)
    alert = alerter.alert("A1")
    assert alert is not None
    assert (alert["occurrences"], alert["duplicates"]) == (3, 2)
    assert sorted(d["channel"] for d in alert["deliveries"]) == ["email", "slack", "webhook"]
    assert (alerter.alert("A1-third") or {}).get("alert_id") == "A1"  # any folded id finds it
    assert len(bodies(sinks, "/webhook", "A1")) == 1
    assert alerter.metric("alerter_duplicates_suppressed_total", reason="cooldown") == 2
    assert alerter.metric("alerter_alerts_received_total") == 4
    wait(
        lambda: alerter.metric("alerter_deliveries_total", channel="email", kind="notify") == 1,
        "metric",
        alerter,
    )

    # resolved closes it and tells the channels
    publish("Drift on amount", key="drift:fraud", status="resolved", alert_id="A1-ok")
    wait(lambda: bodies(sinks, "/webhook", "A1", kind="resolved"), "resolved notification", alerter)
    wait(
        lambda: any(m.subject.startswith("[CRITICAL] RESOLVED") for m in sinks.mails()),
        "resolved e-mail",
        alerter,
    )
    assert [a["alert_id"] for a in alerter.get("/alerts", status="resolved")] == ["A1"]
    assert [a["alert_id"] for a in alerter.get("/alerts", status="firing", severity="LOW")] == ["B1"]
    assert alerter.metric("alerter_open_alerts", severity="CRITICAL") == 0
    assert alerter.metric("alerter_open_alerts", severity="LOW") == 1


def test_unacknowledged_alert_escalates_and_ack_stops_escalation(
    start_alerter: Callable[..., Alerter], publish: Callable[..., dict[str, Any]], sinks: AlertSinks
) -> None:
    alerter = start_alerter()
    publish("Model degraded", key="deg", alert_id="A")
    publish("Latency high", key="lat", alert_id="B")
    wait(lambda: alerter.alert("A") and alerter.alert("B"), "both alerts", alerter)
    acked = alerter.post("/alerts/B/ack", json={"by": "ana", "comment": "on it"})
    assert acked.status_code == 200
    assert acked.json()["changed"] and acked.json()["persisted"]

    # A: nobody acknowledged it -> level 1 (slack)
    wait(
        lambda: any(t.endswith("ESCALATION 1: Model degraded") for t in slack_texts(sinks)),
        "level 1",
        alerter,
    )
    assert alerter.post("/alerts/A/ack", json={"by": "bob"}).status_code == 200

    # C opens after both acks; once C has reached level 2, A's and B's deadlines have long passed.
    publish("Disk almost full", key="disk", alert_id="C")
    wait(
        lambda: any("ESCALATION 2: Disk almost full" in m.subject for m in sinks.mails()),
        "C level 2",
        alerter,
    )
    a, b, c = alerter.alert("A"), alerter.alert("B"), alerter.alert("C")
    assert a is not None and b is not None and c is not None
    # Who acknowledged is the caller's key; the name in the body says on whose behalf.
    by_bob = f"{identity(Role.OPERATOR)} (as bob)"
    assert (a["status"], a["escalation_level"], a["acknowledged_by"]) == ("acknowledged", 1, by_bob)
    assert (b["status"], b["escalation_level"], b["ack_comment"]) == ("acknowledged", 0, "on it")
    assert c["escalation_level"] == 2
    assert not any("Latency high" in t and "ESCALATION" in t for t in slack_texts(sinks))
    assert not any("ESCALATION" in m.subject and "Model degraded" in m.subject for m in sinks.mails())
    assert alerter.metric("alerter_escalations_total", level="1") == 2  # A and C
    assert alerter.metric("alerter_escalations_total", level="2") == 1  # C only
    assert alerter.post("/alerts/unknown/ack").status_code == 404


def test_failing_channel_is_retried_with_backoff_counted_and_does_not_block(
    start_alerter: Callable[..., Alerter], publish: Callable[..., dict[str, Any]], sinks: AlertSinks
) -> None:
    routes = "routes:\n  - {name: all, channels: [webhook, slack]}\n"
    alerter = start_alerter(routes)
    sinks.fail("/webhook")  # every request: HTTP 500
    publish("First", alert_id="F1", severity="HIGH")
    publish("Second", alert_id="F2", severity="HIGH")
    # the other channel gets both while the webhook is still being retried
    wait(
        lambda: {"[HIGH] First", "[HIGH] Second"} <= {t.split(" ", 1)[1] for t in slack_texts(sinks)},
        "slack",
        alerter,
    )

    def failed(alert_id: str) -> bool:
        alert = alerter.alert(alert_id)
        return alert is not None and any(
            d["channel"] == "webhook" and d["state"] == "failed" for d in alert["deliveries"]
        )

    wait(lambda: failed("F1") and failed("F2"), "webhook given up", alerter)
    f1 = alerter.alert("F1")
    assert f1 is not None
    webhook = next(d for d in f1["deliveries"] if d["channel"] == "webhook")
    assert webhook["attempts"] == 3 and webhook["error"].startswith("HTTP 500")
    assert next(d for d in f1["deliveries"] if d["channel"] == "slack")["state"] == "delivered"
    attempts = [r.at for r in sinks.requests("/webhook") if r.body.get("alert_id") == "F1"]
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.3 * 0.95  # base backoff
    assert attempts[2] - attempts[1] >= 0.6 * 0.95  # doubled
    assert alerter.metric("alerter_delivery_failures_total", channel="webhook") == 2
    assert alerter.metric("alerter_delivery_retries_total", channel="webhook") == 4
    assert alerter.metric("alerter_delivery_failures_total", channel="slack") == 0

    # a transient failure: one 500, then delivered on the retry
    sinks.fail("/webhook", times=1)
    publish("Third", alert_id="F3", severity="HIGH")
    wait(
        lambda: any(r.status == 200 for r in sinks.requests("/webhook") if r.body.get("alert_id") == "F3"),
        "F3",
        alerter,
    )
    wait(
        lambda: (alerter.alert("F3") or {}).get("deliveries", [{}])[0].get("state") == "delivered",
        "F3 recorded",
        alerter,
    )
    f3 = alerter.alert("F3")
    assert f3 is not None and f3["deliveries"][0]["attempts"] == 2
    assert alerter.metric("alerter_delivery_failures_total", channel="webhook") == 2


def test_alertmanager_webhook_is_published_and_routed(
    start_alerter: Callable[..., Alerter],
    sinks: AlertSinks,
    alerts_topic: str,
    consumer_factory: Callable[..., Any],
    serde: AvroSerde,
) -> None:
    # e-mail left unconfigured: reported as disabled, skipped by the router
    channels = {"ALERTER_WEBHOOK_URL": sinks.webhook_url, "ALERTER_SLACK_WEBHOOK_URL": sinks.slack_url}
    alerter = start_alerter(channels=channels)
    ready = alerter.get("/ready")
    assert "email: disabled: ALERTER_SMTP_HOST" in ready["checks"]["channels"]["detail"]
    assert alerter.get("/channels")["channels"]["email"]["enabled"] is False

    notification: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="PredictorLatencyHigh"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "alerter",
        "groupLabels": {"alertname": "PredictorLatencyHigh"},
        "commonLabels": {"alertname": "PredictorLatencyHigh", "severity": "critical", "job": "predictor"},
        "commonAnnotations": {"summary": "p99 scoring latency above 200 ms"},
        "externalURL": "http://127.0.0.1:9193",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "PredictorLatencyHigh", "severity": "critical", "job": "predictor"},
                "annotations": {"summary": "p99 scoring latency above 200 ms", "description": "p99 = 310 ms"},
                "startsAt": "2025-01-01T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "5ca1ab1e",
            }
        ],
    }
    response = alerter.post("/alertmanager", json=notification)
    assert response.status_code == 200, response.text
    assert response.json()["published"] == 1 and response.json()["routed_directly"] == 0
    alert_id = response.json()["alert_ids"][0]

    wait(lambda: bodies(sinks, "/webhook", alert_id), "webhook delivery", alerter)
    wait(lambda: any("p99 scoring latency" in t for t in slack_texts(sinks)), "slack delivery", alerter)
    delivered = bodies(sinks, "/webhook", alert_id)[0]
    assert delivered["severity"] == "CRITICAL" and delivered["source"] == "alertmanager"
    assert delivered["message"] == "p99 = 310 ms" and delivered["dedup_key"] == "alertmanager:5ca1ab1e"

    # it went through the alerts topic like every other alert
    records = consume(consumer_factory(alerts_topic), 1)
    value = serde.decode(alerts_topic, records[0].value(), schema_topic=Topic.SYSTEM_ALERTS)
    assert value["alert_id"] == alert_id and value["labels"]["origin"] == "alertmanager"

    # Alertmanager repeating the notification: a duplicate; its resolution closes the alert
    assert alerter.post("/alertmanager", json=notification).status_code == 200
    resolved = {
        **notification,
        "status": "resolved",
        "alerts": [{**notification["alerts"][0], "status": "resolved"}],
    }
    assert alerter.post("/alertmanager", json=resolved).status_code == 200
    wait(lambda: bodies(sinks, "/webhook", alert_id, kind="resolved"), "resolved notification", alerter)
    alert = alerter.alert(alert_id)
    assert alert is not None
    assert (alert["status"], alert["occurrences"], alert["duplicates"]) == ("resolved", 2, 1)
    assert len(bodies(sinks, "/webhook", alert_id, kind="notify")) == 1
    email = next(d for d in alert["deliveries"] if d["channel"] == "email")
    assert email["state"] == "skipped"
    assert alerter.metric("alerter_alertmanager_alerts_total", outcome="published") == 3


def test_restart_restores_state_without_resending(
    start_alerter: Callable[..., Alerter], publish: Callable[..., dict[str, Any]], sinks: AlertSinks
) -> None:
    routes = ROUTES.replace("after: 4s", "after: 10m").replace("after: 8s", "after: 20m")
    first = start_alerter(routes)
    publish("Training failed", key="train", alert_id="R1")
    publish("Rollback done", key="rollback", alert_id="R2")
    wait(lambda: len(sinks.mails()) == 2, "both e-mails", first)
    assert first.post("/alerts/R2/ack", json={"by": "ana"}).json()["persisted"]
    wait(lambda: (first.alert("R2") or {}).get("status") == "acknowledged", "ack", first)
    # SIGTERM: graceful (uvicorn re-raises the signal once the shutdown is complete)
    assert first.stop() in (0, -signal.SIGTERM)
    stopped = first.log_path.read_text()
    assert '"alerter_stopped"' in stopped and "Application shutdown complete" in stopped
    sent_before = len(sinks.requests()) + len(sinks.mails())

    second = start_alerter(routes)  # same topic, same consumer group
    r1 = second.alert("R1")
    assert r1 is not None
    assert r1["status"] == "firing" and {d["state"] for d in r1["deliveries"]} == {"replayed"}
    by_ana = f"{identity(Role.OPERATOR)} (as ana)"
    wait(lambda: (second.alert("R2") or {}).get("acknowledged_by") == by_ana, "the ack, replayed", second)

    publish("Training failed", key="train", alert_id="R1-again")  # inside the cooldown
    publish("Something new", key="new", alert_id="R3", severity="LOW")
    wait(lambda: bodies(sinks, "/webhook", "R3"), "the new alert", second)
    r1 = second.alert("R1")
    assert r1 is not None and (r1["occurrences"], r1["duplicates"]) == (2, 1)
    assert len(sinks.requests()) + len(sinks.mails()) == sent_before + 1  # only R3 went out


def test_sigkill_mid_delivery_resumes_it_and_never_resends_a_confirmed_one(
    start_alerter: Callable[..., Alerter],
    publish: Callable[..., dict[str, Any]],
    sinks: AlertSinks,
    consumer_factory: Callable[..., Consumer],
) -> None:
    routes = "defaults: {cooldown: 10m}\nroutes:\n  - name: all\n    channels: [webhook]\n"
    first = start_alerter(routes, channels={"ALERTER_WEBHOOK_URL": sinks.webhook_url})
    journal_topic = first.service.env["ALERTER_JOURNAL_TOPIC"]
    confirmed_id, inflight_id = "J1/webhook/notify-1", "J2/webhook/notify-1"

    publish("Disk almost full", key="disk", alert_id="J1", severity="HIGH")
    wait(lambda: by_delivery_id(sinks, "/webhook").get(confirmed_id) == [200], "the first delivery", first)
    # Confirmed means: its done record is in the journal (written right after the 200).
    reader = JournalReader(consumer_factory(journal_topic))
    done = reader.until(lambda states: states.get(confirmed_id) == "done")
    assert done.get(confirmed_id) == "done", done

    sinks.hold("/webhook")  # the receiver hangs: the next delivery never gets its answer
    publish("Queue backing up", key="queue", alert_id="J2", severity="HIGH")
    wait(lambda: by_delivery_id(sinks, "/webhook").get(inflight_id) == [0], "the held delivery", first)
    first.service.kill()  # SIGKILL mid-delivery: no done record, no graceful drain
    sinks.release("/webhook")
    pending = reader.until(lambda states: inflight_id in states)
    assert pending.get(inflight_id) == "pending", pending

    first.service.restart()
    first.service.wait_for("/ready", timeout_s=90)
    wait(lambda: 200 in by_delivery_id(sinks, "/webhook").get(inflight_id, []), "the resumed delivery", first)
    assert first.metric("alerter_deliveries_resumed_total", channel="webhook") == 1
    wait(lambda: first.metric("alerter_journal_pending") == 0, "an empty journal backlog", first)
    j2 = first.alert("J2")
    assert j2 is not None and [d["state"] for d in j2["deliveries"]] == ["delivered"]
    final = reader.until(lambda states: states.get(inflight_id) == "done")
    assert final.get(inflight_id) == "done", final

    # Give a wrong resend every chance to show, then count by delivery id at the receiver.
    publish("Something new", key="new", alert_id="J3", severity="HIGH")
    wait(lambda: by_delivery_id(sinks, "/webhook").get("J3/webhook/notify-1") == [200], "a new alert", first)
    seen = by_delivery_id(sinks, "/webhook")
    assert seen[confirmed_id] == [200]  # confirmed before the kill: never sent again
    assert seen[inflight_id] == [0, 200]  # interrupted, then completed once, with the same key
    keys = {
        r.headers.get("Idempotency-Key") for r in sinks.requests("/webhook") if r.body.get("alert_id") == "J2"
    }
    assert keys == {inflight_id}
    assert set(seen) == {confirmed_id, inflight_id, "J3/webhook/notify-1"}


class JournalReader:
    """Follows the alerter's journal topic: the latest state per delivery id (tombstones remove)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.states: dict[str, str] = {}

    def until(self, done: Callable[[dict[str, str]], bool], timeout_s: float = 30) -> dict[str, str]:
        """Read on until ``done(states)`` holds or the deadline passes; returns the states."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(self.states):
            for msg in consume(self.consumer, 100, timeout_s=1):
                key = (msg.key() or b"").decode()
                value = msg.value()
                if value is None:
                    self.states.pop(key, None)
                else:
                    self.states[key] = json.loads(value)["state"]
        return self.states
