"""Persistence in a single-partition, compacted Kafka topic (the design of Confluent's ``_schemas``).

The topic is the source of truth. At start-up the whole topic is read from the beginning up to the
high watermark and replayed into memory; afterwards every change is produced (``acks=all``,
idempotent producer) and flushed before the HTTP answer, then applied to memory by the caller.

This module only moves records; it knows nothing about subjects or compatibility.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic, ResourceType

from schema_registry_server.records import LogRecord, decode, encode

log = structlog.get_logger(__name__)
_KAFKA_LOGGER = logging.getLogger("librdkafka")


class StorageError(RuntimeError):
    """Kafka could not be reached or did not acknowledge a write in time (retryable)."""


class TopicMisconfiguredError(RuntimeError):
    """The schemas topic exists with settings that would lose or reorder data (not retryable)."""


class SchemaLog(Protocol):
    """What the registry needs from its storage."""

    def replay(self, apply: Callable[[LogRecord], None]) -> int:
        """Feed every record from the beginning to the current end to ``apply``; return the count."""
        ...

    def append(self, records: Sequence[LogRecord]) -> None:
        """Durably append ``records`` in order, or raise ``StorageError``."""
        ...


class KafkaSchemaLog:
    """``SchemaLog`` on a Kafka topic."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        replication_factor: int = 1,
        timeout_seconds: float = 10.0,
        security: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        # security.protocol / SASL properties; kept out of every log line.
        self._security = dict(security or {})
        self._bootstrap = bootstrap_servers
        self._replication_factor = replication_factor
        self._timeout = timeout_seconds
        self._producer: Producer | None = self._new_producer()
        # Delivery callbacks run inside flush() on the calling thread; the lock keeps one batch's
        # produce + flush together even if a caller forgets to serialise writes.
        self._write_lock = threading.Lock()

    # -- set-up ------------------------------------------------------------------------------------

    def _common_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self._bootstrap,
            # librdkafka logs through Python logging, so they come out as JSON like everything else.
            "logger": _KAFKA_LOGGER,
            "socket.timeout.ms": int(self._timeout * 1000),
            "client.id": "local-schema-registry",
            **self._security,
        }

    def ensure_topic(self) -> None:
        """Create the topic if missing, then verify it is safe to use.

        Raises:
            StorageError: Kafka unreachable (retry later).
            TopicMisconfiguredError: more than one partition or not compacted.
        """
        admin = AdminClient(self._common_config())
        try:
            # Listing all topics (instead of asking for ours) can never trigger auto-creation with
            # broker defaults, which would give a non-compacted, possibly multi-partition topic.
            metadata = admin.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise StorageError(f"cannot reach Kafka at {self._bootstrap}: {exc}") from exc
        if self.topic not in metadata.topics:
            self._create_topic(admin)
            metadata = self._wait_for_topic(admin)
        partitions = metadata.topics[self.topic].partitions
        if len(partitions) != 1:
            raise TopicMisconfiguredError(
                f"schemas topic {self.topic!r} has {len(partitions)} partitions; it must have exactly 1 "
                "so that every instance replays records in the order they were written"
            )
        policy = self._cleanup_policy(admin)
        if policy != "compact":
            raise TopicMisconfiguredError(
                f"schemas topic {self.topic!r} has cleanup.policy={policy!r}; it must be 'compact', "
                "otherwise retention would eventually delete registered schemas"
            )

    def _create_topic(self, admin: AdminClient) -> None:
        new_topic = NewTopic(
            self.topic,
            num_partitions=1,
            replication_factor=self._replication_factor,
            config={"cleanup.policy": "compact"},
        )
        futures = admin.create_topics(
            [new_topic], operation_timeout=self._timeout, request_timeout=self._timeout
        )
        try:
            futures[self.topic].result(timeout=self._timeout)
            log.info("schemas_topic_created", topic=self.topic, replication=self._replication_factor)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return  # another process created it in the meantime
            raise StorageError(f"cannot create schemas topic {self.topic!r}: {exc}") from exc
        except TimeoutError as exc:
            raise StorageError(f"timed out creating schemas topic {self.topic!r}") from exc

    def _wait_for_topic(self, admin: AdminClient) -> ClusterMetadata:
        # Creation is asynchronous on the broker side: wait until the partition has a leader.
        deadline = time.monotonic() + self._timeout
        while True:
            metadata = admin.list_topics(timeout=self._timeout)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                if all(partition.leader >= 0 for partition in topic.partitions.values()):
                    return metadata
            if time.monotonic() > deadline:
                raise StorageError(f"schemas topic {self.topic!r} has no leader yet")
            time.sleep(0.1)

    def _cleanup_policy(self, admin: AdminClient) -> str:
        resource = ConfigResource(ResourceType.TOPIC, self.topic)
        futures = admin.describe_configs([resource], request_timeout=self._timeout)
        try:
            configs = futures[resource].result(timeout=self._timeout)
        except (KafkaException, TimeoutError) as exc:
            raise StorageError(f"cannot read the configuration of {self.topic!r}: {exc}") from exc
        entry = configs.get("cleanup.policy")
        return str(entry.value) if entry is not None else ""

    def _new_producer(self) -> Producer:
        # Creating a producer does not connect yet; connections are made on first use.
        config = self._common_config()
        config.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                # librdkafka reports every message (success or failure) within this bound, so
                # flush() below always ends with a definite per-message outcome.
                "message.timeout.ms": int(self._timeout * 1000),
            }
        )
        return Producer(config)

    def _live_producer(self) -> Producer:
        if self._producer is None:
            raise StorageError("the schemas log is closed")
        return self._producer

    # -- SchemaLog ---------------------------------------------------------------------------------

    def replay(self, apply: Callable[[LogRecord], None]) -> int:
        """Read the topic from the beginning to the high watermark taken at the start of the read.

        Raises:
            StorageError: Kafka unreachable or the read stalled for longer than the timeout.
        """
        config = self._common_config()
        config.update(
            {
                # A throw-away group: offsets are never committed, every start replays everything.
                "group.id": f"local-schema-registry-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        consumer = Consumer(config)
        try:
            partition = TopicPartition(self.topic, 0)
            try:
                offsets = consumer.get_watermark_offsets(partition, timeout=self._timeout, cached=False)
            except KafkaException as exc:
                raise StorageError(f"cannot read offsets of {self.topic!r}: {exc}") from exc
            if offsets is None:
                raise StorageError(f"timed out reading offsets of {self.topic!r}")
            low, high = offsets
            if high <= low:
                return 0
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            count = 0
            last_progress = time.monotonic()
            while True:
                message = consumer.poll(0.5)
                if message is None:
                    if time.monotonic() - last_progress > self._timeout:
                        raise StorageError(f"reading {self.topic!r} stalled before offset {high}")
                    continue
                last_progress = time.monotonic()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # End of the partition: everything up to (at least) ``high`` has been seen.
                        return count
                    raise StorageError(f"error reading {self.topic!r}: {error}")
                record = decode(message.key(), message.value())
                if record is None:
                    log.warning("schemas_topic_record_skipped", offset=message.offset(), reason="unknown key")
                else:
                    apply(record)
                    count += 1
                offset = message.offset()
                if offset is not None and offset + 1 >= high:
                    return count
        finally:
            consumer.close()

    def append(self, records: Sequence[LogRecord]) -> None:
        """Produce ``records`` in order and wait until each is acknowledged by all in-sync replicas.

        Raises:
            StorageError: any record was not acknowledged. Some earlier records of the batch may have
                been written; callers must treat their in-memory view as stale.
        """
        with self._write_lock:
            producer = self._live_producer()
            failures: list[str] = []
            fatal = False
            pending = len(records)

            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                nonlocal pending, fatal
                pending -= 1
                if error is not None:
                    failures.append(str(error))
                    fatal = fatal or error.fatal()

            for record in records:
                key, value = encode(record)
                try:
                    producer.produce(self.topic, key=key, value=value, partition=0, on_delivery=on_delivery)
                except (BufferError, KafkaException) as exc:
                    failures.append(str(exc))
                    pending -= 1
                    break
            # A little more than message.timeout.ms so every delivery report arrives.
            producer.flush(self._timeout + 5.0)
            if fatal:
                # An idempotent producer that hit a fatal error refuses every later message; start
                # over with a new one (and a new producer id) for the next write.
                log.error("kafka_producer_fatal_error_recreating", errors=failures)
                producer.close()
                self._producer = self._new_producer()
            if failures or pending > 0:
                detail = "; ".join(failures) or f"{pending} record(s) not acknowledged in time"
                raise StorageError(f"write to {self.topic!r} failed: {detail}")

    # -- health and shutdown -----------------------------------------------------------------------

    def ping(self, timeout: float = 2.0) -> bool:
        """Whether Kafka answers and the schemas topic has a leader."""
        try:
            metadata = self._live_producer().list_topics(timeout=timeout)
        except KafkaException:
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return False
        return all(partition.leader >= 0 for partition in topic.partitions.values())

    def close(self) -> None:
        """Flush anything still queued and release the producer."""
        if self._producer is not None:
            remaining = self._producer.flush(self._timeout)
            if remaining:
                log.warning("schemas_topic_unflushed_on_close", remaining=remaining)
            self._producer.close()
            self._producer = None
