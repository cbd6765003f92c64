"""Reading topics in tests: wait for records, read until quiet or to the end, follow topics from their end.

This module is the one place in the test tree that collects records from topics; the
fixtures in ``tests/conftest.py`` hand out its readers and close them after each test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

MessageFilter = Callable[[Message], bool]


def consume(
    consumer: Consumer, count: int, timeout_s: float = 30.0, where: MessageFilter | None = None
) -> list[Message]:
    """Poll until ``count`` messages (those ``where`` accepts) arrived or the deadline passed.

    Returns what arrived, which may be fewer than ``count``: callers assert on the number.
    Without ``where`` it never reads past ``count``, so the rest stay for the next read; with
    ``where`` every accepted message of the last batch is kept, so more may come back.
    """
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count and time.monotonic() < deadline:
        wanted = count - len(messages) if where is None else 100
        for msg in consumer.consume(num_messages=wanted, timeout=0.5):
            if msg.error() is None and (where is None or where(msg)):
                messages.append(msg)
    return messages


def drain(consumer: Consumer, quiet_s: float = 3.0, timeout_s: float = 60.0) -> list[Message]:
    """Read until no message arrived for ``quiet_s`` seconds (to prove nothing *else* came)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
        batch = [m for m in consumer.consume(num_messages=500, timeout=0.5) if m.error() is None]
        if batch:
            messages.extend(batch)
            last = time.monotonic()
    return messages


def read_to_end(
    consumer: Consumer, where: MessageFilter | None = None, timeout_s: float = 60.0
) -> list[Message]:
    """Read a subscribed consumer's partitions up to their current end (those ``where`` accepts).

    Stops once every assigned, non-empty partition's position reached its high watermark,
    or at the deadline.
    """
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = consumer.consume(num_messages=500, timeout=0.5)
        found.extend(m for m in batch if m.error() is None and (where is None or where(m)))
        assignment = consumer.assignment()
        # Until the group join assigned partitions, or while records flow, the end is not reached.
        if not assignment or batch:
            continue
        positions = consumer.position(assignment)
        ends = [consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in assignment]
        if all(pos.offset >= end for pos, end in zip(positions, ends, strict=True) if end > 0):
            break
    return found


def consumer_at_end(
    settings: PlatformSettings, *topics: str, isolation: str = "read_committed", eof: bool = False
) -> Consumer:
    """A consumer assigned to every partition of ``topics`` at its current end (sees only what comes next).

    Assigned rather than subscribed: a subscription's group join could later revoke the
    explicit positions. ``eof`` reports reaching a partition's end (see :meth:`TopicTail.catch_up`).
    """
    consumer = Consumer(
        {
            **settings.common_kafka_config(),
            "group.id": f"test-tail-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": eof,
        }
    )
    assignment = []
    for topic in topics:
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            assignment.append(TopicPartition(topic, partition, high))
    consumer.assign(assignment)
    return consumer


@dataclass
class TailRecord:
    """One record a :class:`TopicTail` read; its value is decoded when first asked for."""

    message: Message = field(repr=False)
    decoder: Callable[[Message], dict[str, Any]] = field(repr=False)

    @property
    def topic(self) -> str:
        return self.message.topic() or ""

    @property
    def key(self) -> str | None:
        key = self.message.key()
        return key.decode(errors="replace") if key else None

    @cached_property
    def value(self) -> dict[str, Any]:
        # Lazily: a filter on topic or key never decodes other traffic sharing a topic.
        return self.decoder(self.message)


class TopicTail:
    """Everything that arrives on some topics after the tail was made, decoded with the registry.

    ``topics`` is either topic names (decoded with the schema each record was written with)
    or a mapping from topic name to the catalogue contract its records carry.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        serde: AvroSerde,
        topics: Mapping[str, str] | Iterable[str],
        *,
        isolation: str = "read_committed",
    ) -> None:
        self.serde = serde
        self.contracts: dict[str, str] = dict(topics) if isinstance(topics, Mapping) else {}
        names = list(self.contracts) if isinstance(topics, Mapping) else list(topics)
        self.consumer = consumer_at_end(settings, *names, isolation=isolation, eof=True)
        self.partitions = [TopicPartition(tp.topic, tp.partition) for tp in self.consumer.assignment()]
        self.seen: list[TailRecord] = []
        self.eof_at: dict[tuple[str, int], int] = {}

    def _decode(self, msg: Message) -> dict[str, Any]:
        topic = msg.topic() or ""
        return self.serde.decode(topic, msg.value(), schema_topic=self.contracts.get(topic))

    def _poll_once(self, timeout_s: float = 0.5) -> int:
        arrived = 0
        for msg in self.consumer.consume(num_messages=500, timeout=timeout_s):
            error = msg.error()
            if error is None:
                self.seen.append(TailRecord(msg, self._decode))
                arrived += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                # Reported whenever the consumer reaches the (committed) end of a partition.
                self.eof_at[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
        return arrived

    def poll(self, seconds: float = 1.0) -> list[TailRecord]:
        """Read whatever arrives for ``seconds``; returns those records (all are kept in ``seen``)."""
        already = len(self.seen)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._poll_once(min(0.2, max(deadline - time.monotonic(), 0.01)))
        return self.seen[already:]

    def drain(self, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
        """Read until nothing arrived for ``quiet_s`` seconds (to prove nothing *else* came)."""
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            if self._poll_once():
                last = time.monotonic()

    def catch_up(self, timeout_s: float = 60.0) -> list[TailRecord]:
        """Read everything written before now (the end offsets are taken at the call)."""
        ends = {}
        for tp in self.partitions:
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            ends[(tp.topic, tp.partition)] = int(high)

        def behind() -> list[tuple[str, int]]:
            return [tp for tp, end in ends.items() if self.eof_at.get(tp, -1) < end]

        deadline = time.monotonic() + timeout_s
        while behind() and time.monotonic() < deadline:
            self._poll_once()
        assert not behind(), f"could not read to the end of {behind()}: ends {ends}, reached {self.eof_at}"
        return self.seen

    def records(self, topic: str | None = None, key: str | None = None) -> list[TailRecord]:
        """The records read so far, of ``topic`` and with ``key`` when given."""
        return [r for r in self.seen if (topic is None or r.topic == topic) and (key is None or r.key == key)]

    def wait_for(
        self, predicate: Callable[[TailRecord], bool], count: int, timeout_s: float = 120.0
    ) -> list[TailRecord]:
        """Read until ``count`` records match (or the deadline passed); returns the matching ones."""
        deadline = time.monotonic() + timeout_s
        while sum(map(predicate, self.seen)) < count and time.monotonic() < deadline:
            self._poll_once()
        return [r for r in self.seen if predicate(r)]

    def on(
        self, topic: str | None, where: Callable[[dict[str, Any]], bool] | None = None, **match: Any
    ) -> list[dict[str, Any]]:
        """Decoded values read so far on ``topic`` (any if ``None``) that ``where`` and ``match`` accept."""
        return [
            r.value
            for r in self.records(topic)
            if (where is None or where(r.value)) and all(r.value.get(k) == v for k, v in match.items())
        ]

    def wait(self, topic: str, count: int = 1, timeout_s: float = 60, **match: Any) -> list[dict[str, Any]]:
        """Read until ``count`` values on ``topic`` have the fields in ``match``; assert they did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.on(topic, **match)) < count:
            self.poll(0.5)
        found = self.on(topic, **match)
        assert len(found) >= count, f"{topic}: expected {count} records matching {match}, got {found}"
        return found

    def by_id(self, topic: str, event_id: str) -> dict[str, Any]:
        """The one value on ``topic`` whose envelope has ``event_id``."""
        found = self.on(topic, lambda v: v["envelope"]["event_id"] == event_id)
        assert len(found) == 1, f"{topic}: expected one event {event_id}, found {len(found)}"
        return found[0]

    def close(self) -> None:
        self.consumer.close()
