"""Shared fixtures.

Integration and end-to-end tests talk to the real local stack (Kafka, schema
registry, MLflow) started by ``make stack-up`` (``make test`` does it first) or to
the cluster named by ``KAFKA_BOOTSTRAP_SERVERS`` / ``SCHEMA_REGISTRY_URL`` /
``MLFLOW_TRACKING_URI``. When a dependency is missing they fail loudly; they never skip.
Each test gets fresh topic names and consumer groups (uuid4), so tests never see
each other's data.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Message

from mlops_platform.contracts import load_catalogue
from mlops_platform.kafka import create_topic, kafka_reachable
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings


@pytest.fixture(scope="session")
def platform_settings() -> PlatformSettings:
    return PlatformSettings()


@pytest.fixture(scope="session")
def kafka(platform_settings: PlatformSettings) -> str:
    """Bootstrap servers of a reachable Kafka cluster (fails the test otherwise)."""
    if not kafka_reachable(platform_settings, timeout_s=10):
        pytest.fail(
            f"Kafka is not reachable at {platform_settings.kafka_bootstrap_servers}: run `make stack-up` "
            "or set KAFKA_BOOTSTRAP_SERVERS",
            pytrace=False,
        )
    return platform_settings.kafka_bootstrap_servers


@pytest.fixture(scope="session")
def schema_registry(platform_settings: PlatformSettings) -> str:
    url = platform_settings.schema_registry_url
    try:
        httpx.get(f"{url}/subjects", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"schema registry not reachable at {url} ({exc}): run `make stack-up`", pytrace=False)
    return url


@pytest.fixture(scope="session")
def mlflow_uri(platform_settings: PlatformSettings) -> str:
    uri = platform_settings.mlflow_tracking_uri
    try:
        httpx.get(f"{uri}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"MLflow not reachable at {uri} ({exc}): run `make stack-up`", pytrace=False)
    return uri


@pytest.fixture(scope="session")
def serde(platform_settings: PlatformSettings, kafka: str, schema_registry: str) -> Iterator[AvroSerde]:
    """Serde over the real registry, with every catalogue schema registered."""
    serde = AvroSerde(platform_settings, load_catalogue(platform_settings.schemas_dir))
    serde.register_all()
    yield serde
    serde.close()


@pytest.fixture
def topic_factory(platform_settings: PlatformSettings, kafka: str) -> Callable[..., str]:
    """Create a fresh topic: ``topic_factory("orders", partitions=3)`` -> ``test.orders.<uuid>``."""

    def make(name: str = "topic", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = f"test.{name}.{uuid.uuid4().hex[:10]}"
        create_topic(platform_settings, topic, partitions, config)
        return topic

    return make


@pytest.fixture
def consumer_factory(platform_settings: PlatformSettings, kafka: str) -> Iterator[Callable[..., Consumer]]:
    """Consumers with unique groups, reading committed data from the beginning; closed after the test."""
    consumers: list[Consumer] = []

    def make(*topics: str, isolation: str = "read_committed", **overrides: Any) -> Consumer:
        config = {
            "bootstrap.servers": platform_settings.kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex[:10]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            **overrides,
        }
        consumer = Consumer(config)
        consumer.subscribe(list(topics))
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()


def consume(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll until ``count`` messages arrived or the deadline passed; returns what arrived."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=count - len(messages), timeout=0.5):
            if msg.error() is None:
                messages.append(msg)
    return messages


def drain(consumer: Consumer, quiet_s: float = 3.0, timeout_s: float = 60.0) -> list[Message]:
    """Read until no message arrived for ``quiet_s`` seconds (to prove nothing *else* came)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
        batch = [m for m in consumer.consume(num_messages=500, timeout=0.5) if m.error() is None]
        if batch:
            messages.extend(batch)
            last = time.monotonic()
    return messages
