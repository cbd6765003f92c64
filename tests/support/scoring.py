"""Transactions, requests and Kafka helpers for the fraud scoring tests.

Transactions and request events come from the one traffic driver (``constellation.traffic``),
so the tests send what the demo and the benchmark send.

Predictor processes on private topics (:func:`start_predictor`), a background
:class:`Streamer` of requests, and the exactly-once check of what came out are shared by
the predictor's integration tests.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Message, TopicPartition

from constellation import traffic
from constellation.traffic import transactions as transactions  # re-exported for the tests
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.processes import connection_env
from tests.support.topics import consume, drain

if TYPE_CHECKING:
    from tests.support.processes import ServiceLauncher, ServiceProcess

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


def pin_group_to_end(settings: PlatformSettings, group_id: str, topic: str) -> list[TopicPartition]:
    """Commit the end offsets for a new consumer group, so it starts with what comes next.

    Returns the committed offsets: where the group's first records are.
    """
    consumer = Consumer(
        {
            **settings.common_kafka_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        offsets = end_offsets(settings, topic)
        consumer.commit(offsets=offsets, asynchronous=False)
        return offsets
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


# --------------------------------------------------------------------------- predictor processes


@dataclass(frozen=True)
class Topics:
    """A predictor's topics in a test (private ones carrying the catalogue contracts)."""

    request: str
    completed: str
    deployed: str
    dead_letters: str


def predictor_env(
    settings: PlatformSettings, topics: Topics, model_name: str, **extra: str
) -> dict[str, str]:
    """A predictor instance's environment: its own group and instance id unless ``extra`` sets them."""
    return {
        **connection_env(settings),
        "PREDICTOR_MODEL_NAME": model_name,
        "PREDICTOR_REQUEST_TOPIC": topics.request,
        "PREDICTOR_COMPLETED_TOPIC": topics.completed,
        "PREDICTOR_MODEL_EVENTS_TOPIC": topics.deployed,
        "PREDICTOR_DEAD_LETTER_TOPIC": topics.dead_letters,
        "PREDICTOR_GROUP_ID": f"test-predictor-{uuid.uuid4().hex[:8]}",
        "PREDICTOR_INSTANCE_ID": f"test-{uuid.uuid4().hex[:8]}",
        "PREDICTOR_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }


def start_predictor(
    launcher: ServiceLauncher,
    settings: PlatformSettings,
    topics: Topics,
    model_name: str,
    wait_for: str | None = "/ready",
    **extra: str,
) -> ServiceProcess:
    """Start ``python -m predictor`` on ``topics`` (waits for ``wait_for`` to answer 200)."""
    return launcher.start(
        "predictor", "PREDICTOR_", predictor_env(settings, topics, model_name, **extra), wait_for=wait_for
    )


def read_results(
    consumer: Consumer, serde: AvroSerde, count: int, timeout_s: float = 180
) -> list[dict[str, Any]]:
    """``count`` predictions, then whatever else arrives until the topic is quiet."""
    messages = consume(consumer, count, timeout_s=timeout_s)
    messages += drain(consumer, quiet_s=3)
    results = decode(serde, messages, COMPLETED)
    for msg, result in zip(messages, results, strict=True):
        result["_partition"] = msg.partition()
        result["_key"] = msg.key()
    return results


def assert_exactly_once(results: list[dict[str, Any]], sent_ids: list[str]) -> None:
    """Every sent transaction scored once: none twice, none missing, nothing else."""
    counts = Counter(r["transaction_id"] for r in results)
    duplicates = {tid: n for tid, n in counts.items() if n > 1}
    missing = set(sent_ids) - set(counts)
    unexpected = set(counts) - set(sent_ids)
    assert not duplicates, (
        f"{len(duplicates)} transactions scored more than once, e.g. {list(duplicates)[:5]}"
    )
    assert not missing, f"{len(missing)} transactions never scored, e.g. {sorted(missing)[:5]}"
    assert not unexpected, f"unexpected predictions: {sorted(unexpected)[:5]}"


class Streamer:
    """Publishes requests in the background at a modest pace until stopped."""

    def __init__(self, producer: EventProducer, topic: str, per_tick: int = 20, tick_s: float = 0.05) -> None:
        self.producer, self.topic, self.per_tick, self.tick_s = producer, topic, per_tick, tick_s
        # (transaction id, wall time just before it was produced): a request whose send began
        # after a moment was certainly written after it; its acknowledgement time says nothing
        # of when the broker already had it (the flush may return well after the write).
        self.sent: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Streamer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=60)
        if self.error is not None:
            raise self.error
        return [tid for tid, _ in self.sent]

    def _run(self) -> None:
        try:
            tick = 0
            while not self._stop.is_set():
                batch = transactions(self.per_tick, seed=tick, prefix=f"s{tick}-{uuid.uuid4().hex[:6]}")
                sending = time.time()
                send_requests(self.producer, self.topic, batch)
                self.sent.extend((t["transaction_id"], sending) for t in batch)
                tick += 1
                self._stop.wait(self.tick_s)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
