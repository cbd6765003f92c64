"""The recommender's committed offsets on input written by a transactional producer.

Every transaction leaves a commit marker in each partition it wrote to: an offset that is
never delivered. The recommender (``python -m recommender`` with a private app id on
private topics) is fed many one-record transactions and, half way, one aborted transaction;
once it has processed them all, its consumer group's committed offset on every partition of
the input must reach the log end offset (past the last marker), the lag it reports must come
down to zero with it, and the aborted records must never have been consumed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition

from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from recsys_data import load_catalogue
from tests.support.processes import ServiceLauncher, ServiceProcess, wait_until
from tests.support.recommender import create_topics, delete_run, new_run, recommender_env
from tests.support.scoring import end_offsets

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
PROCESS_TIMEOUT_S = 120.0
COMMIT_TIMEOUT_S = 60.0
TRANSACTIONS = 300  # one record each: about a hundred markers per partition
ABORTED = 6  # records of the one aborted transaction


@dataclass
class Run:
    app_id: str
    topics: dict[Topic, str]
    service: ServiceProcess


@pytest.fixture
def run(
    platform_settings: PlatformSettings,
    kafka: str,
    tmp_path_factory: pytest.TempPathFactory,
    service_launcher: ServiceLauncher,
) -> Iterator[Run]:
    app_id, topics = new_run()
    create_topics(platform_settings, topics)
    service: ServiceProcess | None = None
    try:
        service = service_launcher.start(
            "recommender",
            "RECOMMENDER_",
            recommender_env(app_id, topics, tmp_path_factory.mktemp("recommender-offsets")),
            timeout_s=START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
        )
        yield Run(app_id, topics, service)
    finally:
        if service is not None:
            service.stop(strict=True)
        delete_run(platform_settings, app_id, [app_id, *topics.values()])


def _publish_in_transactions(settings: PlatformSettings, serde: AvroSerde, topic: str, count: int) -> None:
    """``count`` interactions, each in its own committed transaction (so followed by a marker).

    Half way, :data:`ABORTED` other interactions in one transaction that is aborted.
    """
    producer = EventProducer(
        settings,
        "recommender-offsets-test",
        serde,
        transactional_id=f"recommender-offsets-{uuid.uuid4().hex}",
    )
    items = [item.item_id for item in load_catalogue().items[:50]]
    try:
        producer.raw.init_transactions(30)
        for index in range(count):
            if index == count // 2:
                producer.raw.begin_transaction()
                for aborted in range(ABORTED):
                    _produce(producer, topic, f"aborted-{aborted}", items[aborted])
                producer.raw.flush(30)  # in the log, then aborted
                producer.raw.abort_transaction(30)
            producer.raw.begin_transaction()
            _produce(producer, topic, f"u-{index % 40}", items[index % len(items)])
            producer.raw.commit_transaction(30)
    finally:
        producer.close()


def _produce(producer: EventProducer, topic: str, user: str, item: str) -> None:
    event = make_event(
        "recommender-offsets-test", {"user_id": user, "item_id": item, "interaction_type": "view"}
    )
    producer.produce(topic, event, user, schema_topic=Topic.BUSINESS_USER_INTERACTION.value)


def _committed(settings: PlatformSettings, group: str, partitions: list[TopicPartition]) -> dict[int, int]:
    """The group's committed offset of each partition (-1001: none), as the broker has it."""
    consumer = Consumer({**settings.common_kafka_config(), "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def test_committed_offsets_reach_the_end_of_a_transactional_topic(
    run: Run, platform_settings: PlatformSettings, serde: AvroSerde
) -> None:
    topic = run.topics[Topic.BUSINESS_USER_INTERACTION]
    _publish_in_transactions(platform_settings, serde, topic, TRANSACTIONS)
    ends = end_offsets(platform_settings, topic)
    # A marker after every committed record; the aborted records and at least one abort marker.
    assert sum(tp.offset for tp in ends) > 2 * TRANSACTIONS + ABORTED

    def consumed() -> float | None:
        return run.service.metric("mlops_events_consumed_total", service="recommender", topic=topic)

    run.service.wait(
        f"the recommender to consume the {TRANSACTIONS} committed interactions",
        lambda: (consumed() or 0) >= TRANSACTIONS,
        PROCESS_TIMEOUT_S,
    )
    expected = {tp.partition: tp.offset for tp in ends}
    committed: dict[int, int] = {}

    def caught_up() -> bool:
        committed.update(_committed(platform_settings, run.app_id, ends))
        return committed == expected

    wait_until(
        caught_up,
        COMMIT_TIMEOUT_S,
        lambda: f"committed offsets {committed} to reach the log end offsets {expected}",
        interval_s=0.5,
        log=run.service.log,
    )

    # The lag the service reports (end minus committed) comes down with it, on every partition.
    def lags() -> list[float | None]:
        return [
            run.service.metric("mlops_consumer_lag_messages", topic=topic, partition=str(tp.partition))
            for tp in ends
        ]

    run.service.wait(
        lambda: f"the reported consumer lag on the input topic to be 0 on every partition: {lags()}",
        lambda: lags() == [0.0] * len(ends),
        COMMIT_TIMEOUT_S,
    )
    assert consumed() == TRANSACTIONS  # the aborted records were never handed to the streams
