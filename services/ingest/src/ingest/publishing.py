"""Getting a request's events onto Kafka, all of them or none.

Two publishers implement :class:`Publisher`:

- :class:`TransactionalPublisher` (default): every request is published inside a Kafka
  transaction, by a few worker threads that each own a transactional producer (concurrent
  requests share a transaction: group commit). The request is answered only after the
  commit, and a failure aborts the transaction, so ``read_committed`` consumers (every
  consumer of the platform) never see part of a batch.
- :class:`AcknowledgedPublisher` (``INGEST_TRANSACTIONAL=false``): the idempotent
  ``acks=all`` producer of the runtime, awaiting every acknowledgement. Cheaper, but a
  failure in the middle of a request may leave its first records published.

Both encode every event before producing anything, so a record that does not fit its
Avro contract fails the request with nothing written. Failures are raised as the
platform's :class:`KafkaUnavailable`, :class:`PublishError`, :class:`SchemaRegistryUnavailable`
or :class:`SerializationError`.

``emit`` is the best-effort side channel for ``data.quality.issues`` of refused requests:
produced without waiting (a 422 does not depend on Kafka being up), failures counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ingest.config import Settings
from ingest.metrics import QUALITY_EVENTS_DROPPED
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.kafka import EventProducer
from mlops_platform.logs import get_logger
from mlops_platform.serde import AvroSerde
from mlops_platform.service import ServiceRuntime

log = get_logger(__name__)

Encoded = tuple[str, bytes, str | None]


@dataclass(frozen=True)
class Outgoing:
    """One event to publish."""

    topic: str
    value: Mapping[str, Any]
    key: str | None = None
    #: Contract of a topic outside the catalogue (tests publishing catalogue events elsewhere).
    schema_topic: str | None = None


class Publisher(Protocol):
    """How the service gets events onto Kafka."""

    async def publish(self, events: Sequence[Outgoing]) -> None:
        """Publish every event and return once Kafka acknowledged all of them; raise otherwise."""
        ...

    def emit(self, events: Sequence[Outgoing]) -> None:
        """Best effort: enqueue without waiting (blocking only to encode)."""
        ...

    def close(self) -> None: ...


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else None


def emit_best_effort(producer: EventProducer, events: Sequence[Outgoing]) -> None:
    """Produce without waiting; a failure is logged and counted, never raised."""

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            QUALITY_EVENTS_DROPPED.labels("kafka").inc()
            log.warning("quality_event_not_delivered", error=str(err))

    for event in events:
        try:
            producer.produce(
                event.topic, event.value, event.key, on_delivery=delivered, schema_topic=event.schema_topic
            )
        except (SerializationError, SchemaRegistryUnavailable, KafkaException) as exc:
            QUALITY_EVENTS_DROPPED.labels(
                "encode" if isinstance(exc, SerializationError) else "unavailable"
            ).inc()
            log.warning("quality_event_not_published", topic=event.topic, error=str(exc))


# --------------------------------------------------------------------------- transactional


class _TransactionalProducer:
    """One transactional producer, initialised on first use and rebuilt after a fatal error."""

    def __init__(self, settings: Settings, serde: AvroSerde, transactional_id: str) -> None:
        self.settings = settings
        self.serde = serde
        self.transactional_id = transactional_id
        self._producer: EventProducer | None = None
        self._initialised = False

    def _ready(self, timeout_s: float) -> tuple[EventProducer, Producer]:
        if self._producer is None:
            self._producer = EventProducer(
                self.settings,
                self.settings.service_name,
                self.serde,
                transactional_id=self.transactional_id,
                **{"client.id": f"{self.settings.service_name}-{self.transactional_id}", "linger.ms": 0},
            )
            self._initialised = False
        if not self._initialised:
            try:
                # Registers the transactional.id with the coordinator: fences an older
                # producer with the same id and aborts whatever it left open.
                self._producer.raw.init_transactions(timeout_s)
            except KafkaException as exc:
                error = _kafka_error(exc)
                if error is not None and error.fatal():
                    self._discard()
                raise KafkaUnavailable(f"cannot start a Kafka transaction: {error or exc}") from exc
            self._initialised = True
            log.info("transactional_producer_ready", transactional_id=self.transactional_id)
        return self._producer, self._producer.raw

    def run(self, encoded: Sequence[Encoded], timeout_s: float) -> None:
        """Produce ``encoded`` in one transaction and commit it; abort and raise on any failure."""
        try:
            producer, raw = self._ready(timeout_s)
        except KafkaException as exc:  # the client could not even be created (configuration)
            raise KafkaUnavailable(
                f"cannot create a transactional producer: {_kafka_error(exc) or exc}"
            ) from exc
        failures: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        try:
            raw.begin_transaction()
        except KafkaException as exc:
            # Only possible when the producer is in a bad state (e.g. a previous abort failed).
            self._discard()
            raise KafkaUnavailable(f"cannot begin a Kafka transaction: {_kafka_error(exc) or exc}") from exc
        try:
            for topic, data, key in encoded:
                producer.produce_raw(topic, data, key, on_delivery=delivered)
            remaining = raw.flush(timeout_s)
            if remaining:
                raise KafkaUnavailable(
                    f"Kafka did not acknowledge {remaining} of {len(encoded)} records within {timeout_s:g}s"
                )
            if failures:
                raise PublishError(
                    f"Kafka refused {len(failures)} of {len(encoded)} records: {failures[0].str()}"
                )
            self._commit(raw, timeout_s)
        except KafkaException as exc:
            self._abort(raw, timeout_s)
            raise KafkaUnavailable(f"Kafka transaction failed: {_kafka_error(exc) or exc}") from exc
        except BaseException:
            self._abort(raw, timeout_s)
            raise

    @staticmethod
    def _commit(raw: Producer, timeout_s: float) -> None:
        try:
            raw.commit_transaction(timeout_s)
        except KafkaException as exc:
            error = _kafka_error(exc)
            if error is None or not error.retriable():
                raise
            # librdkafka: a retriable commit error (e.g. a timeout) may simply be retried.
            raw.commit_transaction(timeout_s)

    def _abort(self, raw: Producer, timeout_s: float) -> None:
        try:
            raw.abort_transaction(timeout_s)
        except KafkaException as exc:
            # The coordinator is unreachable or the producer is fenced: start afresh. The new
            # producer's init_transactions aborts whatever this one left open.
            log.warning("transaction_abort_failed", transactional_id=self.transactional_id, error=str(exc))
            self._discard()

    def _discard(self) -> None:
        if self._producer is not None:
            try:
                self._producer.raw.purge()
            except KafkaException as exc:
                log.debug("purge_failed", error=str(exc))
        self._producer = None
        self._initialised = False

    def close(self, timeout_s: float) -> None:
        if self._producer is not None:
            self._producer.raw.flush(timeout_s)
            self._producer = None


@dataclass
class _Pending:
    """A request waiting for its transaction."""

    encoded: list[Encoded]
    done: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class TransactionalPublisher:
    """Requests are published in Kafka transactions by a few worker threads (group commit).

    Each worker owns one transactional producer. A free worker takes the oldest waiting
    request *and every request queued behind it* (up to ``MAX_RECORDS_PER_TRANSACTION``
    records) into one transaction: under light load every request gets its own transaction
    at once; under heavy load the commit round trip is shared instead of serialising
    requests behind it. A request is still all-or-nothing, since the transaction holding
    it is; if that transaction fails, every request in it is answered 503.
    """

    #: Records one transaction may gather from queued requests (a larger request runs alone).
    MAX_RECORDS_PER_TRANSACTION: Final = 5000

    def __init__(self, settings: Settings, serde: AvroSerde, side_producer: EventProducer) -> None:
        self.settings = settings
        self.serde = serde
        self.side_producer = side_producer
        self.timeout_s = settings.publish_timeout_s
        self._members = [
            _TransactionalProducer(settings, serde, settings.transactional_id(index))
            for index in range(settings.transactional_producers)
        ]
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()  # orders "enqueue a request" against "enqueue the stop"
        self._workers = [
            threading.Thread(target=self._work, args=(member,), name=f"txn-{index}", daemon=True)
            for index, member in enumerate(self._members)
        ]
        for worker in self._workers:
            worker.start()

    async def publish(self, events: Sequence[Outgoing]) -> None:
        # Encoding may wait on the registry (first use of a subject): off the event loop.
        encoded = await asyncio.to_thread(self._encode, list(events))
        pending = _Pending(encoded)
        with self._lock:
            if self._closed:
                raise KafkaUnavailable("the service is shutting down")
            self._queue.put(pending)
        # Every step of a transaction is bounded by the publish timeout, so this resolves.
        await asyncio.wrap_future(pending.done)

    def _encode(self, events: list[Outgoing]) -> list[Encoded]:
        return [
            (
                event.topic,
                self.serde.encode(event.topic, event.value, schema_topic=event.schema_topic),
                event.key,
            )
            for event in events
        ]

    def _take(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` plus the requests queued behind it; True when shutdown was requested."""
        group, records, stop = [first], len(first.encoded), False
        while records < self.MAX_RECORDS_PER_TRANSACTION:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            group.append(item)
            records += len(item.encoded)
        # A request whose caller went away before its transaction started is skipped;
        # once running it can no longer be cancelled, so its outcome is always settled.
        return [p for p in group if p.done.set_running_or_notify_cancel()], stop

    def _work(self, member: _TransactionalProducer) -> None:
        # A new thread starts with an empty logging context: name the service again.
        structlog.contextvars.bind_contextvars(service=self.settings.service_name)
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            group, stop = self._take(first)
            if not group:
                continue
            try:
                member.run([record for pending in group for record in pending.encoded], self.timeout_s)
            except BaseException as exc:
                for pending in group:
                    pending.done.set_exception(exc)
            else:
                for pending in group:
                    pending.done.set_result(None)
        member.close(self.timeout_s)

    def emit(self, events: Sequence[Outgoing]) -> None:
        emit_best_effort(self.side_producer, events)

    def close(self) -> None:
        """Finish the queued requests, then stop the workers and their producers."""
        with self._lock:
            self._closed = True
            for _ in self._workers:
                self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=self.timeout_s * 4)


# --------------------------------------------------------------------------- idempotent only


class AcknowledgedPublisher:
    """The runtime's idempotent producer: waits for every acknowledgement, no transaction."""

    def __init__(self, runtime: ServiceRuntime, timeout_s: float) -> None:
        self.runtime = runtime
        self.timeout_s = timeout_s

    async def publish(self, events: Sequence[Outgoing]) -> None:
        publisher = self.runtime.publisher
        if publisher is None:
            raise KafkaUnavailable("the Kafka producer is not started")
        if any(event.schema_topic for event in events):
            raise ValueError("AcknowledgedPublisher publishes catalogue topics only")
        items = [(event.topic, event.value, event.key) for event in events]
        try:
            await asyncio.wait_for(publisher.publish_many(items), self.timeout_s)
        except TimeoutError as exc:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge {len(items)} records within {self.timeout_s:g}s"
            ) from exc

    def emit(self, events: Sequence[Outgoing]) -> None:
        emit_best_effort(self.runtime.producer, events)

    def close(self) -> None:
        """The runtime closes its own producer."""
