"""Events produced while handling a batch, acknowledged before the batch's offsets commit.

The handler produces without waiting; at the end of the batch :meth:`Outbox.settle`
waits for the broker's acknowledgements. A delivery failure keeps the event for the
next batch and raises :class:`~mlops_platform.kafka.RetryableError`, so the consumer
loop does not commit past a batch whose events were not stored (the detector skips the
records it already processed when the batch comes again).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message

from mlops_platform.kafka import EventProducer, RetryableError
from mlops_platform.logs import get_logger

log = get_logger(__name__)


class Outbox:
    def __init__(self, producer: EventProducer, schema_topics: Mapping[str, str]) -> None:
        self.producer = producer
        self.schema_topics = dict(schema_topics)
        self._failed: list[tuple[str, dict[str, Any], str | None]] = []
        self._lock = threading.Lock()
        self.in_flight = 0

    def produce(self, topic: str, event: dict[str, Any], key: str | None) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with self._lock:
                self.in_flight -= 1
                if err is not None:
                    log.warning("event_delivery_failed", topic=topic, error=str(err))
                    self._failed.append((topic, event, key))

        with self._lock:
            self.in_flight += 1
        self.producer.produce(
            topic, event, key, on_delivery=delivered, schema_topic=self.schema_topics.get(topic)
        )

    def resend_failed(self) -> None:
        with self._lock:
            failed, self._failed = self._failed, []
        for topic, event, key in failed:
            self.produce(topic, event, key)

    def settle(self, timeout_s: float | None = None) -> None:
        """Wait for acknowledgements; raise ``RetryableError`` if any event is not stored."""
        if self.in_flight == 0 and not self._failed:
            return
        remaining = self.producer.flush(timeout_s)
        with self._lock:
            failed = len(self._failed)
        if remaining or failed:
            raise RetryableError(f"events not acknowledged: {remaining} in flight, {failed} failed")
