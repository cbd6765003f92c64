"""Cluster administration and reading a topic range: probes, topic creation and deletion, replay helpers."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mlops_platform.contracts import Catalogue, load_catalogue
from mlops_platform.errors import KafkaUnavailable
from mlops_platform.settings import PlatformSettings


def kafka_reachable(settings: PlatformSettings, timeout_s: float = 2.0) -> bool:
    """True when the cluster answers a metadata request in time."""
    try:
        AdminClient(settings.admin_config()).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def group_members(admin: AdminClient, group: str, timeout_s: float = 10.0) -> int:
    """How many members the consumer group has now.

    Raises ``KafkaException`` when the broker refuses, ``TimeoutError`` when it does not answer in time.
    """
    described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
    return len(described.result(timeout=timeout_s).members)


def placement(wanted_replicas: int, brokers: int) -> tuple[int, int]:
    """``(replication factor, min.insync.replicas)`` of a catalogue topic on a cluster of ``brokers``.

    The catalogue's replication factor is what a topic gets on a cluster large enough; a
    smaller cluster (one broker on a laptop) gives each topic as many replicas as it has
    brokers. With three or more replicas one may be lost without refusing ``acks=all``
    writes (``min.insync.replicas`` = replicas - 1, at most 2); fewer replicas need only one.
    """
    if wanted_replicas < 1 or brokers < 1:
        raise ValueError(f"replicas and brokers must be positive, got {wanted_replicas} and {brokers}")
    replicas = min(wanted_replicas, brokers)
    return replicas, max(1, min(replicas - 1, 2))


def ensure_topics(
    settings: PlatformSettings, catalogue: Catalogue, names: Sequence[str] | None = None
) -> list[str]:
    """Create the catalogue's topics that do not exist yet; returns the created names.

    Replication follows the cluster (see :func:`placement`): the catalogue's factor, or the
    number of brokers when there are fewer.
    """
    admin = AdminClient(settings.admin_config())
    metadata = admin.list_topics(timeout=settings.request_timeout_s * 2)
    existing = set(metadata.topics)
    brokers = len(metadata.brokers)
    wanted = [spec for spec in catalogue.topics if names is None or spec.name in names]
    new = []
    for spec in wanted:
        if spec.name in existing:
            continue
        replicas, min_insync = placement(spec.replication_factor, brokers)
        new.append(
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replicas,
                config={"min.insync.replicas": str(min_insync), **spec.kafka_config()},
            )
        )
    return _create(admin, new, settings.request_timeout_s * 2)


def create_topic(
    settings: PlatformSettings, name: str, partitions: int = 1, config: Mapping[str, str] | None = None
) -> bool:
    """Create one topic (idempotent; True when it was created here).

    Replicated like the catalogue's topics on this cluster (see :func:`placement`): one
    replica on a laptop's single broker, three with ``min.insync.replicas`` 2 on a cluster.
    ``config`` may override ``min.insync.replicas`` like any other topic setting.
    """
    admin = AdminClient(settings.admin_config())
    timeout_s = settings.request_timeout_s * 2
    metadata = admin.list_topics(timeout=timeout_s)
    if name in metadata.topics:
        return False
    catalogue = load_catalogue(settings.schemas_dir)
    wanted = max((spec.replication_factor for spec in catalogue.topics), default=1)
    replicas, min_insync = placement(wanted, len(metadata.brokers))
    topic_config = {"min.insync.replicas": str(min_insync), **dict(config or {})}
    topic = NewTopic(name, num_partitions=partitions, replication_factor=replicas, config=topic_config)
    return bool(_create(admin, [topic], timeout_s))


def delete_topics(
    settings: PlatformSettings, topics: Sequence[str], timeout_s: float = 30.0
) -> dict[str, str]:
    """Delete ``topics`` and wait for the cluster's answers; returns ``{topic: reason}`` of those left.

    A topic that does not exist counts as deleted. The admin client lives until every
    answer is in: one dropped right after ``AdminClient.delete_topics()`` is destroyed
    before its request leaves, every future fails with ``_DESTROY`` and the topics stay.
    """
    if not topics:
        return {}
    admin = AdminClient(settings.admin_config())
    futures = admin.delete_topics(list(topics), operation_timeout=timeout_s, request_timeout=timeout_s)
    left: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                left[name] = exc.args[0].str()
        except TimeoutError:
            left[name] = f"no answer within {timeout_s:g}s"
    return left


def _create(admin: AdminClient, topics: list[NewTopic], timeout_s: float) -> list[str]:
    created: list[str] = []
    if not topics:
        return created
    for name, future in admin.create_topics(topics, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def offsets_since(
    consumer: Consumer, topic: str, since_ms: int, timeout_s: float
) -> dict[int, tuple[int, int]]:
    """Per partition, the ``(start, end)`` offsets of the records from ``since_ms`` to the current end.

    Partitions with nothing in that range are left out. ``end`` is the high watermark
    at the time of the call, so a reader stops there even while producers carry on.
    """
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise KafkaUnavailable(f"cannot read {topic}: {metadata.error if metadata else 'no such topic'}")
    partitions = sorted(metadata.partitions)
    starts = {
        tp.partition: tp.offset
        for tp in consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=timeout_s
        )
    }
    ranges: dict[int, tuple[int, int]] = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        start = starts.get(partition, -1)
        start = high if start < 0 else max(start, low)
        if start < high:
            ranges[partition] = (start, high)
    return ranges


def consume_to_end(
    consumer: Consumer, topic: str, ends: Mapping[int, int], timeout_s: float, batch_size: int = 500
) -> Iterator[Message]:
    """Yield the records of the assigned partitions of ``topic`` up to each partition's end offset.

    The consumer must be assigned (not subscribed) with ``enable.partition.eof`` on.
    Raises :class:`KafkaUnavailable` when the ends are not reached within ``timeout_s``.
    """
    remaining = dict(ends)
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"reading {topic} did not reach the end within {timeout_s:.0f}s: {remaining}"
            )
        for msg in consumer.consume(num_messages=batch_size, timeout=0.5):
            partition = msg.partition() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.pop(partition, None)
                elif err.fatal():
                    raise KafkaException(err)
                continue
            offset = msg.offset() or 0
            if partition not in remaining or offset >= remaining[partition]:
                remaining.pop(partition, None)
                continue
            yield msg
            if offset + 1 >= remaining.get(partition, 0):
                remaining.pop(partition, None)
        # Transaction markers take offsets without being delivered: trust the position too.
        if remaining:
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= remaining.get(tp.partition, 0):
                    remaining.pop(tp.partition, None)
