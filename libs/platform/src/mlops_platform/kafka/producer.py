"""Producing events: the idempotent producer, and the outbox that confirms a unit of work's events.

There is one way to know an event is stored: put it in an :class:`Outbox` (encoded at
once, so a value that breaks its contract fails where it was made) and
:meth:`Outbox.deliver` it, which waits for the broker's acknowledgement of each of its
records. The stream loop confirms a batch's outbox before committing the batch's input
offsets; :meth:`EventProducer.publish` is an outbox of one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mlops_platform.bindings import Binding
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

log = get_logger(__name__)

Headers = list[tuple[str, str | bytes | None]]
Target = Binding | str
DeliveryCallback = Callable[[KafkaError | None, Message], None]


def key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


def kafka_error(exc: KafkaException) -> KafkaError | None:
    """The :class:`KafkaError` inside a :class:`KafkaException`, if there is one."""
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else None


@dataclass(frozen=True)
class Output:
    """An event to produce: where (a binding, or a catalogue topic name), the value, key and headers.

    With a binding and no explicit ``key``, the key is taken from the binding's key field.
    """

    target: Target
    value: Mapping[str, Any]
    key: str | bytes | None = None
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A record ready to produce."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers | None = None


class EventProducer:
    """Producer of Avro events for one service.

    Idempotent with ``acks=all``: retries never duplicate or reorder. With a
    ``transactional_id`` it can also run Kafka transactions.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        service: str,
        serde: AvroSerde,
        *,
        transactional_id: str | None = None,
        **overrides: Any,
    ) -> None:
        config = settings.producer_config(client_id=f"{service}-producer", **overrides)
        if transactional_id:
            config["transactional.id"] = transactional_id
        self.service = service
        self.serde = serde
        self.transactional_id = transactional_id
        self._producer = Producer(config)
        self._metrics = platform_metrics()
        self.timeout_s = settings.request_timeout_s * 6
        self._reports_stop = threading.Event()
        self._reports: threading.Thread | None = None

    @property
    def raw(self) -> Producer:
        """The underlying confluent_kafka Producer."""
        return self._producer

    def encode(
        self,
        target: Target,
        value: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        schema_topic: str | None = None,
    ) -> Encoded:
        """Serialise one event; raises :class:`SerializationError` if it breaks its contract."""
        if isinstance(target, Binding):
            topic, schema_topic = target.topic, target.schema_topic
            if key is None:
                key = target.key_of(value)
        else:
            topic = str(target)
        return Encoded(
            topic, self.serde.encode(topic, value, schema_topic=schema_topic), key_bytes(key), headers
        )

    def produce(
        self,
        target: Target,
        value: Mapping[str, Any],
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        schema_topic: str | None = None,
    ) -> None:
        """Encode and enqueue one event without waiting (best effort unless ``on_delivery`` checks)."""
        self.produce_encoded(
            self.encode(target, value, key=key, headers=headers, schema_topic=schema_topic), on_delivery
        )

    def produce_raw(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Enqueue bytes as they are (replays, dead letters, deliberately malformed input)."""
        self.produce_encoded(Encoded(topic, value, key_bytes(key), headers), on_delivery)

    def produce_encoded(self, record: Encoded, on_delivery: DeliveryCallback | None = None) -> None:
        """Enqueue an encoded record; ``on_delivery`` runs from :meth:`poll` / :meth:`flush`."""
        topic = record.topic

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self._metrics.events_produced.labels(self.service, topic).inc()
            if on_delivery is not None:
                on_delivery(err, msg)

        self._produce(record, delivered)

    def enqueue(self, record: Encoded) -> None:
        """Enqueue an encoded record with no delivery callback and no counting.

        For transactional output, which the commit confirms as a whole: the caller counts
        the records once the transaction committed (a Python callback per record costs
        more than producing it).
        """
        self._produce(record, None)

    def _produce(self, record: Encoded, on_delivery: DeliveryCallback | None) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._producer.poll(0.1)

    def publish(
        self,
        target: Target,
        value: Mapping[str, Any],
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        timeout_s: float | None = None,
        schema_topic: str | None = None,
    ) -> tuple[int, int]:
        """Produce one event and wait for the broker's acknowledgement; returns (partition, offset)."""
        outbox = Outbox(self)
        outbox.emit(target, value, key, headers=headers, schema_topic=schema_topic)
        return outbox.deliver(timeout_s)[0]

    def emit_best_effort(
        self, outputs: Iterable[Output], on_failure: Callable[[str, str], None] | None = None
    ) -> None:
        """Produce without waiting; a failure is logged and passed to ``on_failure(reason, detail)``.

        For side channels whose loss must not fail the caller (e.g. data-quality
        events of a refused request, which must not depend on Kafka being up).
        """

        def report(reason: str, detail: str) -> None:
            log.warning("best_effort_event_lost", reason=reason, error=detail)
            if on_failure is not None:
                on_failure(reason, detail)

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                report("kafka", str(err))

        for output in outputs:
            try:
                self.produce(
                    output.target, output.value, output.key, headers=output.headers, on_delivery=delivered
                )
            except SerializationError as exc:
                report("encode", str(exc))
            except (SchemaRegistryUnavailable, KafkaException) as exc:
                report("unavailable", str(exc))

    def poll(self, timeout_s: float = 0.0) -> int:
        return int(self._producer.poll(timeout_s))

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        return int(self._producer.flush(timeout_s if timeout_s is not None else self.timeout_s))

    def serve_delivery_reports(self) -> None:
        """Serve delivery reports on a background thread until :meth:`close` (idempotent).

        Needed when nothing else polls: best-effort events (heartbeats) and awaitable
        publishing from asyncio code only learn their outcome when someone polls.
        """
        if self._reports is not None:
            return

        def serve() -> None:
            while not self._reports_stop.is_set():
                self._producer.poll(0.1)

        self._reports = threading.Thread(target=serve, name=f"{self.service}-delivery-reports", daemon=True)
        self._reports.start()

    def close(self) -> None:
        """Wait for what is in flight, then stop serving delivery reports."""
        remaining = self.flush()
        if remaining:
            log.warning("producer_closed_with_pending_messages", pending=remaining)
        self._reports_stop.set()
        if self._reports is not None:
            self._reports.join(timeout=5)


class _Acks:
    """Delivery reports of one outbox's records, which may arrive on any thread."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self.expected = expected
        self.results: list[tuple[int, int] | None] = [None] * expected
        self.failures: list[str] = []
        self.errors: dict[int, str] = {}
        self.settled = 0

    def callback(self, index: int) -> DeliveryCallback:
        def done(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                self.settled += 1
                if err is None:
                    self.results[index] = (msg.partition() or 0, msg.offset() or 0)
                else:
                    self.errors[index] = f"{msg.topic()}: {err.str()}"
                    self.failures.append(self.errors[index])

        return done

    @property
    def complete(self) -> bool:
        return self.settled >= self.expected


class Outbox:
    """The events one unit of work produces, confirmed together.

    :meth:`emit` encodes at once (a contract violation raises in the handler that made
    the event) and keeps the record; nothing reaches Kafka until :meth:`deliver` (wait
    for every acknowledgement) or :meth:`send` (enqueue only: inside a Kafka
    transaction the commit confirms). :meth:`mark` / :meth:`rollback` drop what was
    emitted since a point and is still kept, so a failed attempt leaves nothing behind
    (what was delivered in between is out and stays out).
    """

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self._records: list[Encoded] = []
        self._handed_over = 0  # records taken out before the kept ones: marks count from the start

    def __len__(self) -> int:
        return len(self._records)

    def emit(
        self,
        target: Target,
        value: Mapping[str, Any],
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        schema_topic: str | None = None,
    ) -> Mapping[str, Any]:
        """Encode and keep one event; returns ``value`` (handy to read its envelope back)."""
        self._records.append(
            self.producer.encode(target, value, key=key, headers=headers, schema_topic=schema_topic)
        )
        return value

    def emit_all(self, outputs: Iterable[Output]) -> None:
        for output in outputs:
            self.emit(output.target, output.value, output.key, headers=output.headers)

    def emit_encoded(self, record: Encoded) -> None:
        """Keep an already-encoded record (dead letters keep the original bytes)."""
        self._records.append(record)

    def mark(self) -> int:
        """A point to roll back to: counts every record emitted so far, delivered or kept."""
        return self._handed_over + len(self._records)

    def rollback(self, mark: int) -> None:
        """Drop the kept records emitted after ``mark``."""
        del self._records[max(mark - self._handed_over, 0) :]

    def discard(self) -> None:
        self._records.clear()

    def take(self) -> list[Encoded]:
        """Hand the kept records over (the outbox is empty afterwards)."""
        records, self._records = self._records, []
        self._handed_over += len(records)
        return records

    def send(self) -> Counter[str]:
        """Enqueue every kept record without waiting (a transaction's commit confirms them).

        Returns how many records went to each topic: the caller counts them as produced
        once the commit confirmed them.
        """
        sent: Counter[str] = Counter()
        for record in self.take():
            self.producer.enqueue(record)
            sent[record.topic] += 1
        return sent

    def deliver(self, timeout_s: float | None = None) -> list[tuple[int, int]]:
        """Produce every kept record and wait until the broker acknowledged each one.

        Returns (partition, offset) per record in emit order. Raises
        :class:`KafkaUnavailable` when acknowledgements do not arrive in time and
        :class:`PublishError` when the broker refused a record; either way the
        outbox is empty afterwards (the caller retries the unit of work).
        """
        acks = self._produce_and_wait(timeout_s)
        if not acks.complete:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge {acks.expected - acks.settled} of {acks.expected} records in time"
            )
        if acks.failures:
            raise PublishError(
                f"Kafka refused {len(acks.failures)} of {acks.expected} records: {acks.failures[0]}"
            )
        return [result or (0, 0) for result in acks.results]

    def deliver_each(self, timeout_s: float | None = None) -> list[str | None]:
        """Like :meth:`deliver`, but report each record: None when stored, else why not.

        For callers that handle a partial refusal record by record instead of retrying
        the whole unit of work.
        """
        acks = self._produce_and_wait(timeout_s)
        unanswered = "no acknowledgement from Kafka in time"
        return [
            acks.errors.get(index) or (None if result is not None else unanswered)
            for index, result in enumerate(acks.results)
        ]

    def _produce_and_wait(self, timeout_s: float | None) -> _Acks:
        records = self.take()
        acks = _Acks(len(records))
        for index, record in enumerate(records):
            self.producer.produce_encoded(record, acks.callback(index))
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.producer.timeout_s)
        while not acks.complete and time.monotonic() < deadline:
            self.producer.poll(0.05)
        return acks


def encode_all(producer: EventProducer, outputs: Sequence[Output]) -> list[Encoded]:
    """Encode every output before anything is produced: one bad value fails the whole set."""
    outbox = Outbox(producer)
    outbox.emit_all(outputs)
    return outbox.take()
