"""Ingest's publishers (the platform's front-door publishers as ingest builds them), scripted.

The transaction protocol of the pool ingest configures (its transactional ids, its publish
timeout), and the best-effort quality events whose loss ingest counts by reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY

import mlops_platform.kafka.publisher as platform_publisher
from ingest.config import Settings
from ingest.service import build_publisher
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.kafka import AcknowledgedPublisher, Encoded, EventProducer, Output, TransactionalPublisher


class FakeRaw:
    """Records the transactional calls; failures are scripted per call name."""

    def __init__(self, log: list[str], failures: dict[str, list[Any]]) -> None:
        self.log = log
        self.failures = failures
        self.pending: list[Callable[[], None]] = []
        self.unacknowledged = 0
        self.hold_commit: threading.Event | None = None

    def _call(self, name: str) -> None:
        self.log.append(name)
        scripted = self.failures.get(name)
        if scripted:
            error = scripted.pop(0)
            if error is not None:
                raise error

    def init_transactions(self, _timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def flush(self, _timeout: float) -> int:
        self._call("flush")
        for deliver in self.pending:
            deliver()
        self.pending.clear()
        return self.unacknowledged

    def commit_transaction(self, _timeout: float) -> None:
        if self.hold_commit is not None:
            self.hold_commit.wait(5)
        self._call("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self._call("abort")

    def purge(self) -> None:
        self._call("purge")


class FakeEventProducer:
    def __init__(
        self, log: list[str], failures: dict[str, list[Any]], delivery_error: KafkaError | None
    ) -> None:
        self.raw = FakeRaw(log, failures)
        self.log = log
        self.delivery_error = delivery_error
        self.produced: list[tuple[str, bytes, Any]] = []

    def produce_encoded(self, record: Encoded, on_delivery: Any = None) -> None:
        self.log.append(f"produce {record.topic}")
        self.produced.append((record.topic, record.value, record.key))
        error = self.delivery_error
        self.raw.pending.append(lambda: on_delivery(error, None))


class FakeSerde:
    def __init__(self) -> None:
        self.down = False

    def encode(self, topic: str, value: Any, *, schema_topic: str | None = None) -> bytes:
        if self.down:
            raise SchemaRegistryUnavailable("connection refused")
        if value.get("poison"):
            raise SerializationError("does not fit", topic=topic)
        return repr(value).encode()


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeSideProducer:
    """The runtime's producer: the platform's encoding and best-effort emit over a scripted client."""

    encode = EventProducer.encode
    produce = EventProducer.produce
    emit_best_effort = EventProducer.emit_best_effort

    def __init__(self) -> None:
        self.serde = FakeSerde()
        self.timeout_s = 0.5
        self.delivery_error: KafkaError | None = None
        self.produced: list[Encoded] = []

    def produce_encoded(self, record: Encoded, on_delivery: Any = None) -> None:
        self.produced.append(record)
        if on_delivery is not None:
            on_delivery(self.delivery_error, FakeMessage(record.topic))

    def poll(self, _timeout: float = 0.0) -> int:
        return 0

    def serve_delivery_reports(self) -> None:
        """Delivery reports arrive synchronously in produce_encoded: nothing to serve."""


class Kafka:
    """Scripted world: which calls fail, and what deliveries report."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str] = []
        self.failures: dict[str, list[Any]] = {}
        self.delivery_error: KafkaError | None = None
        self.producers: list[FakeEventProducer] = []
        self.transactional_ids: list[str] = []

        def factory(settings: Any, service: str, serde: Any, *, transactional_id: str, **_: Any) -> Any:
            producer = FakeEventProducer(self.log, self.failures, self.delivery_error)
            self.producers.append(producer)
            self.transactional_ids.append(transactional_id)
            return producer

        monkeypatch.setattr(platform_publisher, "EventProducer", factory)

    def fail(self, call: str, *errors: Any) -> None:
        self.failures.setdefault(call, []).extend(errors)


def kafka_exception(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "scripted", **flags))


BINDINGS = Settings()
EVENTS = [
    Output(BINDINGS.requests, {"transaction_id": "t-1"}),
    Output(BINDINGS.ingested, {"record_type": "transaction"}),
]


_publishers: list[Any] = []


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kafka]:
    yield Kafka(monkeypatch)
    while _publishers:
        _publishers.pop().close()


def make_publisher(**settings: Any) -> TransactionalPublisher:
    # One worker unless a test says otherwise, so the order of calls is deterministic.
    config = Settings(
        instance_id="host-1", publish_timeout_s=0.5, **{"transactional_producers": 1, **settings}
    )
    publisher = build_publisher(config, FakeSerde(), FakeSideProducer())  # type: ignore[arg-type]
    assert isinstance(publisher, TransactionalPublisher)
    _publishers.append(publisher)
    return publisher


def publish(publisher: TransactionalPublisher, events: list[Output] = EVENTS) -> None:
    asyncio.run(publisher.publish(events))


def test_a_request_is_one_committed_transaction(kafka: Kafka) -> None:
    publisher = make_publisher()
    publish(publisher)
    publish(publisher)
    assert kafka.log == [
        "init",
        "begin",
        "produce prediction.request",
        "produce data.ingested",
        "flush",
        "commit",
        "begin",
        "produce prediction.request",
        "produce data.ingested",
        "flush",
        "commit",
    ]
    # The producer is initialised once; its id is stable per instance.
    assert kafka.transactional_ids == ["ingest-host-1-0"]


def test_encoding_failure_produces_nothing(kafka: Kafka) -> None:
    with pytest.raises(SerializationError):
        publish(make_publisher(), [EVENTS[0], Output(BINDINGS.requests, {"poison": True}, "t-2")])
    assert kafka.log == []


def test_refused_record_aborts_the_transaction(kafka: Kafka) -> None:
    kafka.delivery_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    with pytest.raises(PublishError, match="refused 2 of 2 records"):
        publish(make_publisher())
    assert kafka.log[-2:] == ["flush", "abort"]
    assert "commit" not in kafka.log


def test_unacknowledged_records_abort_with_kafka_unavailable(kafka: Kafka) -> None:
    publisher = make_publisher()
    publish(publisher)  # initialise the producer
    kafka.producers[0].raw.unacknowledged = 1
    with pytest.raises(KafkaUnavailable, match="did not acknowledge 1 of 2"):
        publish(publisher)
    assert kafka.log[-2:] == ["flush", "abort"]


def test_retriable_commit_error_is_retried(kafka: Kafka) -> None:
    kafka.fail("commit", kafka_exception(KafkaError._TIMED_OUT, retriable=True))
    publish(make_publisher())
    assert kafka.log[-2:] == ["commit", "commit"]
    assert "abort" not in kafka.log


def test_failed_commit_aborts(kafka: Kafka) -> None:
    kafka.fail("commit", kafka_exception(KafkaError._STATE, txn_requires_abort=True))
    with pytest.raises(KafkaUnavailable, match="transaction failed"):
        publish(make_publisher())
    assert kafka.log[-2:] == ["commit", "abort"]


def test_failed_abort_replaces_the_producer(kafka: Kafka) -> None:
    publisher = make_publisher()
    kafka.fail("commit", kafka_exception(KafkaError._TIMED_OUT))
    kafka.fail("abort", kafka_exception(KafkaError._TIMED_OUT))
    with pytest.raises(KafkaUnavailable):
        publish(publisher)
    assert kafka.log[-2:] == ["abort", "purge"]
    # The next request builds a new producer with the same id: its init fences the old one.
    publish(publisher)
    assert len(kafka.producers) == 2
    assert kafka.transactional_ids == ["ingest-host-1-0", "ingest-host-1-0"]
    assert kafka.log[-6:] == [
        "init",
        "begin",
        "produce prediction.request",
        "produce data.ingested",
        "flush",
        "commit",
    ]


def test_init_failure_is_kafka_unavailable_and_retried_next_time(kafka: Kafka) -> None:
    kafka.fail("init", kafka_exception(KafkaError._TIMED_OUT, retriable=True))
    publisher = make_publisher()
    with pytest.raises(KafkaUnavailable, match="cannot start a Kafka transaction"):
        publish(publisher)
    publish(publisher)
    assert kafka.log[:3] == ["init", "init", "begin"]
    assert len(kafka.producers) == 1


def test_fatal_init_error_replaces_the_producer(kafka: Kafka) -> None:
    kafka.fail("init", kafka_exception(KafkaError._FENCED, fatal=True))
    publisher = make_publisher()
    with pytest.raises(KafkaUnavailable):
        publish(publisher)
    publish(publisher)
    assert len(kafka.producers) == 2


def test_concurrent_requests_share_a_transaction(kafka: Kafka) -> None:
    publisher = make_publisher()
    publish(publisher)  # initialise the only worker's producer
    hold = threading.Event()
    kafka.producers[0].raw.hold_commit = hold

    async def scenario() -> None:
        first = asyncio.ensure_future(publisher.publish(EVENTS))
        while kafka.log.count("commit") < 1 or kafka.log[-1] != "flush":  # first transaction is committing
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(publisher.publish(EVENTS)) for _ in range(5)]
        while publisher._queue.qsize() < 5:
            await asyncio.sleep(0.01)
        hold.set()
        await asyncio.gather(first, *queued)

    asyncio.run(scenario())
    # Two transactions after the warm-up one: the held request alone, then the five queued together.
    assert kafka.log.count("begin") == 3 and kafka.log.count("commit") == 3
    begins = [i for i, call in enumerate(kafka.log) if call == "begin"]
    assert kafka.log[begins[1] : begins[2]].count("produce prediction.request") == 1
    assert kafka.log[begins[2] :].count("produce prediction.request") == 5


def test_a_failed_group_fails_every_request_in_it(kafka: Kafka) -> None:
    publisher = make_publisher()
    kafka.delivery_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")

    async def scenario() -> list[BaseException | None]:
        results = await asyncio.gather(*(publisher.publish(EVENTS) for _ in range(4)), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, PublishError) for outcome in outcomes)
    assert "commit" not in kafka.log and kafka.log.count("abort") == kafka.log.count("begin")


def test_several_workers_publish_concurrently(kafka: Kafka) -> None:
    publisher = make_publisher(transactional_producers=3)

    async def many() -> None:
        await asyncio.gather(*(publisher.publish(EVENTS) for _ in range(30)))

    asyncio.run(many())
    assert kafka.log.count("produce prediction.request") == 30
    assert kafka.log.count("commit") == kafka.log.count("begin") >= 1
    assert set(kafka.transactional_ids) <= {"ingest-host-1-0", "ingest-host-1-1", "ingest-host-1-2"}


def test_closed_publisher_refuses(kafka: Kafka) -> None:
    publisher = make_publisher()
    publisher.close()
    with pytest.raises(KafkaUnavailable, match="shutting down"):
        publish(publisher)


def test_records_are_keyed_by_their_bindings(kafka: Kafka) -> None:
    publish(make_publisher())
    assert [(topic, key) for topic, _, key in kafka.producers[0].produced] == [
        ("prediction.request", b"t-1"),
        ("data.ingested", b"transaction"),
    ]


# --------------------------------------------------------------------------- best-effort quality events


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("ingest_quality_events_dropped_total", {"reason": reason}) or 0.0


QUALITY = Output(BINDINGS.quality_issues, {"record_type": "transaction"}, "t-1")


@pytest.mark.parametrize("transactional", [True, False])
def test_lost_quality_events_are_counted_by_reason(transactional: bool) -> None:
    side = FakeSideProducer()
    publisher = build_publisher(
        Settings(instance_id="host-1", transactional=transactional, transactional_producers=1),
        side.serde,  # type: ignore[arg-type]
        side,  # type: ignore[arg-type]
    )
    expected = TransactionalPublisher if transactional else AcknowledgedPublisher
    before = {reason: dropped(reason) for reason in ("encode", "kafka", "unavailable")}
    try:
        assert isinstance(publisher, expected)
        publisher.emit([QUALITY, Output(BINDINGS.quality_issues, {"poison": True}, "t-2")])
        side.delivery_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
        publisher.emit([QUALITY])
        side.serde.down = True
        publisher.emit([QUALITY])
    finally:
        publisher.close()

    assert [(r.topic, r.key) for r in side.produced] == [("data.quality.issues", b"t-1")] * 2
    assert {reason: dropped(reason) - count for reason, count in before.items()} == {
        "encode": 1,
        "kafka": 1,
        "unavailable": 1,
    }
