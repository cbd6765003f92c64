"""The latency floor of an exactly-once stage: one Kafka transaction cycle, nothing else.

An exactly-once consume → produce stage commits its outputs and its input offsets in one
transaction: begin, produce, ``send_offsets_to_transaction`` (AddOffsetsToTxn and
TxnOffsetCommit), ``commit_transaction`` (AddPartitionsToTxn, the produce acknowledged,
EndTxn), after which the coordinator writes the commit markers that make the outputs
readable to ``read_committed`` consumers. librdkafka speaks transactions v1 (no KIP-890
shortcuts), so these round trips run one after another whatever the stage computes.

This module runs those cycles back to back with one record each, in one process, against
the same broker the pipeline uses, and measures the cycle and the time from a cycle's
start until its record is readable. An event that reaches a stage waits for the cycle in
progress and then rides the next one, so a stage's median latency cannot be much below
about one and a half cycles: this is the floor the pipeline's fixed-rate latencies are
read against.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from constellation.bench_ingest import percentiles
from mlops_platform.settings import PlatformSettings


def transaction_floor(settings: PlatformSettings, topic: str, *, cycles: int = 1_000) -> dict[str, Any]:
    """Back-to-back single-record transactions on ``topic``: cycle and visibility latency (ms)."""
    group = f"bench-txn-{uuid.uuid4().hex[:8]}"
    producer = Producer(
        settings.producer_config(
            "bench-txn",
            **{
                "transactional.id": group,
                "linger.ms": 0,
                # The predictor's own settings (see its producer_retry_backoff_* settings).
                "retry.backoff.ms": 5,
                "retry.backoff.max.ms": 20,
            },
        )
    )
    # A group member whose metadata the offsets are committed with, as in a real stage.
    member = Consumer(settings.consumer_config(group, "bench-txn-member"))
    member.subscribe([topic])
    reader = Consumer(
        settings.consumer_config(f"{group}-reader", "bench-txn-reader", **{"fetch.wait.max.ms": 10})
    )
    partitions = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    reader.assign(
        [
            TopicPartition(topic, p, reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in partitions
        ]
    )
    started: dict[bytes, float] = {}
    readable: dict[bytes, float] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            msg = reader.poll(0.05)
            key = None if msg is None or msg.error() is not None else msg.key()
            if key is None:
                continue
            with lock:
                readable.setdefault(key, time.perf_counter())

    reading = threading.Thread(target=read, name="bench-txn-reader", daemon=True)
    reading.start()
    try:
        producer.init_transactions(30)
        member.poll(1.0)  # joins the group (the offsets below need its metadata)
        metadata = member.consumer_group_metadata()
        cycle_s: list[float] = []
        for index in range(cycles):
            key = f"txn-{index}".encode()
            begun = time.perf_counter()
            producer.begin_transaction()
            producer.produce(topic, key=key, value=b"\0" * 256)
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, index % len(partitions), index)], metadata, 30
            )
            producer.commit_transaction(30)
            with lock:
                started[key] = begun
            cycle_s.append(time.perf_counter() - begun)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(readable.keys() & started.keys()) == len(started):
                    break
            time.sleep(0.05)
    finally:
        stop.set()
        reading.join(timeout=5)
        reader.close()
        member.close()
    with lock:
        visible_s = [readable[k] - started[k] for k in started if k in readable]
    warm = len(cycle_s) // 10  # connection set-up and the first coordinator lookups
    return {
        "cycles": len(cycle_s),
        "cycle_ms": percentiles(cycle_s[warm:]),
        "readable_ms": percentiles(visible_s[warm:]),
        "unreadable": len(started) - len(visible_s),
    }
