"""The HTTP API over the real engine; only publishing to Kafka is replaced by a recorder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alerter.alertmanager import AlertmanagerWebhook, to_alert_payloads
from alerter.app import build_app
from alerter.config import Settings
from alerter.models import ACK_BY_LABEL, ACK_INCIDENT_LABEL, AlertEvent, AlertStatus, Severity
from alerter.routing import RoutingConfig
from alerter.service import AlerterService
from tests.support.keys import KeyedClient, identity

RULES = RoutingConfig.from_dict(
    {
        "routes": [
            {
                "name": "critical",
                "match": {"min_severity": "CRITICAL"},
                "channels": ["slack"],
                "escalation": "p",
            },
            {"name": "default", "channels": ["webhook"]},
        ],
        "escalations": {"p": [{"after": "5m", "channels": ["email"]}]},
    }
)

AM_PAYLOAD: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="HighLatency"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "alerter",
    "groupLabels": {"alertname": "HighLatency"},
    "commonLabels": {"alertname": "HighLatency", "job": "predictor"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighLatency", "severity": "critical", "instance": "p1"},
            "annotations": {"summary": "p99 latency above 200 ms", "description": "p99 is 350 ms"},
            "startsAt": "2025-01-01T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": "c0ffee",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "HighLatency", "severity": "warning", "instance": "p2"},
            "annotations": {"summary": "p99 latency above 200 ms"},
            "startsAt": "2025-01-01T11:00:00Z",
            "endsAt": "2025-01-01T11:30:00Z",
            "fingerprint": "beef",
        },
    ],
}


class RecordingService(AlerterService):
    """The real service with Kafka publishing replaced: records events, fails on demand.

    No delivery journal either (it is a Kafka topic; see test_alerter_journal.py).
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.model_copy(update={"journal_enabled": False}), RULES)
        self.published: list[dict[str, Any]] = []
        self.fail_with: str | None = None

    async def _publish(self, events: list[dict[str, Any]]) -> list[str | None]:
        if self.fail_with is not None:
            return [self.fail_with] * len(events)
        self.published.extend(events)
        return [None] * len(events)


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> RecordingService:
    for name in ("WEBHOOK_URL", "SMTP_HOST", "SMTP_FROM", "SMTP_TO"):
        monkeypatch.delenv(f"ALERTER_{name}", raising=False)
    monkeypatch.setenv("ALERTER_SLACK_WEBHOOK_URL", "http://127.0.0.1:1/slack")
    return RecordingService(Settings(restore_lookback_s=0))


@pytest.fixture
def http(service: RecordingService) -> TestClient:
    # No lifespan: no Kafka loop runs; the tests feed the engine directly.
    return KeyedClient(build_app(service.settings, service=service), "alerter")


def fire(service: AlerterService, alert_id: str, key: str, severity: Severity = Severity.CRITICAL) -> None:
    service.engine.process(
        AlertEvent(
            alert_id=alert_id,
            severity=severity,
            title=f"title {key}",
            message="m",
            dedup_key=key,
            status=AlertStatus.FIRING,
            source="drift-detector",
            event_time=datetime.now(UTC),
            event_id=str(uuid.uuid4()),
            correlation_id="corr-1",
        )
    )


def test_list_and_get_alerts(service: RecordingService, http: TestClient) -> None:
    fire(service, "A", "k1", Severity.CRITICAL)
    fire(service, "B", "k2", Severity.LOW)
    assert [a["alert_id"] for a in http.get("/alerts").json()] == ["B", "A"]
    assert [a["alert_id"] for a in http.get("/alerts", params={"severity": "critical"}).json()] == ["A"]
    assert [a["alert_id"] for a in http.get("/alerts?status=firing,resolved&severity=LOW").json()] == ["B"]
    assert http.get("/alerts", params={"status": "sleeping"}).status_code == 422
    assert http.get("/alerts", params={"severity": "SEVERE"}).status_code == 422
    # Found by the OpenAPI fuzzing: these 422 bodies are shaped as documented (HTTPValidationError).
    [error] = http.get("/alerts", params={"status": "sleeping"}).json()["detail"]
    assert error["loc"] == ["query", "status"] and "unknown status" in error["msg"]
    [error] = http.get("/alerts", params={"severity": "SEVERE"}).json()["detail"]
    assert error["loc"] == ["query", "severity"]
    alert = http.get("/alerts/A").json()
    assert alert["status"] == "firing" and alert["channels"] == ["slack"]
    assert alert["deliveries"][0]["channel"] == "slack"
    assert http.get("/alerts/nope").status_code == 404


def test_ack_stops_escalation_and_is_recorded_on_the_topic(
    service: RecordingService, http: TestClient
) -> None:
    fire(service, "A", "k1")
    first = service.engine.get("A")
    assert first is not None and first["next_escalation_at"] is not None
    response = http.post("/alerts/A/ack", json={"by": "ana", "comment": "looking"})
    assert response.status_code == 200
    body = response.json()
    assert body["changed"] is True and body["persisted"] is True
    assert body["alert"]["status"] == "acknowledged" and body["alert"]["next_escalation_at"] is None
    [event] = service.published
    assert event["status"] == "acknowledged"
    # Who acknowledged is the caller's key; a name in the body only says on whose behalf.
    by = f"{identity('operator')} (as ana)"
    assert event["labels"] == {ACK_INCIDENT_LABEL: "A", ACK_BY_LABEL: by}
    assert body["alert"]["acknowledged_by"] == by
    assert event["dedup_key"] == "k1"
    assert event["envelope"]["correlation_id"] == "corr-1"
    assert event["envelope"]["causation_id"] == first["event_id"]
    again = http.post("/alerts/A/ack").json()
    assert again["changed"] is False and len(service.published) == 1


def test_ack_without_a_name_is_the_callers_identity(service: RecordingService, http: TestClient) -> None:
    fire(service, "A", "k1")
    body = http.post("/alerts/A/ack").json()
    assert body["alert"]["acknowledged_by"] == identity("operator")
    assert service.published[0]["labels"][ACK_BY_LABEL] == identity("operator")


def test_ack_when_kafka_is_down_still_acknowledges(service: RecordingService, http: TestClient) -> None:
    fire(service, "A", "k1")
    service.fail_with = "broker down"
    body = http.post("/alerts/A/ack", json={"by": "ana"}).json()
    assert body["alert"]["status"] == "acknowledged" and body["persisted"] is False


def test_ack_errors(service: RecordingService, http: TestClient) -> None:
    assert http.post("/alerts/nope/ack").status_code == 404
    fire(service, "A", "k1")
    service.engine.process(
        AlertEvent(
            alert_id="A",
            severity=Severity.CRITICAL,
            title="t",
            message="m",
            dedup_key="k1",
            status=AlertStatus.RESOLVED,
            source="s",
            event_time=datetime.now(UTC),
        )
    )
    assert http.post("/alerts/A/ack").status_code == 409


def test_alertmanager_alerts_are_published_to_the_alerts_topic(
    service: RecordingService, http: TestClient
) -> None:
    response = http.post("/alertmanager", json=AM_PAYLOAD)
    assert response.status_code == 200
    body = response.json()
    assert (body["received"], body["published"], body["routed_directly"], body["failed"]) == (2, 2, 0, 0)
    firing, resolved = service.published
    assert firing["severity"] == "CRITICAL" and firing["status"] == "firing"
    assert firing["title"] == "p99 latency above 200 ms" and firing["message"] == "p99 is 350 ms"
    assert firing["dedup_key"] == "alertmanager:c0ffee"
    assert firing["labels"]["source"] == "alertmanager" and firing["labels"]["job"] == "predictor"
    assert firing["envelope"]["source"] == "alerter"
    assert resolved["status"] == "resolved" and resolved["severity"] == "MEDIUM"
    # nothing is routed before the record comes back from the topic: no double delivery
    assert service.engine.query() == []


def test_alertmanager_alerts_are_routed_directly_when_kafka_refuses_them(
    service: RecordingService, http: TestClient
) -> None:
    service.fail_with = "broker down"
    body = http.post("/alertmanager", json=AM_PAYLOAD).json()
    assert (body["published"], body["routed_directly"]) == (0, 2)
    [alert] = service.engine.query()
    assert alert["dedup_key"] == "alertmanager:c0ffee" and alert["severity"] == "CRITICAL"


def test_alertmanager_gets_a_503_to_retry_when_direct_routing_is_off(service: RecordingService) -> None:
    settings = service.settings.model_copy(update={"alertmanager_direct_fallback": False})
    strict = RecordingService(settings)
    strict.fail_with = "broker down"
    response = KeyedClient(build_app(settings, service=strict), "alerter").post(
        "/alertmanager", json=AM_PAYLOAD
    )
    assert response.status_code == 503 and response.json()["failed"] == 2


def test_channels_and_routing_views(http: TestClient) -> None:
    channels = http.get("/channels").json()["channels"]
    assert channels["slack"]["enabled"] is True
    assert channels["webhook"] == {"enabled": False, "detail": "disabled: ALERTER_WEBHOOK_URL is not set"}
    routing = http.get("/routing").json()
    assert [r["name"] for r in routing["routes"]] == ["critical", "default"]


def test_channels_readiness_check(service: RecordingService) -> None:
    assert service.channels_check().ok
    assert "webhook: disabled" in service.channels_check().detail
    strict = RecordingService(
        service.settings.model_copy(update={"require_channel": True, "slack_webhook_url": None})
    )
    assert not strict.channels_check().ok


def test_alertmanager_payload_without_fingerprint_has_a_stable_key() -> None:
    payload = {**AM_PAYLOAD, "alerts": [{**AM_PAYLOAD["alerts"][0], "fingerprint": None}]}
    first = to_alert_payloads(AlertmanagerWebhook.model_validate(payload))[0]
    second = to_alert_payloads(AlertmanagerWebhook.model_validate(payload))[0]
    assert first["dedup_key"] == second["dedup_key"] != "alertmanager:c0ffee"
    assert first["alert_id"] != second["alert_id"]
    assert first["labels"]["generator_url"].startswith("http://prometheus")


def test_openapi_documents_the_endpoints(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/alerts", "/alerts/{alert_id}", "/alerts/{alert_id}/ack", "/alertmanager"} <= set(paths)
    assert paths["/alerts/{alert_id}/ack"]["post"]["summary"]
