"""Predictor instances joining and dying in one group mid-stream: every request scored exactly once.

Two predictors (``python -m predictor``) share a consumer group on private topics and score
a stream of requests; one is killed with SIGKILL mid-stream (no shutdown, no flush, no
commit: its open transaction is left for the broker to abort) and a third instance, with
an instance id of its own, joins. Read with ``read_committed``, every request sent comes
out exactly once: nothing lost in the hand-over, nothing scored twice by the survivor or
the newcomer re-reading what the dead instance had already committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer

from fraud_model.registry import ModelRegistry
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.models import delete_model, log_small_models, register_copies
from tests.support.processes import ServiceLauncher, ServiceProcess, wait_until
from tests.support.scoring import (
    COMPLETED,
    Streamer,
    Topics,
    assert_exactly_once,
    decode,
    read_results,
    start_predictor,
)
from tests.support.topics import consume, drain

pytestmark = pytest.mark.integration

PARTITIONS = 6


@pytest.fixture
def model_name(mlflow_uri: str) -> Iterator[str]:
    """A fresh registered model whose version 1 is the champion."""
    base = f"predictor_scale_base_{uuid.uuid4().hex[:8]}"
    name = register_copies(mlflow_uri, log_small_models(mlflow_uri, count=1, name=base))
    ModelRegistry(mlflow_uri, name).set_alias("champion", "1")
    yield name
    delete_model(mlflow_uri, name)
    delete_model(mlflow_uri, base)


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> Topics:
    return Topics(
        request=topic_factory("prediction-request", PARTITIONS),
        completed=topic_factory("prediction-completed", PARTITIONS),
        deployed=topic_factory("model-deployed", 1),
        dead_letters=topic_factory("dlq-predictor", 1),
    )


@pytest.fixture
def producer(platform_settings: PlatformSettings, serde: AvroSerde) -> Iterator[EventProducer]:
    producer = EventProducer(platform_settings, "test", serde)
    yield producer
    producer.close()


def scored(instance: ServiceProcess) -> float:
    """Requests the instance scored from the stream (its own counter, gone with the process)."""
    return instance.metric_sum("fds_requests_total", endpoint="stream", status="ok")


def test_sigkill_of_one_of_two_instances_and_a_third_joining_score_every_request_once(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    group = f"test-predictor-scale-{uuid.uuid4().hex[:8]}"

    def start() -> ServiceProcess:
        # Each instance its own instance id (hence transactional id); one group for all.
        return start_predictor(
            launcher,
            platform_settings,
            topics,
            model_name,
            PREDICTOR_GROUP_ID=group,
            PREDICTOR_BATCH_SIZE="50",
        )

    first, second = start(), start()
    committed = consumer_factory(topics.completed)
    with Streamer(producer, topics.request) as streamer:
        wait_until(lambda: scored(first) > 0 and scored(second) > 0, 120, "both instances to score requests")
        early = consume(committed, 200, timeout_s=120)
        assert len(early) == 200
        second.kill()  # mid-stream, most likely mid-transaction
        killed_at = len(streamer.sent)
        third = start()
        third.wait("the third instance to score requests", lambda: scored(third) > 0, timeout_s=180)
        wait_until(lambda: len(streamer.sent) > killed_at + 400, 120, "requests after the third joined")
    sent = streamer.stop()

    results = decode(serde, early, COMPLETED)
    results += read_results(committed, serde, len(sent) - len(early), timeout_s=240)
    assert_exactly_once(results, sent)
    assert first.alive() and third.alive() and not second.alive()
    assert drain(consumer_factory(topics.dead_letters), quiet_s=2) == []
