"""Transactions, requests and Kafka helpers for the fraud scoring tests.

Transactions and request events come from the one traffic driver (``constellation.traffic``),
so the tests send what the demo and the benchmark send.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from constellation import traffic
from constellation.traffic import transactions as transactions  # re-exported for the tests
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

REQUEST = Topic.PREDICTION_REQUEST.value
COMPLETED = Topic.PREDICTION_COMPLETED.value
DEPLOYED = Topic.MODEL_DEPLOYED.value
SOURCE = "test"


def request_event(transaction: dict[str, Any]) -> dict[str, Any]:
    """A ``prediction.request`` event for ``transaction``, sent by the tests."""
    return traffic.request_event(transaction, source=SOURCE)


def send_requests(
    producer: EventProducer, topic: str, txns: Iterable[dict[str, Any]], *, flush: bool = True
) -> list[dict[str, Any]]:
    """Publish one ``prediction.request`` per transaction (keyed by id); returns the events sent."""
    events = traffic.send_requests(producer, topic, txns, source=SOURCE)
    if flush:
        assert producer.flush(30) == 0, "requests not acknowledged"
    return events


def deployed_event(
    model_name: str, alias: str, version: str, previous: str | None, action: str
) -> dict[str, Any]:
    return make_event(
        "test",
        {
            "model_name": model_name,
            "alias": alias,
            "version": version,
            "previous_version": previous,
            "action": action,
            "reason": "test",
        },
    )


def decode(serde: AvroSerde, messages: Iterable[Message], contract: str) -> list[dict[str, Any]]:
    return [serde.decode(msg.topic() or "", msg.value(), schema_topic=contract) for msg in messages]


def end_offsets(settings: PlatformSettings, topic: str) -> list[TopicPartition]:
    """The current end of every partition of ``topic``."""
    consumer = Consumer({**settings.common_kafka_config(), "group.id": "offsets-probe"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        return [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in partitions
        ]
    finally:
        consumer.close()


def pin_group_to_end(settings: PlatformSettings, group_id: str, topic: str) -> None:
    """Commit the end offsets for a new consumer group, so it starts with what comes next."""
    consumer = Consumer(
        {
            **settings.common_kafka_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(offsets=end_offsets(settings, topic), asynchronous=False)
    finally:
        consumer.close()


def reader_from(settings: PlatformSettings, topic: str, *, isolation: str = "read_committed") -> Consumer:
    """A consumer assigned to ``topic`` from its current end (sees only what comes next)."""
    consumer = Consumer(
        {
            **settings.common_kafka_config(),
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.assign(end_offsets(settings, topic))
    return consumer
