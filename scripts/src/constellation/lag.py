"""Consumer-group lag read from the outside: committed offsets against the partitions' ends.

Used by the soak run and the chaos tests; a service's own view is its ``/metrics`` page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from mlops_platform.settings import PlatformSettings


def group_offsets(
    settings: PlatformSettings, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], tuple[int | None, int]]:
    """Per partition of ``topics``: consumer group ``group``'s committed offset (``None``: never
    committed) and the partition's end (high watermark).

    The probe only reads offsets: it never joins the group, so it does not disturb its members.
    On a topic written in transactions the end includes the last commit marker, which no
    consumer ever reads: a group that is caught up there shows 1 per partition.
    """
    probe = Consumer(
        {
            **settings.common_kafka_config(),
            "group.id": group,
            "client.id": f"lag-probe-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(probe.list_topics(topic, timeout=10).topics[topic].partitions)
        ]
        found: dict[tuple[str, int], tuple[int | None, int]] = {}
        for tp in probe.committed(partitions, timeout=10):
            _low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            found[(tp.topic, tp.partition)] = (tp.offset if tp.offset >= 0 else None, int(high))
        return found
    finally:
        probe.close()


def group_lag(settings: PlatformSettings, group: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Records of ``topics`` not yet committed by consumer group ``group``, per partition.

    A partition the group never committed counts in full (from offset 0; retention aside).
    """
    return {
        tp: max(high - (committed or 0), 0)
        for tp, (committed, high) in group_offsets(settings, group, topics).items()
    }


def total_lag(settings: PlatformSettings, group: str, topics: Iterable[str]) -> int:
    """The sum of :func:`group_lag` over every partition."""
    return sum(group_lag(settings, group, topics).values())
