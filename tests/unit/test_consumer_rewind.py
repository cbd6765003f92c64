"""Rewinding to the committed offsets after an aborted transaction, while the coordinator is away.

A broker that dies takes the group coordinator with it for a while: the rewind must wait for
it (skipping it would lose the aborted records), and still fail at once on a real error.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from mlops_platform.kafka import consumer as consumer_module
from mlops_platform.kafka.consumer import GroupConsumer
from mlops_platform.settings import PlatformSettings


class FlakyCoordinator:
    """The consumer's Kafka side: ``committed`` fails with ``errors`` first, then answers."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", 0), TopicPartition("t", 1)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(tp.topic, tp.partition, 40 + tp.partition) for tp in partitions]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def close(self) -> None:
        pass


def group_consumer(kafka: Any, monkeypatch: pytest.MonkeyPatch) -> GroupConsumer:
    monkeypatch.setattr(consumer_module.time, "sleep", lambda _s: None)
    consumer = GroupConsumer(
        PlatformSettings(kafka_bootstrap_servers="127.0.0.1:1"),
        service="test",
        group_id="g",
        inputs=[],
        serde=None,  # type: ignore[arg-type]  # never decodes here
        batch_size=10,
        poll_timeout_s=0.1,
    )
    consumer.kafka.close()
    consumer.kafka = kafka
    return consumer


def test_the_rewind_waits_for_the_coordinator_and_then_seeks_to_the_committed_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka = FlakyCoordinator(
        [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TRANSPORT]
    )
    group_consumer(kafka, monkeypatch).rewind_to_committed()
    assert kafka.calls == 4
    assert kafka.seeks == [("t", 0, 40), ("t", 1, 41)]


def test_a_real_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = FlakyCoordinator([KafkaError.GROUP_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        group_consumer(kafka, monkeypatch).rewind_to_committed()
    assert kafka.calls == 1 and kafka.seeks == []
