"""Checkpointed handler state of exactly-once stream loops, against the real broker.

A counting handler (its state: how often it saw each id) runs in a stateful loop; aborted
transactions, failing batches and a restart must leave every id counted exactly once.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource

from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer, Guarantee, Outbox, Record, RetryableError, StreamLoop
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.processes import wait_until
from tests.support.topics import consume, drain

FEEDBACK = Topic.PREDICTION_FEEDBACK


class CountingHandler:
    """Counts the records it saw per transaction id; ``fail`` decides when a call raises."""

    def __init__(self, fail: Callable[[list[Record]], Exception | None] = lambda _records: None) -> None:
        self.counts: Counter[str] = Counter()
        self.fail = fail
        self.restores = 0
        self.lock = threading.Lock()

    def handle(self, records: list[Record], outbox: Outbox) -> None:
        with self.lock:
            for record in records:
                self.counts[record.value["transaction_id"]] += 1
            error = self.fail(records)
            if error is not None:
                raise error  # after the records were absorbed: only a restore undoes that

    def snapshot(self) -> bytes:
        with self.lock:
            return json.dumps(dict(self.counts)).encode()

    def restore(self, snapshot: bytes | None) -> None:
        with self.lock:
            self.restores += 1
            self.counts = Counter(json.loads(snapshot) if snapshot else {})

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())


def publish(settings: PlatformSettings, serde: AvroSerde, topic: str, ids: list[str]) -> None:
    producer = EventProducer(settings, "test", serde)
    for txn in ids:
        event = make_event("test", {"transaction_id": txn, "is_fraud": False, "label_source": "simulation"})
        producer.produce(topic, event, key=txn, schema_topic=FEEDBACK)
    assert producer.flush() == 0


def stateful_loop(
    settings: PlatformSettings,
    serde: AvroSerde,
    source: str,
    handler: CountingHandler,
    *,
    group: str,
    instance: str,
    state_topic: str,
    **options: Any,
) -> StreamLoop:
    loop = StreamLoop(
        settings=settings,
        service="test",
        group_id=group,
        inputs=[Binding.to(FEEDBACK, source)],
        handler=handler.handle,
        serde=serde,
        guarantee=Guarantee.EXACTLY_ONCE,
        transactional_id=f"test-{instance}",
        retry_backoff_s=0.2,
        state=handler,
        state_topic=state_topic,
        state_interval_s=0.5,
        instance_id=instance,
        **options,
    )
    loop.start_in_thread()
    return loop


def test_abort_restores_the_state_and_a_restart_resumes_from_the_committed_snapshot(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source = topic_factory("state-in", 2)
    state_topic = f"test.state.{uuid.uuid4().hex[:10]}"  # created by the loop
    group, instance = f"test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    ids = [f"s-{i}" for i in range(300)]
    publish(platform_settings, serde, source, ids[:200])

    calls = {"n": 0}

    def transient_on_third_call(_records: list[Record]) -> Exception | None:
        calls["n"] += 1
        return RetryableError("simulated outage") if calls["n"] == 3 else None

    first = CountingHandler(transient_on_third_call)
    loop = stateful_loop(
        platform_settings,
        serde,
        source,
        first,
        group=group,
        instance=instance,
        state_topic=state_topic,
        batch_size=20,
    )
    wait_until(lambda: loop.transactions_committed > 0 and first.total() == 200, 90, "200 records counted")
    loop.stop()
    loop.join(30)
    assert loop.error is None
    assert calls["n"] > 3 and first.restores >= 2  # the start and the abort
    assert set(first.counts) == set(ids[:200]) and set(first.counts.values()) == {1}

    admin = AdminClient(platform_settings.admin_config())
    resource = ConfigResource("topic", state_topic)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"

    # A restart of the same instance: the committed counts come back, the rest is consumed once.
    publish(platform_settings, serde, source, ids[200:])
    second = CountingHandler()
    loop = stateful_loop(
        platform_settings,
        serde,
        source,
        second,
        group=group,
        instance=instance,
        state_topic=state_topic,
        batch_size=20,
    )
    wait_until(lambda: second.total() == 300, 90, "300 records counted after the restart")
    loop.stop()
    loop.join(30)
    assert loop.error is None
    assert set(second.counts) == set(ids) and set(second.counts.values()) == {1}
    assert drain(consumer_factory(source, **{"group.id": group}), quiet_s=3) == [], "offsets committed"

    # Another instance of the group has its own key: it starts empty.
    other = CountingHandler()
    loop = stateful_loop(
        platform_settings,
        serde,
        source,
        other,
        group=f"test-{uuid.uuid4().hex[:8]}",
        instance=uuid.uuid4().hex[:8],
        state_topic=state_topic,
        batch_size=50,
    )
    wait_until(lambda: other.total() == 300, 90, "a fresh group counts everything once")
    loop.stop()
    loop.join(30)
    assert set(other.counts.values()) == {1}


def test_a_failing_batch_is_restored_and_handled_record_by_record(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source, dead = topic_factory("state-poison-in"), topic_factory("state-poison-dlq")
    ids = [f"p-{i}" for i in range(60)]
    publish(platform_settings, serde, source, ids)

    def poison(records: list[Record]) -> Exception | None:
        bad = any(r.value["transaction_id"] == "p-33" for r in records)
        return RuntimeError("cannot handle p-33") if bad else None

    handler = CountingHandler(poison)
    loop = stateful_loop(
        platform_settings,
        serde,
        source,
        handler,
        group=f"test-{uuid.uuid4().hex[:8]}",
        instance=uuid.uuid4().hex[:8],
        state_topic=f"test.state.{uuid.uuid4().hex[:10]}",
        batch_size=25,
        dead_letter_topic=dead,
    )
    dead_letters = consume(consumer_factory(dead), 1, timeout_s=60)
    wait_until(lambda: handler.total() >= 60, 60, "every record handled")
    loop.stop()
    loop.join(30)
    assert [m.key() for m in dead_letters] == [b"p-33"]
    # The poison record itself was absorbed before it raised (the handler's own business);
    # every other record was counted once although its first batch failed.
    assert {txn: n for txn, n in handler.counts.items() if n != 1} == {}
    assert set(handler.counts) == set(ids)
