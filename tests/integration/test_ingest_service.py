"""The ingest service as a process, against the real broker and schema registry.

Each service instance runs as ``python -m ingest`` on a free port. Tests read the real
catalogue topics with consumers assigned to the end offsets before posting, and identify
their own records by fresh ids (other traffic may share the topics).

Counting ("exactly once", "nothing") reads ``read_uncommitted`` up to the high watermark:
it sees every record ever written, aborted ones included, so it is the stricter check, and
its end is reachable even while another producer on the shared topics holds a transaction
open (which stalls ``read_committed`` readers until that transaction ends). Visibility to
the platform's ``read_committed`` consumers is checked separately for accepted records.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Message

from fraud_model.contract import transaction_payload
from fraud_model.generator import TransactionGenerator
from ingest.config import Settings
from ingest.service import build_publisher
from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic, load_catalogue, make_event
from mlops_platform.errors import PublishError
from mlops_platform.kafka import EventProducer, Output, ensure_topics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.processes import ServiceLauncher, ServiceProcess
from tests.support.topics import TopicTail

pytestmark = pytest.mark.integration

CLOSED_PORT = "127.0.0.1:1"


# --------------------------------------------------------------------------- service processes


def start_ingest(launcher: ServiceLauncher, wait_for: str, **env: str) -> ServiceProcess:
    env = {"INGEST_INSTANCE_ID": f"test-{uuid.uuid4().hex[:8]}", **env}
    return launcher.start("ingest", "INGEST_", env, wait_for=wait_for, timeout_s=90)


@pytest.fixture(scope="module")
def provisioned(platform_settings: PlatformSettings, serde: AvroSerde) -> AvroSerde:
    """Catalogue topics exist and every schema is registered (the serde fixture registers them)."""
    ensure_topics(platform_settings, load_catalogue(platform_settings.schemas_dir))
    return serde


@pytest.fixture(scope="module")
def ingest(provisioned: AvroSerde, service_launcher: ServiceLauncher) -> ServiceProcess:
    return start_ingest(service_launcher, "/ready")


@pytest.fixture(scope="module")
def ingest_without_kafka(provisioned: AvroSerde, service_launcher: ServiceLauncher) -> ServiceProcess:
    # A short Kafka timeout keeps its shutdown quick: it gives up sooner on the undeliverable
    # data-quality events of the 422 it answers.
    return start_ingest(
        service_launcher, "/health", KAFKA_BOOTSTRAP_SERVERS=CLOSED_PORT, KAFKA_REQUEST_TIMEOUT_S="1"
    )


@pytest.fixture(scope="module")
def ingest_without_registry(provisioned: AvroSerde, service_launcher: ServiceLauncher) -> ServiceProcess:
    return start_ingest(
        service_launcher, "/health", SCHEMA_REGISTRY_URL=f"http://{CLOSED_PORT}/apis/ccompat/v7"
    )


@pytest.fixture(scope="module")
def ingest_without_transactions(provisioned: AvroSerde, service_launcher: ServiceLauncher) -> ServiceProcess:
    return start_ingest(service_launcher, "/ready", INGEST_TRANSACTIONAL="false")


# --------------------------------------------------------------------------- reading topics


@pytest.fixture
def tail(provisioned: AvroSerde, topic_tail: Callable[..., TopicTail]) -> Callable[..., TopicTail]:
    """Readers at the current end of catalogue topics; ``read_uncommitted`` unless told otherwise."""

    def make(*topics: str, isolation: str = "read_uncommitted") -> TopicTail:
        return topic_tail(topics, isolation=isolation)

    return make


def assert_committed(reader: TopicTail, topic: str, keys: list[str]) -> None:
    """The records are visible to read_committed consumers (their transaction committed)."""
    wanted = set(keys)
    seen = reader.wait_for(lambda r: r.topic == topic and r.key in wanted, len(wanted))
    assert sorted(r.key or "" for r in seen) == sorted(wanted)


def transaction(index: int = 0, **changes: Any) -> dict[str, Any]:
    record = transaction_payload(TransactionGenerator(seed=77).generate(index + 1)[index])
    record.update({"transaction_id": f"it-{uuid.uuid4()}", "country": "US", "home_country": "US"})
    record.update({"currency": "USD", "amount": 42.5, "credit_limit": 5000.0, "amount_avg_30d": 40.0})
    record.update(changes)
    return record


def payload_of(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "envelope"}


# --------------------------------------------------------------------------- accepted


def test_a_transaction_is_published_exactly_once(
    ingest: ServiceProcess, tail: Callable[..., TopicTail]
) -> None:
    reader = tail(Topic.PREDICTION_REQUEST, Topic.DATA_INGESTED, Topic.DATA_QUALITY_ISSUES)
    committed = tail(Topic.PREDICTION_REQUEST, isolation="read_committed")
    record = transaction(event_time="2026-02-03T04:05:06.789Z")

    response = ingest.post("/transactions", record)

    assert response.status_code == 202, response.text
    body = response.json()
    reader.catch_up()
    [published] = reader.records(Topic.PREDICTION_REQUEST, record["transaction_id"])
    envelope = published.value["envelope"]
    assert envelope["event_id"] == body["event_ids"][0]
    assert envelope["source"] == "ingest"
    assert envelope["correlation_id"] == envelope["event_id"] and envelope["causation_id"] is None
    assert envelope["event_time"].isoformat() == "2026-02-03T04:05:06.789000+00:00"
    assert payload_of(published.value) == {k: v for k, v in record.items() if k != "event_time"}
    [summary] = [r for r in reader.records(Topic.DATA_INGESTED) if r.value["batch_id"] == body["batch_id"]]
    assert summary.value["event_ids"] == body["event_ids"]
    assert (summary.value["record_type"], summary.value["target_topic"], summary.value["record_count"]) == (
        "transaction",
        "prediction.request",
        1,
    )
    assert not [
        r
        for r in reader.records(Topic.DATA_QUALITY_ISSUES)
        if r.value["record_id"] == record["transaction_id"]
    ]
    assert_committed(committed, Topic.PREDICTION_REQUEST, [record["transaction_id"]])


def test_a_batch_lands_completely(ingest: ServiceProcess, tail: Callable[..., TopicTail]) -> None:
    reader = tail(Topic.PREDICTION_REQUEST, Topic.DATA_INGESTED)
    committed = tail(Topic.PREDICTION_REQUEST, isolation="read_committed")
    records = [transaction(i) for i in range(50)]
    del records[7]["transaction_id"]  # the server assigns this one

    response = ingest.post("/transactions/batch", {"transactions": records})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["count"] == 50 and len(set(body["event_ids"])) == 50
    assert body["transaction_ids"][0] == records[0]["transaction_id"]
    reader.catch_up()
    for transaction_id, event_id in zip(body["transaction_ids"], body["event_ids"], strict=True):
        [published] = reader.records(Topic.PREDICTION_REQUEST, transaction_id)
        assert published.value["envelope"]["event_id"] == event_id
    [summary] = [r for r in reader.records(Topic.DATA_INGESTED) if r.value["batch_id"] == body["batch_id"]]
    assert summary.value["record_count"] == 50 and summary.value["event_ids"] == body["event_ids"]
    assert_committed(committed, Topic.PREDICTION_REQUEST, body["transaction_ids"])


def test_suspicious_values_are_published_with_a_warning(
    ingest: ServiceProcess, tail: Callable[..., TopicTail]
) -> None:
    reader = tail(Topic.PREDICTION_REQUEST, Topic.DATA_QUALITY_ISSUES)
    record = transaction(amount=9000.0, credit_limit=1000.0, amount_avg_30d=1000.0)

    response = ingest.post("/transactions", record)

    assert response.status_code == 202, response.text
    [warning] = response.json()["warnings"]
    assert (warning["field"], warning["issue_type"]) == ("amount", "out_of_range")
    reader.catch_up()
    [published] = reader.records(Topic.PREDICTION_REQUEST, record["transaction_id"])
    [issue] = [
        r
        for r in reader.records(Topic.DATA_QUALITY_ISSUES)
        if r.value["record_id"] == record["transaction_id"]
    ]
    assert issue.value["rejected"] is False and issue.value["field"] == "amount"
    assert issue.value["envelope"]["causation_id"] == published.value["envelope"]["event_id"]


@pytest.mark.parametrize(
    ("path", "body", "topic", "key_field"),
    [
        (
            "/feedback/labels",
            {"is_fraud": True, "label_source": "chargeback"},
            Topic.PREDICTION_FEEDBACK,
            "transaction_id",
        ),
        (
            "/interactions",
            {"item_id": "item-1", "interaction_type": "rating", "rating": 4.0, "context": {"page": "home"}},
            Topic.BUSINESS_USER_INTERACTION,
            "user_id",
        ),
        (
            "/clicks",
            {"item_id": "item-2", "recommendation_id": "rec-1", "strategy": "popular", "position": 1},
            Topic.BUSINESS_RECOMMENDATION_CLICKED,
            "user_id",
        ),
        (
            "/feedback",
            {"feedback_type": "thumbs_up", "item_id": "item-3"},
            Topic.BUSINESS_FEEDBACK_RECEIVED,
            "user_id",
        ),
    ],
)
def test_other_records_are_published(
    ingest: ServiceProcess,
    tail: Callable[..., TopicTail],
    path: str,
    body: dict[str, Any],
    topic: str,
    key_field: str,
) -> None:
    reader = tail(topic)
    key = f"it-{uuid.uuid4()}"
    response = ingest.post(path, {**body, key_field: key})
    assert response.status_code == 202, response.text
    reader.catch_up()
    [published] = reader.records(topic, key)
    assert published.value["envelope"]["event_id"] == response.json()["event_ids"][0]
    assert payload_of(published.value)[key_field] == key
    for name, value in body.items():
        assert published.value[name] == value


def test_without_transactions_a_batch_is_still_published_once(
    ingest_without_transactions: ServiceProcess, tail: Callable[..., TopicTail]
) -> None:
    reader = tail(Topic.PREDICTION_REQUEST, Topic.DATA_INGESTED)
    records = [transaction(i) for i in range(10)]
    response = ingest_without_transactions.post("/transactions/batch", {"transactions": records})
    assert response.status_code == 202, response.text
    body = response.json()
    reader.catch_up()
    for record, event_id in zip(records, body["event_ids"], strict=True):
        [published] = reader.records(Topic.PREDICTION_REQUEST, record["transaction_id"])
        assert published.value["envelope"]["event_id"] == event_id
    assert [r.value["batch_id"] for r in reader.records(Topic.DATA_INGESTED)].count(body["batch_id"]) == 1


# --------------------------------------------------------------------------- refused


def test_invalid_input_is_refused_and_reported(
    ingest: ServiceProcess, tail: Callable[..., TopicTail]
) -> None:
    reader = tail(Topic.PREDICTION_REQUEST, Topic.DATA_QUALITY_ISSUES)
    record = transaction(amount=-10.0, hour_of_day=31)
    del record["merchant_category"]

    response = ingest.post("/transactions", record)

    assert response.status_code == 422
    reasons = {tuple(d["loc"]): d["msg"] for d in response.json()["detail"]}
    assert reasons[("body", "amount")] == "Input should be greater than or equal to 0.01"
    assert reasons[("body", "hour_of_day")] == "Input should be less than or equal to 23"
    assert reasons[("body", "merchant_category")] == "Field required"
    # One data-quality event per problem (published without waiting, so poll for them)...
    issues = reader.wait_for(
        lambda r: r.topic == Topic.DATA_QUALITY_ISSUES and r.value["record_id"] == record["transaction_id"], 3
    )
    assert {(i.value["field"], i.value["issue_type"], i.value["rejected"]) for i in issues} == {
        ("amount", "out_of_range", True),
        ("hour_of_day", "out_of_range", True),
        ("merchant_category", "missing_field", True),
    }
    # ...and nothing on prediction.request.
    reader.catch_up()
    assert reader.records(Topic.PREDICTION_REQUEST, record["transaction_id"]) == []


def test_a_batch_with_one_bad_record_publishes_nothing(
    ingest: ServiceProcess, tail: Callable[..., TopicTail]
) -> None:
    reader = tail(Topic.PREDICTION_REQUEST)
    records = [transaction(i) for i in range(3)]
    records[2]["channel"] = "carrier_pigeon"
    response = ingest.post("/transactions/batch", {"transactions": records})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "transactions", 2, "channel"]
    assert "expected one of: pos, online, atm, mobile_app" in error["msg"]
    reader.catch_up()
    assert not [
        r for r in reader.records(Topic.PREDICTION_REQUEST) if r.key in {t["transaction_id"] for t in records}
    ]


# --------------------------------------------------------------------------- unavailable


def test_kafka_unreachable_answers_503(ingest_without_kafka: ServiceProcess) -> None:
    response = ingest_without_kafka.post("/transactions", transaction())
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"Kafka unavailable (no metadata from {CLOSED_PORT})")
    assert response.headers["retry-after"]
    batch = ingest_without_kafka.post(
        "/transactions/batch", {"transactions": [transaction(0), transaction(1)]}
    )
    assert batch.status_code == 503
    # Validation does not need Kafka: a bad record is still a 422.
    assert ingest_without_kafka.post("/transactions", transaction(amount=-1.0)).status_code == 422
    ready = ingest_without_kafka.get("/ready", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["kafka"]["ok"] is False


def test_registry_unreachable_answers_503_and_publishes_nothing(
    ingest_without_registry: ServiceProcess, tail: Callable[..., TopicTail]
) -> None:
    reader = tail(Topic.PREDICTION_REQUEST)
    record = transaction()
    response = ingest_without_registry.post("/transactions", record)
    assert response.status_code == 503
    assert "schema registry unavailable" in response.json()["detail"]
    reader.catch_up()
    assert reader.records(Topic.PREDICTION_REQUEST, record["transaction_id"]) == []


# --------------------------------------------------------------------------- transactions


def test_a_failed_transaction_leaves_nothing_visible(
    platform_settings: PlatformSettings,
    provisioned: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    """A record the broker refuses aborts the whole request, including records already written."""
    accepted = topic_factory("ingest-ok")
    # lz4 does not shrink random ids, so a big data.ingested event exceeds this topic's limit.
    refusing = topic_factory("ingest-small", config={"max.message.bytes": "2000"})
    settings = Settings(instance_id=f"test-{uuid.uuid4().hex[:8]}", transactional_producers=1)
    side = EventProducer(settings, "ingest", provisioned)
    publisher = build_publisher(settings, provisioned, side)
    request = make_event("ingest", transaction_payload(TransactionGenerator(seed=3).generate(1)[0]))
    oversized = make_event(
        "ingest",
        {
            "record_type": "transaction",
            "target_topic": "prediction.request",
            "record_count": 400,
            "event_ids": [str(uuid.uuid4()) for _ in range(400)],
            "batch_id": None,
        },
    )
    try:
        with pytest.raises(PublishError, match="too large"):
            asyncio.run(
                publisher.publish(
                    [
                        Output(Binding.to(Topic.PREDICTION_REQUEST, accepted), request, "k"),
                        Output(Binding.to(Topic.DATA_INGESTED, refusing), oversized, "k"),
                    ]
                )
            )
        # The same producer carries on with the next request.
        asyncio.run(
            publisher.publish([Output(Binding.to(Topic.PREDICTION_REQUEST, accepted), request, "after")])
        )
    finally:
        publisher.close()
        side.close()

    def keys(isolation: str) -> list[str | None]:
        consumer = consumer_factory(accepted, isolation=isolation)
        messages: list[Message] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(m.key() == b"after" for m in messages):
            messages += [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
        return [(m.key() or b"").decode() or None for m in messages]

    assert keys("read_committed") == ["after"]
    # The aborted record was written (read_uncommitted sees it) but never became visible.
    assert keys("read_uncommitted") == ["k", "after"]
