"""Shared fixtures.

Integration and end-to-end tests talk to the real local stack (Kafka, schema
registry, MLflow) started by ``make stack-up`` (``make test`` does it first) or to
the cluster named by ``KAFKA_BOOTSTRAP_SERVERS`` / ``SCHEMA_REGISTRY_URL`` /
``MLFLOW_TRACKING_URI``. When a dependency is missing they fail loudly; they never skip.
The local stack runs Kafka with SASL/SCRAM and ACLs and a registry that wants credentials
for writes: unless the environment names its own (``KAFKA_SASL_USERNAME``,
``SCHEMA_REGISTRY_USERNAME``), the tests and every process they start act as the stack's
admin and registry writer, read from its credentials file (``$STACK_DIR/credentials.json``).
Each test gets fresh topic names and consumer groups (uuid4), so tests never see
each other's data.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer

from constellation import credentials
from mlops_platform.contracts import load_catalogue
from mlops_platform.kafka import create_topic, delete_topics, kafka_reachable
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.processes import ServiceLauncher
from tests.support.topics import TopicTail, consume, drain

# Older tests import these readers from here; they live in tests/support/topics.py.
__all__ = ["consume", "drain"]

# Before any settings are read: the shared connection variables carry the admin's credentials,
# so PlatformSettings() here and in every spawned process (services, provisioning) use them.
credentials.export_operator_env(os.environ)


@pytest.fixture(scope="session")
def stack_credentials() -> credentials.StackCredentials:
    """The local stack's passwords (its per-service Kafka principals, for the ACL tests)."""
    found = credentials.load()
    if found is None:
        pytest.fail(
            f"no credentials file at {credentials.credentials_path()}: run `make stack-up`", pytrace=False
        )
    return found


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


@pytest.fixture(scope="session")
def created_topics(platform_settings: PlatformSettings) -> Iterator[list[str]]:
    """Topics the session created; deleted at its end (left behind, they pile up on the stack's broker)."""
    topics: list[str] = []
    yield topics
    if topics and kafka_reachable(platform_settings, timeout_s=10):
        for topic, reason in delete_topics(platform_settings, topics).items():
            print(f"could not delete the test topic {topic}: {reason}")


@pytest.fixture
def topic_factory(
    platform_settings: PlatformSettings, kafka: str, created_topics: list[str]
) -> Callable[..., str]:
    """Create a fresh topic: ``topic_factory("orders", partitions=3)`` -> ``test.orders.<uuid>``."""

    def make(name: str = "topic", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = f"test.{name}.{uuid.uuid4().hex[:10]}"
        create_topic(platform_settings, topic, partitions, config)
        created_topics.append(topic)
        return topic

    return make


@pytest.fixture
def consumer_factory(platform_settings: PlatformSettings, kafka: str) -> Iterator[Callable[..., Consumer]]:
    """Consumers with unique groups, reading committed data from the beginning; closed after the test."""
    consumers: list[Consumer] = []

    def make(*topics: str, isolation: str = "read_committed", **overrides: Any) -> Consumer:
        config = {
            **platform_settings.common_kafka_config(),
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


@pytest.fixture
def topic_tail(platform_settings: PlatformSettings, serde: AvroSerde) -> Iterator[Callable[..., TopicTail]]:
    """Readers of topics from their current end: ``topic_tail({topic: contract})``; closed after the test."""
    with contextlib.ExitStack() as opened:

        def make(
            topics: Mapping[str, str] | Iterable[str], *, isolation: str = "read_committed"
        ) -> TopicTail:
            tail = TopicTail(platform_settings, serde, topics, isolation=isolation)
            return opened.enter_context(contextlib.closing(tail))

        yield make


@pytest.fixture
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceLauncher]:
    """Starts ``python -m <service>`` processes for one test; stops them (and prints their logs) after it."""
    with ServiceLauncher(tmp_path_factory.mktemp("services")) as started:
        yield started


@pytest.fixture(scope="module")
def service_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceLauncher]:
    """Starts ``python -m <service>`` processes for a module; stops them (and prints their logs) after it."""
    with ServiceLauncher(tmp_path_factory.mktemp("services")) as started:
        yield started
