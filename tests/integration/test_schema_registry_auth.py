"""The schema registry with write credentials: writes need HTTP basic auth, reads stay open.

A ``python -m schema_registry_server`` process with ``SCHEMA_REGISTRY_AUTH_USERNAME`` /
``_PASSWORD`` set, on its own uuid-named schemas topic (its Kafka store authenticates with
the shared settings' credentials), driven with httpx and the confluent_kafka client.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from mlops_platform.kafka import delete_topics
from mlops_platform.settings import PlatformSettings
from tests.support.processes import ServiceLauncher, ServiceProcess

pytestmark = pytest.mark.integration

COMPAT_PATH = "/apis/ccompat/v7"
WRITER, PASSWORD = "registry-writer", f"pw-{uuid.uuid4().hex}"
SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "namespace": "test.auth",
        "fields": [{"name": "id", "type": "string"}],
    }
)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def registry(
    platform_settings: PlatformSettings, kafka: str, service_launcher: ServiceLauncher
) -> Iterator[ServiceProcess]:
    topic = f"_schemas_auth_{uuid.uuid4().hex[:12]}"
    process = service_launcher.start(
        "schema_registry_server",
        "SCHEMA_REGISTRY_",
        {
            "SCHEMA_REGISTRY_TOPIC": topic,
            "SCHEMA_REGISTRY_AUTH_USERNAME": WRITER,
            "SCHEMA_REGISTRY_AUTH_PASSWORD": PASSWORD,
        },
        timeout_s=90,
        host_var="SCHEMA_REGISTRY_HOST",
        port_var="SCHEMA_REGISTRY_PORT",
    )
    yield process
    process.stop()
    assert not delete_topics(platform_settings, [topic]), f"the registry's topic {topic} was left behind"


@pytest.fixture
def http(registry: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url + COMPAT_PATH, timeout=30) as client:
        yield client


def subject() -> str:
    return f"auth-{uuid.uuid4().hex[:10]}-value"


def test_writes_without_credentials_are_refused_with_a_reason(http: httpx.Client) -> None:
    name = subject()
    body = {"schema": SCHEMA}
    for method, path, payload in (
        ("POST", f"/subjects/{name}/versions", body),
        ("PUT", f"/config/{name}", {"compatibility": "NONE"}),
        ("PUT", "/config", {"compatibility": "NONE"}),
        ("DELETE", f"/subjects/{name}", None),
        ("DELETE", f"/subjects/{name}/versions/1", None),
        ("PUT", "/mode", {"mode": "READWRITE"}),
    ):
        response = http.request(method, path, json=payload)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error_code"] == 40101
        assert "basic auth" in response.json()["message"]
        assert response.headers["www-authenticate"].startswith("Basic")
    # Nothing happened: the subject does not exist and the global level is unchanged.
    assert http.get(f"/subjects/{name}/versions").status_code == 404
    assert http.get("/config").json()["compatibilityLevel"] == "BACKWARD"


def test_a_wrong_password_is_refused(http: httpx.Client) -> None:
    for headers in (basic(WRITER, "wrong"), basic("someone", PASSWORD), {"Authorization": "Bearer x"}):
        response = http.post(f"/subjects/{subject()}/versions", json={"schema": SCHEMA}, headers=headers)
        assert response.status_code == 401, response.text


def test_the_writer_registers_and_deletes_and_reads_stay_open(http: httpx.Client) -> None:
    name = subject()
    auth = basic(WRITER, PASSWORD)
    registered = http.post(f"/subjects/{name}/versions", json={"schema": SCHEMA}, headers=auth)
    assert registered.status_code == 200, registered.text
    schema_id = registered.json()["id"]
    # Reads, lookups and compatibility checks need no credentials (every service does them).
    assert http.get(f"/subjects/{name}/versions/latest").json()["id"] == schema_id
    assert http.get(f"/schemas/ids/{schema_id}").status_code == 200
    assert http.post(f"/subjects/{name}", json={"schema": SCHEMA}).json()["id"] == schema_id
    check = http.post(f"/compatibility/subjects/{name}/versions/latest", json={"schema": SCHEMA})
    assert check.json()["is_compatible"] is True
    assert http.put(f"/config/{name}", json={"compatibility": "FULL"}, headers=auth).status_code == 200
    assert http.delete(f"/subjects/{name}", headers=auth).json() == [1]


def test_the_confluent_client_authenticates_with_basic_auth_user_info(registry: ServiceProcess) -> None:
    url = registry.url + COMPAT_PATH
    name = subject()
    with SchemaRegistryClient({"url": url}) as anonymous:
        with pytest.raises(SchemaRegistryError) as refused:
            anonymous.register_schema(name, Schema(SCHEMA, "AVRO"))
        assert refused.value.http_status_code == 401
    with SchemaRegistryClient({"url": url, "basic.auth.user.info": f"{WRITER}:{PASSWORD}"}) as writer:
        schema_id = writer.register_schema(name, Schema(SCHEMA, "AVRO"))
    with SchemaRegistryClient({"url": url}) as reader:
        assert reader.get_latest_version(name).schema_id == schema_id
