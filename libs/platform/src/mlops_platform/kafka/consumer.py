"""Consuming in a group: decoded records, batched polls, lag, rewinds, and the stop signal.

Poll timeouts stay at or below one second so that a stop request (SIGTERM) is noticed promptly.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

from .dead_letters import header_items
from .producer import Headers

log = get_logger(__name__)


@dataclass
class Record:
    """A decoded record with its coordinates and the contract of its topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    timestamp_ms: int
    headers: Headers = field(default_factory=list)
    message: Message | None = field(default=None, repr=False)
    contract: Topic | None = None

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


#: Errors of a committed-offsets read while the group coordinator is unknown, moving or unreachable.
_COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._WAIT_COORD,
    }
)


def _coordinator_unavailable(error: KafkaError) -> bool:
    """A transient failure to reach the group coordinator (worth retrying), not a fatal error."""
    return not error.fatal() and (error.code() in _COORDINATOR_ERRORS or error.retriable())


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Offsets to commit: one past the last processed record of each partition."""
    last: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic() or "", msg.partition() or 0)
        last[key] = max(last.get(key, -1), msg.offset() or 0)
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


class GroupConsumer:
    """A consumer-group member reading bound topics in batches, with manual commits."""

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        service: str,
        group_id: str,
        inputs: Sequence[Binding],
        serde: AvroSerde,
        batch_size: int,
        poll_timeout_s: float,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.group_id = group_id
        self.inputs = {binding.topic: binding for binding in inputs}
        self.serde = serde
        self.batch_size = batch_size
        self.poll_timeout_s = min(poll_timeout_s, 1.0)
        self.metrics = platform_metrics()
        self.kafka = Consumer(
            settings.consumer_config(group_id, client_id=f"{service}-consumer", **dict(overrides or {}))
        )
        self._last_lag_report = 0.0
        self.lag_total = -1

    @property
    def topics(self) -> list[str]:
        return list(self.inputs)

    def subscribe(
        self,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_lost: Callable[[list[TopicPartition]], None] | None = None,
    ) -> None:
        """Join the group; ``on_revoke`` / ``on_lost`` run (inside ``poll``) before partitions move."""
        callbacks: dict[str, Any] = {}
        if on_revoke is not None:
            callbacks["on_revoke"] = lambda _consumer, partitions: on_revoke(partitions)
        if on_lost is not None:
            callbacks["on_lost"] = lambda _consumer, partitions: on_lost(partitions)
        self.kafka.subscribe(self.topics, **callbacks)

    def close(self) -> None:
        self.kafka.close()

    def poll(self) -> list[Message]:
        """The next batch: blocks (up to the poll timeout) for the first record only.

        ``consume(n, timeout)`` would wait for n records or the whole timeout, delaying
        every record of a partly filled batch; this way a backlog still yields full
        batches and a quiet stream adds no waiting.
        """
        first = self.kafka.poll(self.poll_timeout_s)
        if first is None:
            return []
        messages = [first]
        if self.batch_size > 1:
            messages += self.kafka.consume(num_messages=self.batch_size - 1, timeout=0)
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

    def decode(self, msg: Message) -> Record:
        """Decode with the contract of the message's binding (raises the serde's errors)."""
        topic = msg.topic() or ""
        binding = self.inputs.get(topic)
        value = self.serde.decode(topic, msg.value(), schema_topic=binding.schema_topic if binding else None)
        return Record(
            topic=topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=value,
            timestamp_ms=msg.timestamp()[1],
            headers=header_items(msg),
            message=msg,
            contract=binding.contract if binding else None,
        )

    def commit(self, messages: Iterable[Message]) -> None:
        self.kafka.commit(offsets=next_offsets(messages), asynchronous=False)

    def rewind(self, messages: Iterable[Message]) -> None:
        """Seek each partition back to the first offset of ``messages``."""
        first: dict[tuple[str, int], int] = {}
        for msg in messages:
            key = (msg.topic() or "", msg.partition() or 0)
            first[key] = min(first.get(key, msg.offset() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            self.kafka.seek(TopicPartition(topic, partition, offset))

    def rewind_to_committed(self) -> None:
        """Seek every assigned partition back to its committed offset (after an aborted transaction).

        The committed offsets come from the group coordinator. While it is unknown or moving
        (its broker died or is starting again) the read is retried, never skipped: going on
        from the current position would skip the aborted transaction's records.
        """
        assignment = self.kafka.assignment()
        if not assignment:
            return
        backoff_s = 0.2
        while True:
            try:
                committed = self.kafka.committed(assignment, timeout=self.settings.request_timeout_s * 2)
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError) or not _coordinator_unavailable(error):
                    raise
                log.warning("rewind_waits_for_coordinator", error=str(error), retry_in_s=backoff_s)
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.kafka.seek(TopicPartition(tp.topic, tp.partition, offset))

    def report_lag(self, force: bool = False) -> None:
        # Runs on the loop's own thread: the consumer is not shared with other threads
        # (a heartbeat calling position() while this thread polls in a tight loop starves).
        now = time.monotonic()
        if not force and now - self._last_lag_report < 10:
            return
        self._last_lag_report = now
        try:
            total = 0
            for tp in self.kafka.position(self.kafka.assignment()):
                _low, high = self.kafka.get_watermark_offsets(tp, timeout=1, cached=True)
                position = tp.offset if tp.offset >= 0 else high
                lag = max(high - position, 0)
                total += lag
                self.metrics.consumer_lag.labels(
                    self.service, self.group_id, tp.topic, str(tp.partition)
                ).set(lag)
            self.lag_total = total
        except KafkaException as exc:
            log.debug("lag_report_failed", error=str(exc))
