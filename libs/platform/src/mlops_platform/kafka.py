"""Kafka clients shared by every service.

- :class:`EventProducer` — idempotent producer (``acks=all``) of Avro events, optionally
  transactional; :class:`AsyncEventProducer` awaits acknowledgements from asyncio code.
- :class:`ConsumerLoop` — at-least-once consumer with manual commits after the handler
  succeeded, a dead-letter path for poison records and graceful shutdown.
- :class:`TransactionalLoop` — exactly-once consume-transform-produce: outputs and input
  offsets are committed in one Kafka transaction.
- admin helpers to create topics and probe the cluster.

Poll timeouts stay at or below one second so that a stop request (SIGTERM) is noticed
promptly; the loops finish the batch at hand, commit, and close.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from mlops_platform.contracts import Catalogue, dlq_topic
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

log = get_logger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class RetryableError(Exception):
    """Raised by a handler when the failure is transient (a dependency is down).

    The loop neither commits nor dead-letters: it rewinds to the batch start and
    tries again after a back-off, so no record is lost or skipped.
    """


def _key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


# --------------------------------------------------------------------------- producer


class EventProducer:
    """Producer of Avro events for one service.

    Idempotent with ``acks=all``: retries never duplicate or reorder. With a
    ``transactional_id`` it can also run Kafka transactions (see :class:`TransactionalLoop`).
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
        self._producer = Producer(config)
        self._metrics = platform_metrics()
        self._timeout_s = settings.request_timeout_s

    @property
    def raw(self) -> Producer:
        """The underlying confluent_kafka Producer."""
        return self._producer

    def encode(self, topic: str, value: Mapping[str, Any], *, schema_topic: str | None = None) -> bytes:
        return self.serde.encode(topic, value, schema_topic=schema_topic)

    def produce(
        self,
        topic: str,
        value: Mapping[str, Any],
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        schema_topic: str | None = None,
    ) -> None:
        """Encode and enqueue an event; ``on_delivery`` is called from :meth:`poll`/:meth:`flush`."""
        self.produce_raw(
            topic,
            self.encode(topic, value, schema_topic=schema_topic),
            key,
            headers=headers,
            on_delivery=on_delivery,
        )

    def produce_raw(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Enqueue already-encoded bytes (used for dead letters, which keep the original bytes)."""

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self._metrics.events_produced.labels(self.service, topic).inc()
            if on_delivery is not None:
                on_delivery(err, msg)

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=_key_bytes(key), headers=headers, on_delivery=delivered
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._producer.poll(0.1)

    def publish(
        self,
        topic: str,
        value: Mapping[str, Any],
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
        timeout_s: float | None = None,
        schema_topic: str | None = None,
    ) -> tuple[int, int]:
        """Produce one event and wait for the broker's acknowledgement; returns (partition, offset)."""
        outcome: dict[str, Any] = {}

        def done(err: KafkaError | None, msg: Message) -> None:
            outcome["err"], outcome["msg"] = err, msg

        self.produce(topic, value, key, headers=headers, on_delivery=done, schema_topic=schema_topic)
        deadline = time.monotonic() + (timeout_s or self._timeout_s * 6)
        while "err" not in outcome and time.monotonic() < deadline:
            self._producer.poll(0.05)
        if "err" not in outcome:
            raise KafkaUnavailable(f"no acknowledgement for {topic} within the timeout")
        if outcome["err"] is not None:
            raise PublishError(f"publishing to {topic} failed: {outcome['err']}")
        msg: Message = outcome["msg"]
        return msg.partition() or 0, msg.offset() or 0

    def poll(self, timeout_s: float = 0.0) -> int:
        return int(self._producer.poll(timeout_s))

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        return int(self._producer.flush(timeout_s if timeout_s is not None else self._timeout_s * 6))

    def close(self) -> None:
        remaining = self.flush()
        if remaining:
            log.warning("producer_closed_with_pending_messages", pending=remaining)


class AsyncEventProducer:
    """Awaitable publishing for asyncio code (HTTP handlers).

    A background thread serves delivery reports; each publish resolves an asyncio
    future only once the broker acknowledged the record (``acks=all``).
    """

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="producer-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def publish(
        self,
        topic: str,
        value: Mapping[str, Any],
        key: str | bytes | None = None,
        *,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Publish one event; returns (partition, offset) after the acknowledgement."""
        return (await self.publish_many([(topic, value, key)], headers=headers))[0]

    async def publish_many(
        self,
        items: Sequence[tuple[str, Mapping[str, Any], str | bytes | None]],
        *,
        headers: Headers | None = None,
    ) -> list[tuple[int, int]]:
        """Publish several events and wait for all acknowledgements.

        Every value is encoded before anything is produced, so a record that does not
        fit its contract fails the whole call with nothing written.
        """
        loop = asyncio.get_running_loop()
        encoded = [(topic, self.producer.encode(topic, value), key) for topic, value, key in items]
        futures: list[asyncio.Future[tuple[int, int]]] = []
        for topic, data, key in encoded:
            future: asyncio.Future[tuple[int, int]] = loop.create_future()

            def done(
                err: KafkaError | None,
                msg: Message,
                future: asyncio.Future[tuple[int, int]] = future,
                topic: str = topic,
            ) -> None:
                if err is None:
                    result: Any = (msg.partition() or 0, msg.offset() or 0)
                else:
                    result = PublishError(f"publishing to {topic} failed: {err}")
                loop.call_soon_threadsafe(_settle, future, result)

            self.producer.produce_raw(topic, data, key, headers=headers, on_delivery=done)
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.producer.close()


def _settle(future: asyncio.Future[tuple[int, int]], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


# --------------------------------------------------------------------------- dead letters


def _header_items(msg: Message) -> list[tuple[str, str | bytes | None]]:
    headers = msg.headers() or []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(str(k), v) for k, v in headers]


def dead_letter_headers(msg: Message, error: BaseException, *, stage: str, service: str) -> Headers:
    """Headers that explain why a record was dead-lettered and where it came from."""
    original: Headers = [(str(k), v) for k, v in _header_items(msg)]
    return [
        *original,
        ("dlq.original.topic", (msg.topic() or "").encode()),
        ("dlq.original.partition", str(msg.partition()).encode()),
        ("dlq.original.offset", str(msg.offset()).encode()),
        ("dlq.original.timestamp", str(msg.timestamp()[1]).encode()),
        ("dlq.error.class", type(error).__name__.encode()),
        ("dlq.error.message", str(error)[:4000].encode()),
        ("dlq.stage", stage.encode()),
        ("dlq.service", service.encode()),
        ("dlq.failed.at", datetime.now(UTC).isoformat().encode()),
    ]


class DeadLetterPublisher:
    """Sends a failed record, bytes untouched, to the service's dead-letter topic."""

    def __init__(self, producer: EventProducer, service: str, topic: str | None = None) -> None:
        self.producer = producer
        self.service = service
        self.topic = topic or dlq_topic(service)
        self._metrics = platform_metrics()
        self._failures: list[KafkaError] = []

    def send(self, msg: Message, error: BaseException, *, stage: str) -> None:
        log.warning(
            "dead_letter",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            stage=stage,
            error=f"{type(error).__name__}: {error}",
        )
        self._metrics.dead_letters.labels(self.service, msg.topic() or "", stage).inc()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._failures.append(err)

        self.producer.produce_raw(
            self.topic,
            msg.value(),
            msg.key(),
            headers=dead_letter_headers(msg, error, stage=stage, service=self.service),
            on_delivery=delivered,
        )

    def confirm(self) -> None:
        """Block until every dead letter is acknowledged; raise if any was lost.

        Called before committing input offsets: a record's offset is committed only
        once its dead letter is safely stored.
        """
        if self.producer.flush() > 0 or self._failures:
            failures, self._failures = self._failures, []
            raise KafkaUnavailable(f"dead letters not acknowledged: {failures or 'timeout'}")


# --------------------------------------------------------------------------- consuming


@dataclass
class Record:
    """A decoded record with its coordinates."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    timestamp_ms: int
    headers: Headers = field(default_factory=list)
    message: Message | None = field(default=None, repr=False)

    @property
    def envelope(self) -> dict[str, Any]:
        envelope: dict[str, Any] = self.value.get("envelope") or {}
        return envelope


class StopSignal:
    """A stop flag set by SIGTERM/SIGINT or by code; a second SIGINT exits at once."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(timeout_s)

    def install(self) -> None:
        """Handle SIGTERM/SIGINT in a plain process (not needed under uvicorn)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            if self.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.info("stop_requested", signal=signal.Signals(signum).name)
            self.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class _LoopBase:
    def __init__(
        self,
        *,
        settings: PlatformSettings,
        service: str,
        group_id: str,
        topics: Sequence[str],
        serde: AvroSerde,
        batch_size: int,
        poll_timeout_s: float,
        schema_topics: Mapping[str, str] | None,
        consumer_overrides: Mapping[str, Any] | None,
        stop: StopSignal | None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.group_id = group_id
        self.topics = list(topics)
        self.serde = serde
        self.batch_size = batch_size
        self.poll_timeout_s = min(poll_timeout_s, 1.0)
        self.schema_topics = dict(schema_topics or {})
        self.stop_signal = stop or StopSignal()
        self.metrics = platform_metrics()
        self.consumer = Consumer(
            settings.consumer_config(
                group_id, client_id=f"{service}-consumer", **dict(consumer_overrides or {})
            )
        )
        self._thread: threading.Thread | None = None
        self._last_lag_report = 0.0
        self._lag_total = -1
        self.error: BaseException | None = None
        self.ready = threading.Event()

    # -- lifecycle
    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close."""
        self.stop_signal.set()

    def start_in_thread(self) -> threading.Thread:
        """Run the loop in a daemon thread (for services whose main thread serves HTTP)."""
        self._thread = threading.Thread(target=self._run_guarded, name=f"{self.service}-loop", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # the owner decides what a dead loop means (readiness fails)
            self.error = exc
            log.error("consumer_loop_crashed", error=repr(exc), traceback=traceback.format_exc())

    def run(self) -> None:
        raise NotImplementedError

    # -- helpers
    def _poll(self) -> list[Message]:
        # Block (up to the timeout) for the first record only, then take what the client has
        # already fetched. consume(n, timeout) would wait for n records or the whole timeout,
        # delaying every record of a partly filled batch by up to poll_timeout_s; this way a
        # backlog still yields full batches and a quiet stream adds no waiting.
        first = self.consumer.poll(self.poll_timeout_s)
        if first is None:
            return []
        messages = [first]
        if self.batch_size > 1:
            messages += self.consumer.consume(num_messages=self.batch_size - 1, timeout=0)
        good: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer_error", error=str(err))
        return good

    def _decode(self, msg: Message) -> Record:
        topic = msg.topic() or ""
        value = self.serde.decode(topic, msg.value(), schema_topic=self.schema_topics.get(topic))
        return Record(
            topic=topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=value,
            timestamp_ms=msg.timestamp()[1],
            headers=_header_items(msg),
            message=msg,
        )

    def _report_lag(self, force: bool = False) -> None:
        # Runs on the loop's own thread: the consumer is not shared with other threads
        # (a heartbeat calling position() while this thread polls in a tight loop starves).
        now = time.monotonic()
        if not force and now - self._last_lag_report < 10:
            return
        self._last_lag_report = now
        try:
            total = 0
            for tp in self.consumer.position(self.consumer.assignment()):
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                position = tp.offset if tp.offset >= 0 else high
                lag = max(high - position, 0)
                total += lag
                self.metrics.consumer_lag.labels(
                    self.service, self.group_id, tp.topic, str(tp.partition)
                ).set(lag)
            self._lag_total = total
        except KafkaException as exc:
            log.debug("lag_report_failed", error=str(exc))

    def _rewind(self, messages: Iterable[Message]) -> None:
        """Seek each partition back to the first offset of ``messages``."""
        first: dict[tuple[str, int], int] = {}
        for msg in messages:
            key = (msg.topic() or "", msg.partition() or 0)
            first[key] = min(first.get(key, msg.offset() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def lag(self) -> int:
        """Total lag over the assignment as last measured by the loop (-1 before the first report)."""
        return self._lag_total


def _next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Offsets to commit: one past the last processed record of each partition."""
    last: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic() or "", msg.partition() or 0)
        last[key] = max(last.get(key, -1), msg.offset() or 0)
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


class ConsumerLoop(_LoopBase):
    """At-least-once consumer: handle a batch, dead-letter poison records, then commit.

    ``handler`` receives the decoded records of one poll. If it raises, the batch is
    replayed one record at a time so that only the records that really fail go to
    the dead-letter topic. :class:`RetryableError` (or the registry being down) makes
    the loop rewind and retry instead.
    """

    def __init__(
        self,
        *,
        settings: PlatformSettings,
        service: str,
        group_id: str,
        topics: Sequence[str],
        handler: Callable[[list[Record]], None],
        serde: AvroSerde,
        producer: EventProducer,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        retry_backoff_s: float = 2.0,
        schema_topics: Mapping[str, str] | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        dead_letter_topic: str | None = None,
        stop: StopSignal | None = None,
    ) -> None:
        super().__init__(
            settings=settings,
            service=service,
            group_id=group_id,
            topics=topics,
            serde=serde,
            batch_size=batch_size,
            poll_timeout_s=poll_timeout_s,
            schema_topics=schema_topics,
            consumer_overrides=consumer_overrides,
            stop=stop,
        )
        self.handler = handler
        self.producer = producer
        self.dead_letters = DeadLetterPublisher(producer, service, dead_letter_topic)
        self.retry_backoff_s = retry_backoff_s

    def run(self) -> None:
        self.consumer.subscribe(self.topics)
        self.ready.set()
        log.info("consumer_started", group=self.group_id, topics=self.topics)
        try:
            while not self.stop_signal.is_set():
                messages = self._poll()
                self._report_lag()
                if not messages:
                    continue
                if self._process(messages):
                    self.dead_letters.confirm()
                    self.consumer.commit(offsets=_next_offsets(messages), asynchronous=False)
                else:
                    self._rewind(messages)
                    self.stop_signal.wait(self.retry_backoff_s)
        finally:
            self.consumer.close()
            log.info("consumer_stopped", group=self.group_id)

    def _process(self, messages: list[Message]) -> bool:
        """Handle one batch; False means "transient failure, retry the batch"."""
        started = time.perf_counter()
        records: list[Record] = []
        for msg in messages:
            try:
                records.append(self._decode(msg))
            except SchemaRegistryUnavailable as exc:
                log.warning("registry_unavailable_retrying", error=str(exc))
                return False
            except SerializationError as exc:
                self.dead_letters.send(msg, exc, stage="deserialize")
                self.metrics.events_failed.labels(self.service, msg.topic() or "", "deserialize").inc()
        for record in records:
            self.metrics.events_consumed.labels(self.service, record.topic).inc()
        if records:
            try:
                self.handler(records)
            except (RetryableError, SchemaRegistryUnavailable, KafkaUnavailable) as exc:
                log.warning("handler_retryable_failure", error=str(exc))
                return False
            except Exception as batch_error:
                if len(records) == 1:
                    self._dead_letter(records[0], batch_error)
                else:
                    log.warning("batch_failed_isolating", error=repr(batch_error), size=len(records))
                    for record in records:
                        try:
                            with bind_event(record.envelope):
                                self.handler([record])
                        except (RetryableError, SchemaRegistryUnavailable, KafkaUnavailable) as exc:
                            log.warning("handler_retryable_failure", error=str(exc))
                            return False
                        except Exception as exc:
                            self._dead_letter(record, exc)
        topic = messages[0].topic() or ""
        self.metrics.processing_seconds.labels(self.service, topic).observe(time.perf_counter() - started)
        return True

    def _dead_letter(self, record: Record, error: BaseException) -> None:
        assert record.message is not None
        self.dead_letters.send(record.message, error, stage="process")
        self.metrics.events_failed.labels(self.service, record.topic, "process").inc()


@dataclass(frozen=True)
class Output:
    """A record to produce from a transactional transform."""

    topic: str
    value: Mapping[str, Any]
    key: str | bytes | None = None
    headers: Headers | None = None


class TransactionalLoop(_LoopBase):
    """Exactly-once consume-transform-produce.

    Each poll becomes one Kafka transaction holding the transform's outputs, any
    dead letters and the consumed offsets (``send_offsets_to_transaction``). A crash
    at any point aborts the transaction: ``read_committed`` readers never see partial
    output, and the records are consumed again from the last committed offsets.
    """

    def __init__(
        self,
        *,
        settings: PlatformSettings,
        service: str,
        group_id: str,
        topics: Sequence[str],
        transform: Callable[[list[Record]], list[Output]],
        serde: AvroSerde,
        transactional_id: str,
        batch_size: int = 500,
        poll_timeout_s: float = 0.2,
        retry_backoff_s: float = 2.0,
        schema_topics: Mapping[str, str] | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
        dead_letter_topic: str | None = None,
        output_schema_topics: Mapping[str, str] | None = None,
        stop: StopSignal | None = None,
    ) -> None:
        super().__init__(
            settings=settings,
            service=service,
            group_id=group_id,
            topics=topics,
            serde=serde,
            batch_size=batch_size,
            poll_timeout_s=poll_timeout_s,
            schema_topics=schema_topics,
            consumer_overrides=consumer_overrides,
            stop=stop,
        )
        self.transform = transform
        self.retry_backoff_s = retry_backoff_s
        self.output_schema_topics = dict(output_schema_topics or {})
        self.producer = EventProducer(
            settings,
            service,
            serde,
            transactional_id=transactional_id,
            # Right after a commit the coordinator answers the next transaction with
            # CONCURRENT_TRANSACTIONS; librdkafka's default 100 ms retry back-off would
            # then cap a loop at about ten transactions a second.
            **{"retry.backoff.ms": 5, **dict(producer_overrides or {})},
        )
        self.dead_letter_topic = dead_letter_topic or dlq_topic(service)
        self.transactions_committed = 0

    def run(self) -> None:
        producer = self.producer.raw
        producer.init_transactions(self.settings.request_timeout_s * 6)
        self.consumer.subscribe(self.topics)
        self.ready.set()
        log.info("transactional_loop_started", group=self.group_id, topics=self.topics)
        try:
            while not self.stop_signal.is_set():
                messages = self._poll()
                self._report_lag()
                if not messages:
                    continue
                self._run_transaction(messages)
        finally:
            self.producer.flush()
            self.consumer.close()
            log.info("transactional_loop_stopped", group=self.group_id)

    def _run_transaction(self, messages: list[Message]) -> None:
        producer = self.producer.raw
        started = time.perf_counter()
        producer.begin_transaction()
        try:
            outputs, dead = self._transform_isolating(messages)
            for output in outputs:
                self.producer.produce(
                    output.topic,
                    output.value,
                    output.key,
                    headers=output.headers,
                    schema_topic=self.output_schema_topics.get(output.topic),
                )
            for msg, error, stage in dead:
                self.producer.produce_raw(
                    self.dead_letter_topic,
                    msg.value(),
                    msg.key(),
                    headers=dead_letter_headers(msg, error, stage=stage, service=self.service),
                )
                self.metrics.dead_letters.labels(self.service, msg.topic() or "", stage).inc()
            producer.send_offsets_to_transaction(
                _next_offsets(messages),
                self.consumer.consumer_group_metadata(),
                self.settings.request_timeout_s * 6,
            )
            producer.commit_transaction(self.settings.request_timeout_s * 6)
        except _Retry as retry:
            self._abort_and_rewind(f"transient failure: {retry}")
            self.stop_signal.wait(self.retry_backoff_s)
            return
        except KafkaException as exc:
            kafka_error = exc.args[0] if exc.args else None
            if isinstance(kafka_error, KafkaError) and kafka_error.fatal():
                raise  # fenced by a newer instance with our transactional.id: stop
            self._abort_and_rewind(f"kafka error: {exc}")
            return
        self.transactions_committed += 1
        for msg in messages:
            self.metrics.events_consumed.labels(self.service, msg.topic() or "").inc()
        self.metrics.processing_seconds.labels(self.service, messages[0].topic() or "").observe(
            time.perf_counter() - started
        )

    def _transform_isolating(
        self, messages: list[Message]
    ) -> tuple[list[Output], list[tuple[Message, BaseException, str]]]:
        dead: list[tuple[Message, BaseException, str]] = []
        records: list[Record] = []
        for msg in messages:
            try:
                records.append(self._decode(msg))
            except SchemaRegistryUnavailable as exc:
                raise _Retry(str(exc)) from exc
            except SerializationError as exc:
                dead.append((msg, exc, "deserialize"))
        if not records:
            return [], dead
        try:
            return self.transform(records), dead
        except (RetryableError, SchemaRegistryUnavailable, KafkaUnavailable) as exc:
            raise _Retry(str(exc)) from exc
        except Exception as batch_error:
            log.warning("batch_failed_isolating", error=repr(batch_error), size=len(records))
        outputs: list[Output] = []
        for record in records:
            try:
                outputs.extend(self.transform([record]))
            except (RetryableError, SchemaRegistryUnavailable, KafkaUnavailable) as exc:
                raise _Retry(str(exc)) from exc
            except Exception as exc:
                assert record.message is not None
                dead.append((record.message, exc, "process"))
        return outputs, dead

    def _abort_and_rewind(self, reason: str) -> None:
        log.warning("transaction_aborted", reason=reason)
        try:
            self.producer.raw.abort_transaction(self.settings.request_timeout_s * 6)
        except KafkaException as exc:
            log.warning("abort_failed", error=str(exc))
        # Rewind to the committed offsets so the aborted batch is consumed again.
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.committed(assignment, timeout=self.settings.request_timeout_s * 2):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


class _Retry(Exception):
    pass


# --------------------------------------------------------------------------- reading a range


def offsets_since(
    consumer: Consumer, topic: str, since_ms: int, timeout_s: float
) -> dict[int, tuple[int, int]]:
    """Per partition, the ``(start, end)`` offsets of the records from ``since_ms`` to the current end.

    Partitions with nothing in that range are left out. ``end`` is the high watermark
    at the time of the call, so a reader stops there even while producers carry on.
    """
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise KafkaUnavailable(f"cannot read {topic}: {metadata.error if metadata else 'no such topic'}")
    partitions = sorted(metadata.partitions)
    starts = {
        tp.partition: tp.offset
        for tp in consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=timeout_s
        )
    }
    ranges: dict[int, tuple[int, int]] = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        start = starts.get(partition, -1)
        start = high if start < 0 else max(start, low)
        if start < high:
            ranges[partition] = (start, high)
    return ranges


def consume_to_end(
    consumer: Consumer, topic: str, ends: Mapping[int, int], timeout_s: float, batch_size: int = 500
) -> Iterator[Message]:
    """Yield the records of the assigned partitions of ``topic`` up to each partition's end offset.

    The consumer must be assigned (not subscribed) with ``enable.partition.eof`` on.
    Raises :class:`KafkaUnavailable` when the ends are not reached within ``timeout_s``.
    """
    remaining = dict(ends)
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"reading {topic} did not reach the end within {timeout_s:.0f}s: {remaining}"
            )
        for msg in consumer.consume(num_messages=batch_size, timeout=0.5):
            partition = msg.partition() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.pop(partition, None)
                elif err.fatal():
                    raise KafkaException(err)
                continue
            offset = msg.offset() or 0
            if partition not in remaining or offset >= remaining[partition]:
                remaining.pop(partition, None)
                continue
            yield msg
            if offset + 1 >= remaining.get(partition, 0):
                remaining.pop(partition, None)
        # Transaction markers take offsets without being delivered: trust the position too.
        if remaining:
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= remaining.get(tp.partition, 0):
                    remaining.pop(tp.partition, None)


# --------------------------------------------------------------------------- admin


def kafka_reachable(settings: PlatformSettings, timeout_s: float = 2.0) -> bool:
    """True when the cluster answers a metadata request in time."""
    try:
        AdminClient(settings.admin_config()).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def ensure_topics(
    settings: PlatformSettings, catalogue: Catalogue, names: Sequence[str] | None = None
) -> list[str]:
    """Create the catalogue's topics that do not exist yet; returns the created names."""
    admin = AdminClient(settings.admin_config())
    existing = set(admin.list_topics(timeout=settings.request_timeout_s * 2).topics)
    wanted = [spec for spec in catalogue.topics if names is None or spec.name in names]
    new = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=spec.kafka_config(),
        )
        for spec in wanted
        if spec.name not in existing
    ]
    created: list[str] = []
    if new:
        for name, future in admin.create_topics(new, request_timeout=settings.request_timeout_s * 2).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    return created


def create_topic(
    settings: PlatformSettings, name: str, partitions: int = 1, config: Mapping[str, str] | None = None
) -> None:
    """Create one topic (idempotent)."""
    admin = AdminClient(settings.admin_config())
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))]
    )
    try:
        futures[name].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
