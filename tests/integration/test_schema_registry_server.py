"""The local schema registry as a real process, on real Kafka, driven by the real confluent_kafka client.

Self-contained: each server runs as ``python -m schema_registry_server`` on a free port with its own
uuid-named schemas topic, so it never collides with a shared stack. Kafka must be reachable at
``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092); otherwise every test fails with that reason.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from mlops_platform.kafka import delete_topics as delete_cluster_topics
from mlops_platform.settings import PlatformSettings
from tests.support.processes import ServiceLauncher, ServiceProcess
from tests.support.topics import consume

pytestmark = pytest.mark.integration

# Brokers and credentials from the shared settings (the stack's admin, see tests/conftest.py).
KAFKA_CONFIG = PlatformSettings().common_kafka_config()
BOOTSTRAP = str(KAFKA_CONFIG["bootstrap.servers"])
COMPAT_PATH = "/apis/ccompat/v7"
# Hang guards only (the tests never assert on durations).
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def avro_record(name: str, *fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "test.registry", "fields": list(fields)})


PAYMENT_V1 = avro_record(
    "Payment",
    {"name": "id", "type": "string"},
    {"name": "amount_cents", "type": "long"},
)
EXTRA_OPTIONAL = {"name": "note", "type": ["null", "string"], "default": None}
PAYMENT_V2_OPTIONAL = avro_record(
    "Payment",
    {"name": "id", "type": "string"},
    {"name": "amount_cents", "type": "long"},
    {"name": "currency", "type": ["null", "string"], "default": None},
)
PAYMENT_V2_REQUIRED = avro_record(
    "Payment",
    {"name": "id", "type": "string"},
    {"name": "amount_cents", "type": "long"},
    {"name": "merchant", "type": "string"},
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class RegistryServer:
    """One ``python -m schema_registry_server`` process, started by the launcher."""

    process: ServiceProcess
    topic: str

    @property
    def root_url(self) -> str:
        return self.process.url

    @property
    def url(self) -> str:
        return self.root_url + COMPAT_PATH

    def stop(self) -> None:
        """SIGTERM, then check the server shut down gracefully."""
        code = self.process.stop(strict=True)
        # uvicorn re-raises the signal after its graceful shutdown, so "killed by SIGTERM" is the
        # normal exit status; the log shows whether the lifespan shutdown (producer flush) ran.
        assert code in (0, -signal.SIGTERM), self.process.log()
        assert '"event": "schema_registry_stopped"' in self.process.log_path.read_text(), self.process.log()


def start_registry(launcher: ServiceLauncher, topic: str) -> RegistryServer:
    """A registry on a free port keeping its schemas in ``topic``, once it answers ``/ready``."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "SCHEMA_REGISTRY_TOPIC": topic,
        "SCHEMA_REGISTRY_DEFAULT_COMPATIBILITY": "BACKWARD",
        "SCHEMA_REGISTRY_LOG_LEVEL": "INFO",
    }
    process = launcher.start(
        "schema_registry_server",
        "SCHEMA_REGISTRY_",
        env,
        timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=STOP_TIMEOUT_S,
        host_var="SCHEMA_REGISTRY_HOST",
        port_var="SCHEMA_REGISTRY_PORT",
    )
    return RegistryServer(process, topic)


def delete_topics(*topics: str) -> None:
    """Clean-up only: a topic that could not be deleted is reported, never a failure."""
    for topic, reason in delete_cluster_topics(PlatformSettings(), topics).items():
        print(f"could not delete the test topic {topic}: {reason}")


@pytest.fixture(scope="module")
def kafka() -> str:
    """Kafka must be up: fail (never skip) with the reason otherwise."""
    admin = AdminClient({**KAFKA_CONFIG, "socket.timeout.ms": 10000})
    try:
        admin.list_topics(timeout=15)
    except KafkaException as exc:
        pytest.fail(
            f"Kafka is not reachable at {BOOTSTRAP} (set KAFKA_BOOTSTRAP_SERVERS): {exc}", pytrace=False
        )
    return BOOTSTRAP


@pytest.fixture(scope="module")
def server(kafka: str, service_launcher: ServiceLauncher) -> Iterator[RegistryServer]:
    topic = unique("_schemas_test")
    try:
        instance = start_registry(service_launcher, topic)
    except BaseException:
        delete_topics(topic)
        raise
    yield instance
    try:
        instance.stop()
    finally:
        delete_topics(topic)


@pytest.fixture
def client(server: RegistryServer) -> Iterator[SchemaRegistryClient]:
    # A new client per test: the client caches ids and versions, and each test must see the server.
    sr_client = SchemaRegistryClient({"url": server.url})
    yield sr_client
    sr_client.close()


@pytest.fixture
def http(server: RegistryServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as raw:
        yield raw


def avro(text: str) -> Schema:
    return Schema(text, "AVRO")


# -- basics ------------------------------------------------------------------------------------------


def test_register_lookup_and_get_by_id(
    server: RegistryServer, client: SchemaRegistryClient, http: httpx.Client
) -> None:
    subject = unique("payments") + "-value"
    schema_id = client.register_schema(subject, avro(PAYMENT_V1))

    # Idempotent, also for the same schema written differently (whitespace, key order).
    reformatted = json.dumps(dict(reversed(list(json.loads(PAYMENT_V1).items()))), indent=2)
    assert client.register_schema(subject, avro(PAYMENT_V1)) == schema_id
    assert http.post(f"/subjects/{subject}/versions", json={"schema": reformatted}).json()["id"] == schema_id
    assert client.get_versions(subject) == [1]

    # The same schema under another subject keeps its global id.
    other = unique("audit") + "-value"
    assert client.register_schema(other, avro(PAYMENT_V1)) == schema_id
    assert sorted(http.get(f"/schemas/ids/{schema_id}/subjects").json()) == sorted([subject, other])

    found = client.lookup_schema(subject, avro(reformatted))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, subject)

    with SchemaRegistryClient({"url": server.url}) as uncached:
        fetched = uncached.get_schema(schema_id)
    assert json.loads(fetched.schema_str) == json.loads(PAYMENT_V1)
    assert fetched.schema_type == "AVRO"

    latest = client.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert subject in client.get_subjects()
    assert client.get_schema_types() == ["AVRO"]

    unknown = http.post(f"/subjects/{subject}", json={"schema": PAYMENT_V2_OPTIONAL})
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, 40403)
    missing = http.get("/schemas/ids/987654")
    assert (missing.status_code, missing.json()["error_code"]) == (404, 40403)
    assert http.get(f"/subjects/{unique('nobody')}/versions").json()["error_code"] == 40401


def test_root_and_compat_prefix_serve_the_same_api(
    server: RegistryServer, client: SchemaRegistryClient
) -> None:
    subject = unique("prefix") + "-value"
    schema_id = client.register_schema(subject, avro(PAYMENT_V1))
    with httpx.Client(timeout=30) as raw:
        at_root = raw.get(f"{server.root_url}/subjects/{subject}/versions/latest")
        prefixed = raw.get(f"{server.url}/subjects/{subject}/versions/-1")
        assert at_root.status_code == prefixed.status_code == 200
        assert at_root.json() == prefixed.json()
        assert at_root.json()["id"] == schema_id
        assert at_root.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
        assert raw.get(f"{server.root_url}/mode").json() == {"mode": "READWRITE"}
        raw_schema = raw.get(f"{server.url}/schemas/ids/{schema_id}/schema")
        assert raw_schema.json() == json.loads(PAYMENT_V1)


def test_invalid_and_unsupported_schemas_are_rejected(http: httpx.Client) -> None:
    subject = unique("invalid") + "-value"
    cases = [
        ({"schema": '{"type": "record", "name": "X"}'}, "fields"),
        ({"schema": "not json"}, "JSON"),
        ({"schema": avro_record("X", {"name": "a", "type": "int", "default": "zero"})}, "default"),
        ({"schema": '{"type": "object"}', "schemaType": "JSON"}, "only supports AVRO"),
        ({"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}, "only supports AVRO"),
    ]
    for body, fragment in cases:
        response = http.post(f"/subjects/{subject}/versions", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error_code"] == 42201
        assert fragment in response.json()["message"]
    bad_version = http.get(f"/subjects/{subject}/versions/zero")
    assert (bad_version.status_code, bad_version.json()["error_code"]) == (422, 42202)


# -- Avro round trip through a real topic ------------------------------------------------------------


def test_avro_round_trip_through_kafka(kafka: str, client: SchemaRegistryClient) -> None:
    topic = unique("payments")
    admin = AdminClient(KAFKA_CONFIG)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    try:
        subject = f"{topic}-value"
        schema_id = client.register_schema(subject, avro(PAYMENT_V1))
        serializer = AvroSerializer(client, PAYMENT_V1, conf={"auto.register.schemas": False})
        deserializer = AvroDeserializer(client)
        value = {"id": "pay-1", "amount_cents": 1250}
        ctx = SerializationContext(topic, MessageField.VALUE)
        payload = serializer(value, ctx)
        assert payload is not None
        # Confluent wire format: magic byte 0 + the registry's id (big endian) + Avro body.
        assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == schema_id

        producer = Producer({**KAFKA_CONFIG, "acks": "all"})
        producer.produce(topic, key=b"pay-1", value=payload)
        assert producer.flush(30) == 0

        consumer = Consumer(
            {
                **KAFKA_CONFIG,
                "group.id": unique("registry-test"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            messages = consume(consumer, 1, timeout_s=60)
            assert messages, "message not consumed back from Kafka"
            assert deserializer(messages[0].value(), ctx) == value
        finally:
            consumer.close()

        # A schema the subject does not hold cannot be used when auto-registration is off.
        strict = AvroSerializer(client, PAYMENT_V2_OPTIONAL, conf={"auto.register.schemas": False})
        with pytest.raises(Exception, match="40403|not found"):
            strict({"id": "pay-2", "amount_cents": 1, "currency": "EUR"}, ctx)
    finally:
        delete_topics(topic)


# -- compatibility -----------------------------------------------------------------------------------


def test_backward_rejects_incompatible_and_accepts_optional_field(
    client: SchemaRegistryClient, http: httpx.Client
) -> None:
    subject = unique("compat") + "-value"
    client.register_schema(subject, avro(PAYMENT_V1))

    assert client.test_compatibility(subject, avro(PAYMENT_V2_REQUIRED)) is False
    assert client.test_compatibility(subject, avro(PAYMENT_V2_OPTIONAL)) is True
    assert client.test_compatibility_all_versions(subject, avro(PAYMENT_V2_OPTIONAL)) is True

    verbose = http.post(
        f"/compatibility/subjects/{subject}/versions/latest",
        params={"verbose": "true"},
        json={"schema": PAYMENT_V2_REQUIRED},
    ).json()
    assert verbose["is_compatible"] is False
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m and "merchant" in m for m in verbose["messages"])

    with pytest.raises(SchemaRegistryError) as rejected:
        client.register_schema(subject, avro(PAYMENT_V2_REQUIRED))
    assert rejected.value.http_status_code == 409
    assert rejected.value.error_code == 409
    assert "incompatible with an earlier schema" in rejected.value.error_message
    assert "test.registry.Payment.merchant" in rejected.value.error_message

    second = client.register_schema_full_response(subject, avro(PAYMENT_V2_OPTIONAL))
    assert second.version == 2
    assert client.get_versions(subject) == [1, 2]


def test_config_get_and_set(client: SchemaRegistryClient, http: httpx.Client) -> None:
    subject = unique("config") + "-value"
    assert client.get_compatibility() == "BACKWARD"

    unset = http.get(f"/config/{subject}")
    assert (unset.status_code, unset.json()["error_code"]) == (404, 40408)
    assert http.get(f"/config/{subject}", params={"defaultToGlobal": "true"}).json() == {
        "compatibilityLevel": "BACKWARD"
    }

    assert client.set_compatibility(subject, "FULL") == {"compatibility": "FULL"}
    assert client.get_compatibility(subject) == "FULL"
    assert str(client.get_config(subject).compatibility_level) == "FULL"

    # FULL also needs old readers to read new data: dropping a field without default is refused...
    client.register_schema(subject, avro(PAYMENT_V2_REQUIRED))
    with pytest.raises(SchemaRegistryError) as rejected:
        client.register_schema(subject, avro(PAYMENT_V1))
    assert rejected.value.http_status_code == 409
    # ...and accepted once the subject is set to NONE (the spelling used by other tools works too).
    assert http.put(f"/config/{subject}", json={"compatibilityLevel": "none"}).json() == {
        "compatibility": "NONE"
    }
    client.register_schema(subject, avro(PAYMENT_V1))

    invalid = http.put(f"/config/{subject}", json={"compatibility": "SIDEWAYS"})
    assert (invalid.status_code, invalid.json()["error_code"]) == (422, 42203)

    assert http.delete(f"/config/{subject}").json() == {"compatibilityLevel": "NONE"}
    assert http.get(f"/config/{subject}").json()["error_code"] == 40408


def test_concurrent_registrations_get_unique_ids_and_versions(
    server: RegistryServer, http: httpx.Client
) -> None:
    subject = unique("concurrent") + "-value"
    assert http.put(f"/config/{subject}", json={"compatibility": "NONE"}).status_code == 200
    distinct = [avro_record(f"Event{i}", {"name": "id", "type": "string"}) for i in range(16)]
    same = [PAYMENT_V1] * 8

    def register(schema: str) -> dict[str, Any]:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            response = own.post(f"/subjects/{subject}/versions", json={"schema": schema})
            assert response.status_code == 200, response.text
            return dict(response.json())

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(register, distinct + same))
    distinct_results, same_results = results[: len(distinct)], results[len(distinct) :]
    assert len({item["id"] for item in same_results}) == 1
    assert len({item["version"] for item in same_results}) == 1
    assert len({item["id"] for item in distinct_results}) == len(distinct)
    # 16 distinct schemas + 1 repeated one: 17 versions without gaps or duplicates.
    assert sorted({item["version"] for item in results}) == list(range(1, len(distinct) + 2))
    assert http.get(f"/subjects/{subject}/versions").json() == list(range(1, len(distinct) + 2))


# -- deletes -----------------------------------------------------------------------------------------


def test_soft_and_hard_delete(client: SchemaRegistryClient, http: httpx.Client) -> None:
    subject = unique("delete") + "-value"
    # A record name of its own: the shared server holds PAYMENT_V1 under other subjects, which would
    # (rightly) keep its id alive after this subject is hard deleted.
    v1 = avro_record(unique("Deleted").replace("-", "_"), {"name": "id", "type": "string"})
    v2 = json.dumps({**json.loads(v1), "fields": [*json.loads(v1)["fields"], EXTRA_OPTIONAL]})
    first_id = client.register_schema(subject, avro(v1))
    client.register_schema(subject, avro(v2))

    assert client.delete_version(subject, 2) == 2
    assert http.get(f"/subjects/{subject}/versions").json() == [1]
    gone = http.get(f"/subjects/{subject}/versions/2")
    assert (gone.status_code, gone.json()["error_code"]) == (404, 40402)
    assert http.get(f"/subjects/{subject}/versions/2", params={"deleted": "true"}).status_code == 200
    assert http.get(f"/subjects/{subject}/versions", params={"deleted": "true"}).json() == [1, 2]

    assert client.delete_subject(subject) == [1]
    assert subject not in http.get("/subjects").json()
    assert subject in http.get("/subjects", params={"deleted": "true"}).json()
    # Ids of soft-deleted versions still resolve: messages already on topics stay readable.
    assert http.get(f"/schemas/ids/{first_id}").status_code == 200
    lookup = http.post(f"/subjects/{subject}", json={"schema": v1})
    assert lookup.json()["error_code"] == 40401
    deleted_lookup = http.post(f"/subjects/{subject}", params={"deleted": "true"}, json={"schema": v1})
    assert deleted_lookup.json()["version"] == 1

    again = http.delete(f"/subjects/{subject}")
    assert again.json()["error_code"] == 40404
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    assert subject not in http.get("/subjects", params={"deleted": "true"}).json()

    # Versions restart after a hard delete, but ids are never handed out again.
    revived = http.post(f"/subjects/{subject}/versions", json={"schema": v1}).json()
    assert revived["version"] == 1
    assert revived["id"] > first_id


def test_hard_delete_requires_soft_delete_first(client: SchemaRegistryClient, http: httpx.Client) -> None:
    subject = unique("harddelete") + "-value"
    client.register_schema(subject, avro(PAYMENT_V1))
    refused = http.delete(f"/subjects/{subject}", params={"permanent": "true"})
    assert (refused.status_code, refused.json()["error_code"]) == (404, 40405)
    refused_version = http.delete(f"/subjects/{subject}/versions/1", params={"permanent": "true"})
    assert refused_version.json()["error_code"] == 40407


def test_metrics_and_health(server: RegistryServer, client: SchemaRegistryClient) -> None:
    client.register_schema(unique("metrics") + "-value", avro(PAYMENT_V1))
    with httpx.Client(timeout=30) as raw:
        assert raw.get(f"{server.root_url}/health").json() == {"status": "UP"}
        ready = raw.get(f"{server.root_url}/ready").json()
        assert ready["status"] == "UP" and ready["topic"] == server.topic
    text = server.process.metrics_text()
    assert "schema_registry_schemas " in text
    # One series per route template, whichever of the two mounts served it.
    assert 'endpoint="/subjects/{subject}/versions",method="POST",status="200"' in text


# -- persistence -------------------------------------------------------------------------------------


def test_state_survives_a_restart(kafka: str, launcher: ServiceLauncher) -> None:
    topic = unique("_schemas_restart")
    orders_topic = unique("orders")
    subject, other = f"{orders_topic}-value", unique("refunds") + "-value"
    before = start_registry(launcher, topic)
    try:
        with SchemaRegistryClient({"url": before.url}) as sr:
            v1_id = sr.register_schema(subject, avro(PAYMENT_V1))
            v2_id = sr.register_schema(subject, avro(PAYMENT_V2_OPTIONAL))
            other_id = sr.register_schema(
                other, avro(avro_record("Refund", {"name": "id", "type": "string"}))
            )
            sr.set_compatibility(subject, "FULL_TRANSITIVE")
            sr.delete_version(other, 1)
            ctx = SerializationContext(orders_topic, MessageField.VALUE)
            old_message = AvroSerializer(sr, PAYMENT_V1, conf={"auto.register.schemas": False})(
                {"id": "o-1", "amount_cents": 990}, ctx
            )
            assert old_message is not None
    finally:
        before.stop()

    after: RegistryServer | None = None
    try:
        after = start_registry(launcher, topic)
        with SchemaRegistryClient({"url": after.url}) as sr:
            assert sr.get_versions(subject) == [1, 2]
            assert [sr.get_version(subject, v).schema_id for v in (1, 2)] == [v1_id, v2_id]
            assert json.loads(sr.get_schema(v1_id).schema_str) == json.loads(PAYMENT_V1)
            assert sr.get_compatibility(subject) == "FULL_TRANSITIVE"
            assert sr.get_subjects() == [subject]  # the other subject was soft deleted
            assert sr.get_versions(other, deleted=True) == [1]
            assert sr.lookup_schema(subject, avro(PAYMENT_V1)).version == 1

            # A message serialised before the restart still deserialises after it.
            assert AvroDeserializer(sr)(old_message, ctx) == {"id": "o-1", "amount_cents": 990}

            # New ids continue after the highest one in the log.
            newest = avro_record("Shipment", {"name": "id", "type": "string"})
            assert (
                sr.register_schema(unique("shipments") + "-value", avro(newest))
                == max(v1_id, v2_id, other_id) + 1
            )
    finally:
        try:
            if after is not None:
                after.stop()
        finally:
            delete_topics(topic)
