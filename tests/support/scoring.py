"""Transactions, requests and Kafka helpers for the fraud scoring tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from fraud_model.contract import transaction_payload
from fraud_model.generator import TransactionGenerator
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

REQUEST = Topic.PREDICTION_REQUEST.value
COMPLETED = Topic.PREDICTION_COMPLETED.value
DEPLOYED = Topic.MODEL_DEPLOYED.value


def transactions(count: int, seed: int = 7, prefix: str | None = None) -> list[dict[str, Any]]:
    """Generator transactions (contract fields only) with fresh, unique transaction ids."""
    tag = prefix or f"t-{uuid.uuid4().hex[:8]}"
    rows = TransactionGenerator(seed=seed).generate(count)
    return [{**transaction_payload(row), "transaction_id": f"{tag}-{i}"} for i, row in enumerate(rows)]


def request_event(transaction: dict[str, Any]) -> dict[str, Any]:
    return make_event("test", transaction)


def send_requests(
    producer: EventProducer, topic: str, txns: Iterable[dict[str, Any]], *, flush: bool = True
) -> list[dict[str, Any]]:
    """Publish one ``prediction.request`` per transaction (keyed by id); returns the events sent."""
    schema_topic = None if topic == REQUEST else REQUEST
    events = []
    for txn in txns:
        event = request_event(txn)
        producer.produce(topic, event, key=txn["transaction_id"], schema_topic=schema_topic)
        events.append(event)
        producer.poll(0)
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
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "offsets-probe"})
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
            "bootstrap.servers": settings.kafka_bootstrap_servers,
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
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.assign(end_offsets(settings, topic))
    return consumer
