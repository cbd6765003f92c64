"""Per-service Kafka identities on the real broker: SASL/SCRAM authentication and the catalogue's ACLs.

Each test acts as one service principal of the local stack (its password comes from the
stack's credentials file) and checks what the ACLs generated from ``schemas/services.yaml``
let it do; the admin (the tests' own identity) reads the topics to prove what landed.
The alerter is the subject: it produces ``system.alerts``, ``system.health`` and
``dlq.alerter``, consumes ``system.alerts`` and owns the groups ``alerter`` and ``alerter-restore-*``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from pydantic import SecretStr

from constellation.credentials import StackCredentials
from mlops_platform.contracts import Topic
from mlops_platform.health import kafka_check
from mlops_platform.settings import PlatformSettings
from tests.support.processes import free_port
from tests.support.topics import consumer_at_end

pytestmark = pytest.mark.integration

SERVICE = "alerter"
NOT_ITS_TOPIC = Topic.PREDICTION_COMPLETED.value  # the predictor's
ITS_OWN_TOPIC = "dlq.alerter"  # nobody consumes it: a test record disturbs no service
NOT_CONSUMED = Topic.PREDICTION_REQUEST.value


def as_principal(settings: PlatformSettings, name: str, password: str) -> PlatformSettings:
    return settings.model_copy(
        update={"kafka_sasl_username": name, "kafka_sasl_password": SecretStr(password)}
    )


@pytest.fixture
def service(
    platform_settings: PlatformSettings, stack_credentials: StackCredentials, kafka: str
) -> PlatformSettings:
    """Connection settings of the alerter's own principal."""
    if not platform_settings.kafka_uses_sasl:
        pytest.fail("the stack's Kafka must run with SASL (KAFKA_SECURITY_PROTOCOL)", pytrace=False)
    return as_principal(platform_settings, SERVICE, stack_credentials.password(SERVICE))


def produce_one(settings: PlatformSettings, topic: str, key: bytes) -> KafkaError | None:
    """Produce one record as ``settings``' principal; the delivery error (None: acknowledged)."""
    outcome: dict[str, Any] = {}
    producer = Producer(settings.producer_config(f"acl-test-{uuid.uuid4().hex[:6]}", **{"linger.ms": 0}))

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        outcome["error"] = error

    producer.produce(topic, key=key, value=b"acl-test", on_delivery=delivered)
    producer.flush(30)
    assert "error" in outcome, f"no delivery report for {topic} within 30s"
    error: KafkaError | None = outcome["error"]
    return error


def keys_landed(reader: Consumer, key: bytes, wait_s: float = 5.0) -> list[Message]:
    """Records with ``key`` that arrive at ``reader`` within ``wait_s`` (read as admin)."""
    found: list[Message] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        msg = reader.poll(0.5)
        if msg is not None and msg.error() is None and msg.key() == key:
            found.append(msg)
    return found


def subscribe_error(
    settings: PlatformSettings, group: str, topic: str, timeout_s: float = 30.0
) -> KafkaError:
    """The first error a consumer of ``topic`` in ``group`` reports (an authorization failure is one)."""
    consumer = Consumer(settings.consumer_config(group, "acl-test"))
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                msg = consumer.poll(0.5)
            except KafkaException as exc:
                raised: KafkaError = exc.args[0]
                return raised
            reported = msg.error() if msg is not None else None
            if reported is not None:
                return reported
            assert msg is None, f"read a record of {msg.topic()} it has no right to"
    finally:
        consumer.close()
    pytest.fail(f"no error reported within {timeout_s:.0f}s", pytrace=False)


def test_a_service_writing_a_topic_it_does_not_own_is_refused_and_nothing_lands(
    platform_settings: PlatformSettings, service: PlatformSettings
) -> None:
    key = f"acl-{uuid.uuid4().hex}".encode()
    reader = consumer_at_end(platform_settings, NOT_ITS_TOPIC, isolation="read_uncommitted")
    try:
        error = produce_one(service, NOT_ITS_TOPIC, key)
        assert error is not None, f"{SERVICE} could write {NOT_ITS_TOPIC}"
        assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
        assert keys_landed(reader, key) == []
    finally:
        reader.close()


def test_a_service_writes_its_own_topic(
    platform_settings: PlatformSettings, service: PlatformSettings
) -> None:
    key = f"acl-{uuid.uuid4().hex}".encode()
    reader = consumer_at_end(platform_settings, ITS_OWN_TOPIC, isolation="read_uncommitted")
    try:
        assert produce_one(service, ITS_OWN_TOPIC, key) is None
        landed = keys_landed(reader, key, wait_s=15)
        assert [msg.value() for msg in landed] == [b"acl-test"]
    finally:
        reader.close()


def test_a_service_cannot_read_a_topic_it_does_not_consume(service: PlatformSettings) -> None:
    # In one of its own groups: the topic is the only thing it lacks.
    error = subscribe_error(service, f"alerter-restore-acl-{uuid.uuid4().hex[:8]}", NOT_CONSUMED)
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


def test_a_service_cannot_join_another_services_group(service: PlatformSettings) -> None:
    # A topic it may read, in the predictor's group.
    error = subscribe_error(service, "predictor", Topic.SYSTEM_ALERTS.value)
    assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error


def test_a_service_cannot_use_another_services_transactional_id(service: PlatformSettings) -> None:
    producer = Producer(
        service.producer_config("acl-test", **{"transactional.id": f"predictor-{uuid.uuid4()}"})
    )
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(30)
    assert raised.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_a_wrong_password_fails_authentication(service: PlatformSettings) -> None:
    wrong = as_principal(service, SERVICE, "not-the-password")
    errors: list[KafkaError] = []
    config = {**wrong.common_kafka_config(), "error_cb": errors.append, "socket.timeout.ms": 10000}
    producer = Producer(config)
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=10)
    producer.poll(1)
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors


def test_the_readiness_probe_of_a_service_principal_reaches_the_cluster(service: PlatformSettings) -> None:
    # Readiness and ingest's dependency gate ask as the service: the broker answers its
    # principal, and a broker that does not answer fails the probe with the reason.
    assert kafka_check(service)().ok
    unreachable = service.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    result = kafka_check(unreachable)()
    assert not result.ok and "no metadata" in result.detail
