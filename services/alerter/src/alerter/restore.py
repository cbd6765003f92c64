"""Rebuild the alert state after a restart by replaying the alerts topic.

The alerter keeps its state in memory; the alerts topic is its durable log (alerts,
resolutions and acknowledgements all are records on it). At start, before the
consumer loop runs, the records of the last ``restore_lookback_s`` seconds that the
consumer group has already committed are fed to the engine with ``replay=True``:
open alerts, dedup/cooldown windows and acknowledgements come back, and nothing is
sent. The consumer loop then continues from the committed offset as usual, so only
records that were never committed are processed (and delivered) again.

A consumer group without committed offsets (first deployment, or a new group) does not
deliver the whole retained topic: the window is replayed the same way, the alerts
still open and unacknowledged in it are announced once, and the group's offsets are
set to where the replay ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from alerter.engine import AlertEngine, DeliveryJob
from alerter.models import AlertEvent
from mlops_platform.bindings import Binding
from mlops_platform.errors import KafkaUnavailable, PlatformError
from mlops_platform.kafka import consume_to_end
from mlops_platform.logs import get_logger
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

log = get_logger(__name__)


@dataclass
class RestoreResult:
    replayed: int = 0
    skipped: int = 0
    fresh_group: bool = False
    escalations_settled: int = 0
    announced: list[DeliveryJob] = field(default_factory=list)
    complete: bool = True


def restore_state(
    engine: AlertEngine,
    *,
    settings: PlatformSettings,
    serde: AvroSerde,
    binding: Binding,
    group_id: str,
    client_id: str,
    lookback_s: float,
    timeout_s: float,
) -> RestoreResult:
    """Replay the committed part of the last ``lookback_s`` seconds of the bound topic into ``engine``."""
    result = RestoreResult()
    if lookback_s <= 0:
        return result
    topic = binding.topic
    request_timeout = settings.request_timeout_s * 2
    consumer = Consumer(
        settings.consumer_config(group_id, client_id=client_id, **{"enable.partition.eof": True})
    )
    try:
        metadata = consumer.list_topics(topic, timeout=request_timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            log.info("restore_skipped_no_topic", topic=topic)
            return result
        partitions = sorted(metadata.partitions)
        committed = {
            tp.partition: tp.offset
            for tp in consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=request_timeout
            )
        }
        since_ms = int((time.time() - lookback_s) * 1000)
        starts = {
            tp.partition: tp.offset
            for tp in consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], timeout=request_timeout
            )
        }
        ends: dict[int, int] = {}
        fresh: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=request_timeout)
            end = committed.get(p, -1)
            if end < 0:  # nothing committed: this group never ran here
                end = high
                fresh[p] = high
            start = starts.get(p, -1)
            start = end if start < 0 else max(start, low)
            if start < end:
                ends[p] = end
                starts[p] = start
        result.fresh_group = bool(fresh) and len(fresh) == len(partitions)
        if ends:
            consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
            result.complete = _replay(consumer, engine, serde, binding, ends, timeout_s, result)
        if fresh and any(fresh.values()):
            try:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, offset) for p, offset in fresh.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:
                log.warning("restore_commit_failed", error=str(exc))
    except (KafkaException, PlatformError) as exc:
        result.complete = False
        log.warning("restore_failed", error=str(exc))
    finally:
        consumer.close()
    result.escalations_settled = engine.settle_after_replay()
    if result.fresh_group:
        result.announced = engine.announce_open()
    log.info(
        "state_restored",
        topic=topic,
        group=group_id,
        replayed=result.replayed,
        skipped=result.skipped,
        fresh_group=result.fresh_group,
        escalations_settled=result.escalations_settled,
        announced=len(result.announced),
        complete=result.complete,
        **engine.stats(),
    )
    return result


def _replay(
    consumer: Consumer,
    engine: AlertEngine,
    serde: AvroSerde,
    binding: Binding,
    ends: dict[int, int],
    timeout_s: float,
    result: RestoreResult,
) -> bool:
    try:
        for msg in consume_to_end(consumer, binding.topic, ends, timeout_s):
            try:
                value = serde.decode(binding.topic, msg.value(), schema_topic=binding.schema_topic)
                engine.process(AlertEvent.from_value(value, timestamp_ms=msg.timestamp()[1]), replay=True)
                result.replayed += 1
            except PlatformError as exc:
                result.skipped += 1
                log.warning(
                    "restore_record_skipped", partition=msg.partition(), offset=msg.offset(), error=str(exc)
                )
    except KafkaUnavailable as exc:
        log.warning("restore_incomplete", error=str(exc), timeout_s=timeout_s)
        return False
    return True
