"""The latency floor of an exactly-once stage: one Kafka transaction cycle, nothing else.

An exactly-once consume → produce stage commits its outputs and its input offsets in one
transaction: begin, produce (AddPartitionsToTxn, the produce acknowledged),
``send_offsets_to_transaction`` (AddOffsetsToTxn and TxnOffsetCommit),
``commit_transaction`` (EndTxn), after which the coordinator writes the commit markers that
make the outputs readable to ``read_committed`` consumers. librdkafka speaks transactions v1
(no KIP-890 shortcuts), so these round trips cost the same whatever the stage computes.
As in the predictor's stream loop, ``transactional_producers`` producers take turns, and a
single one sends the offsets before it produces (the coordinator refuses a transactional
id's next transaction while it completes the previous commit; librdkafka retries a refused
AddOffsetsToTxn after ``retry.backoff.ms``, a refused AddPartitionsToTxn after a fixed 20 ms).

This module runs those cycles back to back with one record each, in one process, against
the same broker the pipeline uses, and measures the cycle and the time from a cycle's
start until its record is readable. An event that reaches a stage waits for the cycle in
progress and then rides the next one, so a stage's median latency cannot be much below
about one and a half cycles: this is the floor the pipeline's fixed-rate latencies are
read against.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer, TopicPartition

from constellation.bench_ingest import percentiles
from mlops_platform.settings import PlatformSettings
from predictor.config import Settings as PredictorSettings

if TYPE_CHECKING:
    from constellation.bench import Collector


def transaction_floor(
    settings: PlatformSettings, topic: str, collector: Collector, *, cycles: int = 1_000
) -> dict[str, Any]:
    """Back-to-back single-record transactions on ``topic``: cycle and visibility latency (ms).

    ``collector`` reads ``topic`` (read_committed) and records when each record became readable.
    """
    group = f"bench-txn-{uuid.uuid4().hex[:8]}"
    predictor = PredictorSettings()
    producers = [
        Producer(
            settings.producer_config(
                "bench-txn",
                **{
                    "transactional.id": f"{group}-{turn}",
                    "linger.ms": 0,
                    # The predictor's own transactional producer settings.
                    "retry.backoff.ms": predictor.producer_retry_backoff_ms,
                    "retry.backoff.max.ms": predictor.producer_retry_backoff_max_ms,
                },
            )
        )
        for turn in range(predictor.transactional_producers)
    ]
    offsets_first = len(producers) == 1
    # A group member whose metadata the offsets are committed with, as in a real stage.
    member = Consumer(settings.consumer_config(group, "bench-txn-member"))
    member.subscribe([topic])
    partitions = len(member.list_topics(topic, timeout=10).topics[topic].partitions)
    keys: list[bytes] = []
    cycle_s: list[float] = []
    try:
        for producer in producers:
            producer.init_transactions(30)
        member.poll(1.0)  # joins the group (the offsets below need its metadata)
        metadata = member.consumer_group_metadata()
        for index in range(cycles):
            key = f"txn-{index}".encode()
            offsets = [TopicPartition(topic, index % partitions, index)]
            producer = producers[index % len(producers)]
            begun = time.time()
            collector.expect(key, begun)
            producer.begin_transaction()
            if offsets_first:
                producer.send_offsets_to_transaction(offsets, metadata, 30)
            producer.produce(topic, key=key, value=b"\0" * 256)
            if not offsets_first:
                producer.send_offsets_to_transaction(offsets, metadata, 30)
            producer.commit_transaction(30)
            cycle_s.append(time.time() - begun)
            keys.append(key)
        readable = collector.wait_for(keys, 30)
    finally:
        member.close()
    visible_s = [collector.arrivals[k] - collector.expected[k] for k in keys if k in collector.arrivals]
    warm = len(cycle_s) // 10  # connection set-up and the first coordinator lookups
    return {
        "cycles": len(cycle_s),
        "cycle_ms": percentiles(cycle_s[warm:]),
        "readable_ms": percentiles(visible_s[warm:]),
        "unreadable": len(keys) - readable,
        "producers": len(producers),
    }
