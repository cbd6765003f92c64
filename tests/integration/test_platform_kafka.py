"""The shared Kafka plumbing against the real broker and schema registry."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import (
    EventProducer,
    Guarantee,
    Outbox,
    Record,
    RetryableError,
    StreamLoop,
    create_topic,
    delete_topics,
)
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.conftest import consume, drain

FEEDBACK = Topic.PREDICTION_FEEDBACK


def feedback(transaction_id: str, is_fraud: bool = False) -> dict[str, Any]:
    return make_event(
        "test", {"transaction_id": transaction_id, "is_fraud": is_fraud, "label_source": "simulation"}
    )


def headers_of(msg: Any) -> dict[str, bytes]:
    return {key: value for key, value in (msg.headers() or [])}


def test_avro_round_trip_through_a_real_topic(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    topic = topic_factory("roundtrip")
    producer = EventProducer(platform_settings, "test", serde)
    sent = feedback("t-roundtrip", is_fraud=True)
    partition, offset = producer.publish(topic, sent, key="t-roundtrip", schema_topic=FEEDBACK)
    assert offset >= 0 and partition == 0

    [msg] = consume(consumer_factory(topic), 1)
    assert msg.value()[0] == 0, "Confluent wire format starts with the magic byte"
    decoded = serde.decode(topic, msg.value(), schema_topic=FEEDBACK)
    assert decoded["transaction_id"] == "t-roundtrip" and decoded["is_fraud"] is True
    assert decoded["envelope"]["event_id"] == sent["envelope"]["event_id"]
    assert msg.key() == b"t-roundtrip"


def test_poison_messages_go_to_the_dead_letter_topic_and_good_ones_go_through(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source, dead = topic_factory("source"), topic_factory("dlq")
    producer = EventProducer(platform_settings, "test", serde)
    for index in range(5):
        producer.produce(source, feedback(f"good-{index}"), key=f"good-{index}", schema_topic=FEEDBACK)
    producer.produce_raw(source, b"\x00not avro at all", b"garbage", headers=[("origin", b"fuzz")])
    producer.produce(source, feedback("explodes"), key="explodes", schema_topic=FEEDBACK)
    for index in range(5, 8):
        producer.produce(source, feedback(f"good-{index}"), key=f"good-{index}", schema_topic=FEEDBACK)
    assert producer.flush() == 0

    handled: list[str] = []

    def handler(records: list[Record], _outbox: Outbox) -> None:
        for record in records:
            assert record.contract is FEEDBACK, "records carry the contract of their binding"
            if record.value["transaction_id"] == "explodes":
                raise ValueError("cannot handle this one")
        handled.extend(r.value["transaction_id"] for r in records)

    group = f"test-{uuid.uuid4().hex[:8]}"
    loop = StreamLoop(
        settings=platform_settings,
        service="test",
        group_id=group,
        inputs=[Binding.to(FEEDBACK, source)],
        handler=handler,
        serde=serde,
        producer=producer,
        dead_letter_topic=dead,
        batch_size=100,
    )
    loop.start_in_thread()
    dead_letters = consume(consumer_factory(dead), 2, timeout_s=60)
    loop.stop()
    loop.join(30)

    assert sorted(handled) == sorted(f"good-{i}" for i in range(8))
    by_key = {msg.key(): msg for msg in dead_letters}
    assert set(by_key) == {b"garbage", b"explodes"}
    garbage = headers_of(by_key[b"garbage"])
    assert by_key[b"garbage"].value() == b"\x00not avro at all", "original bytes are kept"
    assert garbage["dlq.original.topic"] == source.encode()
    assert garbage["dlq.original.partition"] == b"0"
    assert garbage["dlq.original.offset"] == b"5"
    assert garbage["dlq.stage"] == b"deserialize"
    assert garbage["dlq.error.class"] == b"SerializationError"
    assert garbage["origin"] == b"fuzz", "original headers are kept"
    explodes = headers_of(by_key[b"explodes"])
    assert explodes["dlq.stage"] == b"process"
    assert explodes["dlq.error.class"] == b"ValueError"
    assert b"cannot handle this one" in explodes["dlq.error.message"]

    # Offsets were committed after the batch: the group has nothing left to read.
    again = consumer_factory(source, **{"group.id": group})
    assert drain(again, quiet_s=3) == []


def test_retryable_failure_rewinds_instead_of_dead_lettering(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source, dead = topic_factory("retry"), topic_factory("retry-dlq")
    producer = EventProducer(platform_settings, "test", serde)
    for index in range(3):
        producer.produce(source, feedback(f"r-{index}"), schema_topic=FEEDBACK)
    producer.flush()
    attempts = {"count": 0}
    handled: list[str] = []
    done = threading.Event()

    def handler(records: list[Record], _outbox: Outbox) -> None:
        attempts["count"] += 1
        if attempts["count"] <= 2:
            raise RetryableError("dependency down")
        handled.extend(r.value["transaction_id"] for r in records)
        if len(handled) >= 3:
            done.set()

    loop = StreamLoop(
        settings=platform_settings,
        service="test",
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        inputs=[Binding.to(FEEDBACK, source)],
        handler=handler,
        serde=serde,
        producer=producer,
        dead_letter_topic=dead,
        retry_backoff_s=0.2,
    )
    loop.start_in_thread()
    assert done.wait(60), "records were not retried after the transient failure"
    loop.stop()
    loop.join(30)
    assert sorted(handled) == ["r-0", "r-1", "r-2"]
    assert attempts["count"] >= 3
    assert drain(consumer_factory(dead), quiet_s=2) == []


def test_at_least_once_outputs_of_a_failed_attempt_are_dropped_and_the_rest_confirmed(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source, output, dead = topic_factory("alo-in"), topic_factory("alo-out"), topic_factory("alo-dlq")
    producer = EventProducer(platform_settings, "test", serde)
    ids = [f"a-{index}" for index in range(10)]
    for transaction_id in ids[:5] + ["explodes"] + ids[5:]:
        producer.produce(source, feedback(transaction_id), key=transaction_id, schema_topic=FEEDBACK)
    assert producer.flush() == 0
    results_binding = Binding.to(FEEDBACK, output, key="transaction_id")

    def handler(records: list[Record], outbox: Outbox) -> None:
        for record in records:
            # Emitted before the failure: the loop must drop it with the failed attempt.
            outbox.emit(results_binding, make_event("test", record.value, cause=record.envelope))
            if record.value["transaction_id"] == "explodes":
                raise ValueError("cannot handle this one")

    group = f"test-{uuid.uuid4().hex[:8]}"
    loop = StreamLoop(
        settings=platform_settings,
        service="test",
        group_id=group,
        inputs=[Binding.to(FEEDBACK, source)],
        handler=handler,
        serde=serde,
        producer=producer,
        dead_letter_topic=dead,
        batch_size=100,
    )
    loop.start_in_thread()
    dead_letters = consume(consumer_factory(dead), 1, timeout_s=60)
    produced = consume(consumer_factory(output), len(ids), timeout_s=60)
    loop.stop()
    loop.join(30)

    assert [m.key() for m in dead_letters] == [b"explodes"]
    decoded = [serde.decode(output, m.value(), schema_topic=FEEDBACK)["transaction_id"] for m in produced]
    assert sorted(decoded) == sorted(ids)
    assert drain(consumer_factory(output), quiet_s=3)[len(ids) :] == [], "nothing from the failed attempt"
    assert drain(consumer_factory(source, **{"group.id": group}), quiet_s=3) == [], "offsets committed"
    assert loop.checkpoints >= 1


def test_aborted_transaction_is_invisible_to_read_committed_consumers(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    topic = topic_factory("txn")
    producer = EventProducer(platform_settings, "test", serde, transactional_id=f"test-{uuid.uuid4()}")
    raw = producer.raw
    raw.init_transactions(30)
    raw.begin_transaction()
    producer.produce(topic, feedback("aborted"), schema_topic=FEEDBACK)
    raw.flush(30)
    raw.abort_transaction(30)
    raw.begin_transaction()
    producer.produce(topic, feedback("committed"), schema_topic=FEEDBACK)
    raw.commit_transaction(30)

    committed = drain(consumer_factory(topic, isolation="read_committed"), quiet_s=3)
    everything = drain(consumer_factory(topic, isolation="read_uncommitted"), quiet_s=3)

    def decode(msgs: list[Any]) -> list[str]:
        return [serde.decode(topic, m.value(), schema_topic=FEEDBACK)["transaction_id"] for m in msgs]

    assert decode(committed) == ["committed"]
    assert decode(everything) == ["aborted", "committed"]


def exactly_once_loop(
    settings: PlatformSettings, serde: AvroSerde, source: str, handler: Any, **options: Any
) -> StreamLoop:
    """A started exactly-once loop on ``source`` in a fresh group, retrying after 0.2 s."""
    loop = StreamLoop(
        settings=settings,
        service="test",
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        inputs=[Binding.to(FEEDBACK, source)],
        handler=handler,
        serde=serde,
        guarantee=Guarantee.EXACTLY_ONCE,
        transactional_id=f"test-{uuid.uuid4()}",
        retry_backoff_s=0.2,
        **options,
    )
    loop.start_in_thread()
    return loop


def test_transactional_loop_commits_outputs_and_offsets_together(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source, output, dead = topic_factory("eos-in", 3), topic_factory("eos-out", 3), topic_factory("eos-dlq")
    producer = EventProducer(platform_settings, "test", serde)
    ids = [f"e-{index}" for index in range(60)]
    for transaction_id in ids:
        producer.produce(source, feedback(transaction_id), key=transaction_id, schema_topic=FEEDBACK)
    producer.produce_raw(source, b"junk", b"junk")
    producer.flush()

    failures = {"left": 2}
    results_binding = Binding.to(FEEDBACK, output, key="transaction_id")

    def transform(records: list[Record], outbox: Outbox) -> None:
        for r in records:
            outbox.emit(results_binding, make_event("test", {**r.value, "is_fraud": True}, cause=r.envelope))
        # The first two transactions fail after emitting their outputs: they must be
        # aborted and the same records consumed again, not skipped or duplicated.
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RetryableError("simulated transient failure")

    loop = exactly_once_loop(
        platform_settings, serde, source, transform, dead_letter_topic=dead, batch_size=25
    )
    group = loop.group_id
    produced = consume(consumer_factory(output), len(ids), timeout_s=90)
    dead_letters = consume(consumer_factory(dead), 1, timeout_s=30)
    loop.stop()
    loop.join(30)

    results = [serde.decode(output, m.value(), schema_topic=FEEDBACK) for m in produced]
    assert sorted(r["transaction_id"] for r in results) == sorted(ids), "each input exactly once"
    assert all(r["is_fraud"] for r in results)
    assert all(r["envelope"]["causation_id"] for r in results)
    assert [m.key() for m in dead_letters] == [b"junk"]
    assert {m.key() for m in produced} == {i.encode() for i in ids}, "keyed by the binding's key field"
    assert failures["left"] == 0
    assert drain(consumer_factory(output), quiet_s=3)[len(ids) :] == [], "no duplicates after the aborts"
    assert drain(consumer_factory(source, **{"group.id": group}), quiet_s=3) == [], "offsets committed"


def test_a_transaction_spans_several_polls_and_an_abort_replays_all_of_them(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    source, output = topic_factory("eos-span-in", 2), topic_factory("eos-span-out", 2)
    producer = EventProducer(platform_settings, "test", serde)
    ids = [f"s-{index}" for index in range(120)]
    for transaction_id in ids:
        producer.produce(source, feedback(transaction_id), key=transaction_id, schema_topic=FEEDBACK)
    producer.flush()

    results_binding = Binding.to(FEEDBACK, output, key="transaction_id")
    polls = {"handled": 0, "fail_at": 3}

    def transform(records: list[Record], outbox: Outbox) -> None:
        polls["handled"] += 1
        for r in records:
            outbox.emit(results_binding, make_event("test", r.value, cause=r.envelope))
        # The third poll fails while the transaction already holds two earlier polls'
        # outputs: all of them are aborted and consumed again, none is lost or doubled.
        if polls["handled"] == polls["fail_at"]:
            raise RetryableError("simulated transient failure inside a multi-poll transaction")

    loop = exactly_once_loop(
        platform_settings,
        serde,
        source,
        transform,
        batch_size=10,
        commit_max_records=50,
        commit_interval_s=60.0,
    )
    group = loop.group_id
    produced = consume(consumer_factory(output), len(ids), timeout_s=90)
    loop.stop()
    loop.join(30)

    results = [serde.decode(output, m.value(), schema_topic=FEEDBACK) for m in produced]
    assert sorted(r["transaction_id"] for r in results) == sorted(ids), "each input exactly once"
    assert drain(consumer_factory(output), quiet_s=3)[len(ids) :] == [], "no duplicates after the abort"
    assert drain(consumer_factory(source, **{"group.id": group}), quiet_s=3) == [], "offsets committed"
    assert loop.transactions_committed <= polls["handled"] // 2, "transactions held several polls"


def test_a_plain_confluent_client_reads_project_events_via_the_registry(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
) -> None:
    """An outside consumer needs only confluent_kafka and the registry URL."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic = topic_factory("external")
    EventProducer(platform_settings, "test", serde).publish(topic, feedback("ext-1"), schema_topic=FEEDBACK)

    registry = SchemaRegistryClient({"url": platform_settings.schema_registry_url})
    consumer = Consumer(
        {
            **platform_settings.common_kafka_config(),
            "group.id": f"ext-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        [msg] = consume(consumer, 1)
    finally:
        consumer.close()
    decoded = AvroDeserializer(registry)(msg.value(), SerializationContext(topic, MessageField.VALUE))
    assert decoded["transaction_id"] == "ext-1"

    # ...and can produce an event the project decodes, using the registered contract.
    latest = registry.get_latest_version(f"{FEEDBACK}-value")
    serializer = AvroSerializer(registry, latest.schema.schema_str, conf={"auto.register.schemas": False})
    data = serializer(feedback("ext-2"), SerializationContext(FEEDBACK, MessageField.VALUE))
    plain = Producer(platform_settings.common_kafka_config())
    plain.produce(topic, data)
    plain.flush(30)
    assert serde.decode(topic, data, schema_topic=FEEDBACK)["transaction_id"] == "ext-2"


def test_delete_topics_removes_the_topics_and_takes_a_missing_one_as_deleted(
    platform_settings: PlatformSettings, kafka: str
) -> None:
    topics = [f"test.delete.{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for topic in topics:
        create_topic(platform_settings, topic, partitions=3)
    never_created = f"test.never-created.{uuid.uuid4().hex[:10]}"

    assert delete_topics(platform_settings, [*topics, never_created]) == {}

    admin = AdminClient(platform_settings.admin_config())
    remaining = set(topics)
    for _ in range(50):  # the broker's metadata follows the controller's deletion within moments
        remaining &= set(admin.list_topics(timeout=10).topics)
        if not remaining:
            break
        time.sleep(0.2)
    assert not remaining, f"still on the broker after delete_topics: {sorted(remaining)}"
