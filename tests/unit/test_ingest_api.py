"""The ingest HTTP API with a fake publisher: status codes, events, metrics, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from fraud_model.contract import transaction_payload
from fraud_model.generator import TransactionGenerator
from ingest.app import build_app
from ingest.config import Settings
from ingest.service import IngestService
from mlops_platform.bindings import Binding
from mlops_platform.contracts import load_catalogue
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.health import CheckResult
from mlops_platform.kafka import Output
from tests.support.keys import KeyedClient


@dataclass(frozen=True)
class Outgoing:
    """An output as the producer would write it: the topic and key its binding resolves to."""

    topic: str
    value: Mapping[str, Any]
    key: str | bytes | None

    @classmethod
    def of(cls, output: Output) -> Outgoing:
        target = output.target
        if isinstance(target, Binding):
            key = target.key_of(output.value) if output.key is None else output.key
            return cls(target.topic, output.value, key)
        return cls(str(target), output.value, output.key)


@dataclass
class FakePublisher:
    published: list[list[Outgoing]] = field(default_factory=list)
    emitted: list[Outgoing] = field(default_factory=list)
    fail: Exception | None = None

    async def publish(self, outputs: Sequence[Output]) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append([Outgoing.of(o) for o in outputs])

    def emit(self, outputs: Sequence[Output]) -> None:
        self.emitted.extend(Outgoing.of(o) for o in outputs)

    def close(self) -> None:
        pass

    def events(self, topic: str) -> list[Outgoing]:
        return [e for batch in self.published for e in batch if e.topic == topic]


@dataclass
class Harness:
    client: TestClient
    publisher: FakePublisher
    service: IngestService
    health: dict[str, CheckResult]


@pytest.fixture
def harness() -> Iterator[Harness]:
    health = {"kafka": CheckResult(True, "ok"), "schema_registry": CheckResult(True, "ok")}
    publisher = FakePublisher()
    settings = Settings(max_batch_size=5, max_quality_events=4, log_format="console")
    checks = {name: (lambda name=name: health[name]) for name in health}
    service = IngestService(settings, publisher=publisher, checks=checks)
    with KeyedClient(build_app(settings, service=service), "ingest") as client:
        yield Harness(client, publisher, service, health)


def drained(h: Harness) -> list[Outgoing]:
    h.client.portal.call(h.service.ingestor.drain)  # type: ignore[union-attr]
    return h.publisher.emitted


def txn(index: int = 0, **changes: Any) -> dict[str, Any]:
    record = transaction_payload(TransactionGenerator(seed=31).generate(index + 1)[index])
    record.update({"country": "US", "home_country": "US", "currency": "USD", "amount": 25.0})
    record.update({"amount_avg_30d": 30.0, "credit_limit": 1000.0, **changes})
    return record


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


_CATALOGUE = load_catalogue(Settings().schemas_dir)


def assert_fits_contract(event: Outgoing) -> None:
    schema = fastavro.parse_schema(_CATALOGUE.value_schema(event.topic))
    fastavro.validation.validate(dict(event.value), schema, raise_errors=True)


# --------------------------------------------------------------------------- accepted


def test_transaction_is_published_with_its_summary(harness: Harness) -> None:
    record = txn(transaction_id="txn-0001", event_time="2026-01-02T03:04:05Z")
    before = metric("ingest_records_published_total", record_type="transaction")

    response = harness.client.post("/transactions", json=record)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["record_type"] == "transaction" and body["topic"] == "prediction.request"
    assert body["transaction_ids"] == ["txn-0001"] and body["count"] == 1 and body["warnings"] == []
    [batch] = harness.publisher.published
    request, summary = batch
    assert (request.topic, request.key) == ("prediction.request", "txn-0001")
    assert request.value["envelope"]["event_id"] == body["event_ids"][0]
    assert request.value["envelope"]["source"] == "ingest"
    assert request.value["envelope"]["event_time"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # The payload is the record itself; event_time moved into the envelope.
    assert {k: v for k, v in request.value.items() if k != "envelope"} == {
        k: v for k, v in record.items() if k != "event_time"
    }
    assert summary.topic == "data.ingested"
    assert summary.value["event_ids"] == body["event_ids"]
    assert summary.value["batch_id"] == body["batch_id"]
    assert (summary.value["record_type"], summary.value["target_topic"], summary.value["record_count"]) == (
        "transaction",
        "prediction.request",
        1,
    )
    for event in batch:
        assert_fits_contract(event)
    assert metric("ingest_records_published_total", record_type="transaction") == before + 1
    assert metric("ingest_requests_total", endpoint="/transactions", method="POST", status="202") >= 1


def test_server_assigns_missing_transaction_ids(harness: Harness) -> None:
    record = txn()
    del record["transaction_id"]
    response = harness.client.post("/transactions", json=record)
    assert response.status_code == 202
    [assigned] = response.json()["transaction_ids"]
    [event] = harness.publisher.events("prediction.request")
    assert event.key == assigned == event.value["transaction_id"]
    assert len(assigned) == 36  # a UUID
    # Without a client time the event time is the time of receipt.
    assert abs((event.value["envelope"]["event_time"] - datetime.now(UTC)).total_seconds()) < 60


def test_batch_is_one_publish_in_request_order(harness: Harness) -> None:
    records = [txn(i, transaction_id=f"b-{i}") for i in range(5)]
    response = harness.client.post("/transactions/batch", json={"transactions": records})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["count"] == 5 and body["transaction_ids"] == [f"b-{i}" for i in range(5)]
    [batch] = harness.publisher.published
    requests = [e for e in batch if e.topic == "prediction.request"]
    assert [e.key for e in requests] == body["transaction_ids"]
    assert [e.value["envelope"]["event_id"] for e in requests] == body["event_ids"]
    assert len(set(body["event_ids"])) == 5
    [summary] = [e for e in batch if e.topic == "data.ingested"]
    assert summary.value["record_count"] == 5 and summary.value["event_ids"] == body["event_ids"]


def test_suspicious_values_are_accepted_with_warnings(harness: Harness) -> None:
    record = txn(transaction_id="warn-1", amount=5000.0, country="XK")
    response = harness.client.post("/transactions", json=record)
    assert response.status_code == 202, response.text
    warnings = response.json()["warnings"]
    assert {(w["field"], w["issue_type"]) for w in warnings} == {
        ("amount", "out_of_range"),
        ("country", "invalid_value"),
    }
    [batch] = harness.publisher.published
    issues = [e for e in batch if e.topic == "data.quality.issues"]
    request = next(e for e in batch if e.topic == "prediction.request")
    # Published together with the record, linked to it, marked as not rejected.
    assert len(issues) == len(warnings) == 3  # above the limit and above 50x the average, unknown country
    for issue in issues:
        assert issue.value["rejected"] is False and issue.value["record_id"] == "warn-1"
        assert issue.value["envelope"]["causation_id"] == request.value["envelope"]["event_id"]
        assert_fits_contract(issue)
    assert harness.publisher.emitted == []


@pytest.mark.parametrize(
    ("path", "payload", "topic", "key"),
    [
        (
            "/interactions",
            {"user_id": "u1", "item_id": "i1", "interaction_type": "view"},
            "business.user.interaction",
            "u1",
        ),
        (
            "/interactions",
            {
                "user_id": "u2",
                "item_id": "i9",
                "interaction_type": "rating",
                "rating": 5.0,
                "context": {"page": "home"},
            },
            "business.user.interaction",
            "u2",
        ),
        (
            "/clicks",
            {
                "user_id": "u3",
                "item_id": "i2",
                "recommendation_id": "r1",
                "strategy": "popular",
                "position": 2,
            },
            "business.recommendation.clicked",
            "u3",
        ),
        (
            "/feedback/labels",
            {"transaction_id": "txn-0001", "is_fraud": True, "label_source": "chargeback"},
            "prediction.feedback",
            "txn-0001",
        ),
        (
            "/feedback",
            {"user_id": "u4", "feedback_type": "comment", "comment": "great picks"},
            "business.feedback.received",
            "u4",
        ),
    ],
)
def test_other_records(harness: Harness, path: str, payload: dict[str, Any], topic: str, key: str) -> None:
    response = harness.client.post(path, json=payload)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["topic"] == topic
    [event] = harness.publisher.events(topic)
    assert event.key == key
    assert event.value["envelope"]["event_id"] == body["event_ids"][0]
    for batch in harness.publisher.published:
        for published in batch:
            assert_fits_contract(published)
    if path == "/feedback/labels":
        assert body["transaction_ids"] == ["txn-0001"]


# --------------------------------------------------------------------------- refused


def test_invalid_transaction_gets_422_and_quality_events(harness: Harness) -> None:
    record = txn(transaction_id="bad-1", amount=-3.0, merchant_category="casino")
    del record["channel"]
    before = metric("ingest_records_rejected_total", record_type="transaction", reason="out_of_range")

    response = harness.client.post("/transactions", json=record)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(d["loc"]) for d in detail} == {
        ("body", "amount"),
        ("body", "merchant_category"),
        ("body", "channel"),
    }
    assert harness.publisher.published == []
    emitted = drained(harness)
    assert {(e.value["field"], e.value["issue_type"]) for e in emitted} == {
        ("amount", "out_of_range"),
        ("merchant_category", "invalid_value"),
        ("channel", "missing_field"),
    }
    for event in emitted:
        assert event.topic == "data.quality.issues" and event.key == "bad-1"
        assert event.value["rejected"] is True and event.value["record_id"] == "bad-1"
        assert_fits_contract(event)
    assert (
        metric("ingest_records_rejected_total", record_type="transaction", reason="out_of_range")
        == before + 1
    )
    assert metric("ingest_requests_total", endpoint="/transactions", method="POST", status="422") >= 1


def test_one_bad_record_refuses_the_whole_batch(harness: Harness) -> None:
    records = [txn(i, transaction_id=f"c-{i}") for i in range(3)]
    records[1]["hour_of_day"] = 25
    before = metric("ingest_records_rejected_total", record_type="transaction", reason="batch_rejected")
    response = harness.client.post("/transactions/batch", json={"transactions": records})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "transactions", 1, "hour_of_day"]
    assert harness.publisher.published == []
    [issue] = drained(harness)
    assert (issue.value["field"], issue.value["record_id"]) == ("hour_of_day", "c-1")
    assert issue.value["message"].startswith("record 1: ")
    assert (
        metric("ingest_records_rejected_total", record_type="transaction", reason="batch_rejected")
        == before + 2
    )


def test_batch_over_the_limit_is_refused(harness: Harness) -> None:
    records = [txn(i) for i in range(6)]
    response = harness.client.post("/transactions/batch", json={"transactions": records})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "batch_too_large" and "at most 5" in error["msg"]
    assert harness.publisher.published == []
    [issue] = drained(harness)
    assert (issue.value["issue_type"], issue.value["field"]) == ("rejected", "transactions")


def test_an_event_time_before_the_first_utc_instant_is_a_422(harness: Harness) -> None:
    # Found by the OpenAPI fuzzer: it parses, and only its conversion to UTC overflows.
    response = harness.client.post(
        "/interactions",
        json={
            "user_id": "u",
            "item_id": "i",
            "interaction_type": "like",
            "event_time": "0001-01-01T00:00:00+00:01",
        },
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "event_time"] and "outside the years 1 to 9999" in error["msg"]
    assert harness.publisher.published == []


def test_malformed_json_is_a_422(harness: Harness) -> None:
    response = harness.client.post(
        "/transactions", content=b'{"amount": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    [issue] = drained(harness)
    assert (issue.value["field"], issue.value["issue_type"]) == ("body", "invalid_value")


def test_quality_events_per_request_are_capped(harness: Harness) -> None:
    response = harness.client.post("/transactions", json={"transaction_id": "empty"})
    assert response.status_code == 422
    assert len(response.json()["detail"]) == 27  # every required field is reported...
    assert len(drained(harness)) == 4  # ...but only max_quality_events become events


# --------------------------------------------------------------------------- unavailable


def test_dependency_down_is_a_503_before_producing(harness: Harness) -> None:
    harness.health["kafka"] = CheckResult(False, "no metadata from 127.0.0.1:1")
    response = harness.client.post("/transactions", json=txn())
    assert response.status_code == 503
    assert response.json() == {"detail": "Kafka unavailable (no metadata from 127.0.0.1:1)"}
    assert response.headers["retry-after"] == "5"
    assert harness.publisher.published == []


def test_a_registry_outage_does_not_stop_intake(harness: Harness) -> None:
    # Resolved schemas stay with the serde: only a publish that needs the registry fails (503).
    harness.health["schema_registry"] = CheckResult(False, "connection refused")
    response = harness.client.post(
        "/interactions", json={"user_id": "u", "item_id": "i", "interaction_type": "view"}
    )
    assert response.status_code == 202, response.text
    assert harness.publisher.published


def test_invalid_input_is_still_a_422_when_kafka_is_down(harness: Harness) -> None:
    harness.health["kafka"] = CheckResult(False, "down")
    assert harness.client.post("/transactions", json=txn(amount=-1.0)).status_code == 422


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (KafkaUnavailable("no acknowledgement within 10s"), "Kafka did not accept the records"),
        (PublishError("MSG_SIZE_TOO_LARGE"), "MSG_SIZE_TOO_LARGE"),
        (SchemaRegistryUnavailable("registry down"), "schema registry unavailable"),
        (SerializationError("Subject not found", topic="prediction.request"), "event contract unavailable"),
    ],
)
def test_publish_failures_are_503_never_500(harness: Harness, error: Exception, fragment: str) -> None:
    harness.publisher.fail = error
    before = metric("ingest_records_rejected_total", record_type="transaction", reason="unavailable")
    response = harness.client.post("/transactions/batch", json={"transactions": [txn(0), txn(1)]})
    assert response.status_code == 503
    assert fragment in response.json()["detail"]
    assert (
        metric("ingest_records_rejected_total", record_type="transaction", reason="unavailable") == before + 2
    )


# --------------------------------------------------------------------------- docs


def test_openapi_documents_every_endpoint(harness: Harness) -> None:
    spec = harness.client.get("/openapi.json").json()
    expected = {
        "/transactions": "fraud scoring",
        "/transactions/batch": "fraud scoring",
        "/feedback/labels": "fraud scoring",
        "/interactions": "recommendations",
        "/clicks": "recommendations",
        "/feedback": "recommendations",
    }
    for path, tag in expected.items():
        operation = spec["paths"][path]["post"]
        assert operation["tags"] == [tag]
        assert operation["description"]  # the one-line docstring
        assert {"202", "422", "503"} <= set(operation["responses"])
