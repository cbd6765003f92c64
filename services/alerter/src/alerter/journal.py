"""The delivery journal: every delivery is recorded before it is attempted.

Without it, a delivery in flight when the process dies is lost: the alerts topic's offset
is committed as soon as the engine has decided, and the replay after a restart sends
nothing. With it, each delivery (one notification to one channel, named by its
:func:`~alerter.models.delivery_id`: alert id, channel and attempt kind) goes through

    pending   written and acknowledged by Kafka *before* the channel is called
    done      the channel confirmed it
    failed    given up on (retries exhausted, or a permanent error)

on a compacted topic keyed by the delivery id (``ALERTER_JOURNAL_TOPIC``, under the
catalogue's ``alerter-`` internal topic prefix). At start, before the consumer loop runs,
the journal is read to its end:

* a ``pending`` delivery without a later ``done``/``failed`` is attempted again, with the
  same delivery id as idempotency key, so a receiver that got it just before the crash
  can drop the repeat;
* a delivery the journal confirms is never sent again, even when the alert record that
  caused it is processed a second time (its offset was not committed before the crash);
* finished entries older than ``ALERTER_JOURNAL_RETENTION_S`` are tombstoned (also
  periodically while running), so compaction keeps the topic small.

A delivery that was still waiting for a retry when the service was stopped stays
``pending`` too: the next start resumes it instead of dropping it.

When the journal cannot be written (Kafka unavailable) the delivery is sent anyway and
the failure counted: alerts about an outage must not depend on the thing that is out.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from alerter import metrics
from alerter.engine import DeliveryJob
from alerter.models import Notification
from mlops_platform.errors import KafkaUnavailable
from mlops_platform.kafka import consume_to_end, create_topic
from mlops_platform.logs import get_logger
from mlops_platform.settings import PlatformSettings

log = get_logger(__name__)

# Compacted: only the latest record of a delivery id matters. Segments roll hourly so
# finished entries can be compacted away; tombstones themselves go an hour later.
JOURNAL_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": str(3_600_000),
    "delete.retention.ms": str(3_600_000),
}


class JournalState(StrEnum):
    """The state a journal record puts a delivery in."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class JournalUnavailable(Exception):
    """The journal could not be read or written (Kafka refused or timed out)."""


class JournalFormatError(ValueError):
    """A journal record that is not a journal entry."""


@dataclass(frozen=True)
class JournalEntry:
    """The latest known state of one delivery, as stored on the journal topic (JSON)."""

    delivery_id: str
    state: JournalState
    channel: str
    notification: dict[str, Any]
    at: float  # epoch seconds when this state was recorded
    attempts: int = 0
    error: str | None = None

    def encode(self) -> bytes:
        return json.dumps(
            {
                "delivery_id": self.delivery_id,
                "state": self.state.value,
                "channel": self.channel,
                "notification": self.notification,
                "at": self.at,
                "attempts": self.attempts,
                "error": self.error,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, key: str, value: bytes) -> JournalEntry:
        try:
            data = json.loads(value)
            entry = cls(
                delivery_id=str(data["delivery_id"]),
                state=JournalState(data["state"]),
                channel=str(data["channel"]),
                notification=dict(data["notification"]),
                at=float(data["at"]),
                attempts=int(data.get("attempts") or 0),
                error=data.get("error"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalFormatError(f"journal record {key!r} is not a journal entry: {exc}") from exc
        if entry.delivery_id != key:
            raise JournalFormatError(f"journal record {key!r} names delivery {entry.delivery_id!r}")
        return entry

    def job(self) -> tuple[Notification, str]:
        """The notification and channel to attempt again."""
        return Notification.from_dict(self.notification), self.channel


class JournalStore(Protocol):
    """Where journal records live: a compacted Kafka topic in production, a list in unit tests."""

    def read(self) -> Iterator[tuple[str, bytes | None]]:
        """Every record from the start to the current end, in order (``None``: a tombstone)."""
        ...

    def write(self, items: Sequence[tuple[str, bytes | None]]) -> None:
        """Store the records and wait for the acknowledgement; raise :class:`JournalUnavailable`."""
        ...

    def write_later(self, key: str, value: bytes | None) -> None:
        """Store a record without waiting (errors are logged)."""
        ...

    def close(self, timeout_s: float) -> None: ...


@dataclass
class LoadResult:
    """What reading the journal at start found."""

    read: int = 0
    skipped: int = 0
    resume: list[JournalEntry] = field(default_factory=list)
    finished: int = 0
    expired: int = 0


class DeliveryJournal:
    """Bookkeeping of deliveries on top of a :class:`JournalStore`; thread-safe."""

    def __init__(
        self, store: JournalStore, *, retention_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.clock = clock
        self._lock = threading.Lock()
        self._inflight: dict[str, JournalEntry] = {}  # pending in the journal, being worked on
        self._finished: dict[str, JournalEntry] = {}  # done / failed, until tombstoned

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._inflight)

    def load(self) -> LoadResult:
        """Read the journal to its end; returns the deliveries to attempt again.

        Pending entries older than the retention are not resumed (that news is stale):
        they are closed as ``failed`` and, like old finished entries, tombstoned.
        """
        result = LoadResult()
        latest: dict[str, JournalEntry | None] = {}
        for key, value in self.store.read():
            result.read += 1
            if value is None:
                latest[key] = None
                continue
            try:
                latest[key] = JournalEntry.decode(key, value)
            except JournalFormatError as exc:
                result.skipped += 1
                log.warning("journal_record_skipped", error=str(exc))
        horizon = self.clock() - self.retention_s
        expired: list[str] = []
        with self._lock:
            for key, entry in latest.items():
                if entry is None:
                    continue
                if entry.at < horizon:
                    expired.append(key)
                    if entry.state is JournalState.PENDING:
                        log.warning("journal_pending_expired", delivery_id=key, recorded_at=entry.at)
                elif entry.state is JournalState.PENDING:
                    self._inflight[key] = entry
                    result.resume.append(entry)
                else:
                    self._finished[key] = entry
                    result.finished += 1
            self._update_gauge()
        for key in expired:
            self.store.write_later(key, None)
        result.expired = len(expired)
        result.resume.sort(key=lambda e: e.at)
        return result

    def begin(
        self, jobs: Sequence[DeliveryJob]
    ) -> tuple[list[DeliveryJob], list[tuple[DeliveryJob, JournalEntry]]]:
        """Record ``jobs`` as pending before they are attempted.

        Returns the jobs to send and the ones the journal already confirms (with their
        entry), which must not be sent again. A job whose delivery is already in flight
        (resumed from the journal) is dropped. When the journal cannot be written the
        jobs are sent all the same.
        """
        send: list[DeliveryJob] = []
        confirmed: list[tuple[DeliveryJob, JournalEntry]] = []
        entries: list[JournalEntry] = []
        now = self.clock()
        with self._lock:
            for job in jobs:
                key = job.delivery_id
                finished = self._finished.get(key)
                if finished is not None:
                    confirmed.append((job, finished))
                    metrics.DUPLICATES_SUPPRESSED.labels("journal").inc()
                    log.info("delivery_already_finished", delivery_id=key, state=finished.state.value)
                    continue
                if key in self._inflight or any(e.delivery_id == key for e in entries):
                    metrics.DUPLICATES_SUPPRESSED.labels("journal").inc()
                    log.info("delivery_already_in_flight", delivery_id=key)
                    continue
                entries.append(
                    JournalEntry(key, JournalState.PENDING, job.channel, job.notification.as_dict(), now)
                )
                send.append(job)
        if entries:
            try:
                self.store.write([(e.delivery_id, e.encode()) for e in entries])
            except JournalUnavailable as exc:
                metrics.JOURNAL_WRITE_FAILURES.inc()
                log.error("journal_write_failed", deliveries=len(entries), error=str(exc))
            with self._lock:
                for entry in entries:
                    self._inflight[entry.delivery_id] = entry
                self._update_gauge()
        return send, confirmed

    def finish(self, job: DeliveryJob, *, state: str, attempts: int, error: str | None) -> None:
        """Record a delivery's final outcome (``delivered`` or ``failed``) without waiting."""
        key = job.delivery_id
        entry = JournalEntry(
            key,
            JournalState.DONE if state == "delivered" else JournalState.FAILED,
            job.channel,
            job.notification.as_dict(),
            self.clock(),
            attempts,
            error,
        )
        with self._lock:
            self._inflight.pop(key, None)
            self._finished[key] = entry
            self._update_gauge()
        self.store.write_later(key, entry.encode())

    def release(self, job: DeliveryJob) -> None:
        """Forget an unfinished delivery in this process (shutdown): it stays pending in the journal."""
        with self._lock:
            self._inflight.pop(job.delivery_id, None)
            self._update_gauge()

    def compact(self) -> int:
        """Tombstone finished entries older than the retention; returns how many."""
        horizon = self.clock() - self.retention_s
        with self._lock:
            old = [key for key, entry in self._finished.items() if entry.at < horizon]
            for key in old:
                del self._finished[key]
        for key in old:
            self.store.write_later(key, None)
        if old:
            log.info("journal_compacted", tombstoned=len(old))
        return len(old)

    def close(self, timeout_s: float) -> None:
        self.store.close(timeout_s)

    def _update_gauge(self) -> None:
        metrics.JOURNAL_PENDING.set(len(self._inflight))


class KafkaJournalStore:
    """The journal on a compacted Kafka topic (one partition: it is small and read whole)."""

    def __init__(
        self,
        settings: PlatformSettings,
        topic: str,
        *,
        client_id: str,
        reader_group: str,
        read_timeout_s: float,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.client_id = client_id
        self.reader_group = reader_group
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = settings.request_timeout_s * 6
        self._producer = Producer(settings.producer_config(client_id, **{"linger.ms": 0}))

    def ensure_topic(self) -> None:
        """Create the journal topic when it is missing (idempotent)."""
        try:
            create_topic(self.settings, self.topic, 1, JOURNAL_TOPIC_CONFIG)
        except KafkaException as exc:
            raise JournalUnavailable(f"cannot create {self.topic}: {exc}") from exc

    def read(self) -> Iterator[tuple[str, bytes | None]]:
        timeout = self.settings.request_timeout_s * 2
        consumer = Consumer(
            self.settings.consumer_config(
                self.reader_group, client_id=f"{self.client_id}-reader", **{"enable.partition.eof": True}
            )
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if metadata is None or metadata.error is not None:
                raise JournalUnavailable(
                    f"cannot read {self.topic}: {metadata.error if metadata else 'missing'}"
                )
            ends: dict[int, int] = {}
            starts: list[TopicPartition] = []
            for p in sorted(metadata.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
                if high > low:
                    ends[p] = high
                    starts.append(TopicPartition(self.topic, p, low))
            if not ends:
                return
            consumer.assign(starts)
            message: Message
            for message in consume_to_end(consumer, self.topic, ends, self.read_timeout_s):
                raw_key = message.key()
                if raw_key is None:
                    continue
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                yield key, message.value()
        except (KafkaException, KafkaUnavailable) as exc:
            raise JournalUnavailable(f"cannot read {self.topic}: {exc}") from exc
        finally:
            consumer.close()

    def write(self, items: Sequence[tuple[str, bytes | None]]) -> None:
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            for key, value in items:
                self._producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            raise JournalUnavailable(str(exc)) from exc
        if self._producer.flush(self.write_timeout_s) > 0:
            raise JournalUnavailable(
                f"no acknowledgement from {self.topic} within {self.write_timeout_s:.0f}s"
            )
        if errors:
            raise JournalUnavailable("; ".join(errors))

    def write_later(self, key: str, value: bytes | None) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                metrics.JOURNAL_WRITE_FAILURES.inc()
                log.error("journal_write_failed", delivery_id=key, error=str(err))

        try:
            self._producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            metrics.JOURNAL_WRITE_FAILURES.inc()
            log.error("journal_write_failed", delivery_id=key, error=str(exc))
        self._producer.poll(0)

    def close(self, timeout_s: float) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            log.warning("journal_records_unflushed", records=left)
