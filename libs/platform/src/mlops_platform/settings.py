"""Typed settings shared by every service, read from environment variables.

Connection settings (Kafka, schema registry, MLflow) use the same un-prefixed variable
names in every service, so one environment configures the whole constellation.
Service-specific settings subclass :class:`ServiceSettings` and set their own
``env_prefix`` (e.g. ``PREDICTOR_``), which applies only to the fields they add.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic


def _find_schemas_dir() -> Path:
    """Locate ``schemas/`` by walking up from this file (source checkout or image)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "schemas"
        if (candidate / "topics.yaml").is_file():
            return candidate
    return Path.cwd() / "schemas"


class PlatformSettings(BaseSettings):
    """Connection settings for the shared infrastructure."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_client_extra: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias="KAFKA_CLIENT_EXTRA",
        description="Extra librdkafka properties (JSON), e.g. security settings.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(
        None, validation_alias="KAFKA_SASL_USERNAME", description="The Kafka principal (User:<name>)."
    )
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081/apis/ccompat/v7", validation_alias="SCHEMA_REGISTRY_URL"
    )
    schema_registry_username: str | None = Field(
        None,
        validation_alias="SCHEMA_REGISTRY_USERNAME",
        description="HTTP basic auth user for the registry (needed to register or change schemas).",
    )
    schema_registry_password: SecretStr | None = Field(None, validation_alias="SCHEMA_REGISTRY_PASSWORD")
    mlflow_tracking_uri: str = Field("http://127.0.0.1:5000", validation_alias="MLFLOW_TRACKING_URI")
    schemas_dir: Path = Field(default_factory=_find_schemas_dir, validation_alias="SCHEMAS_DIR")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: str = Field("json", validation_alias="LOG_FORMAT", description="json | console")
    request_timeout_s: float = Field(5.0, validation_alias="KAFKA_REQUEST_TIMEOUT_S")
    api_keys: list[dict[str, Any]] = Field(
        default_factory=list,
        validation_alias="API_KEYS",
        description='API keys, JSON: [{"name", "role": viewer|producer|operator, "digest": "sha256:..."}]',
    )
    api_keys_file: Path | None = Field(
        None, validation_alias="API_KEYS_FILE", description="A JSON file with more API key entries."
    )

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def kafka_security_config(self) -> dict[str, Any]:
        """librdkafka security properties (protocol, SASL mechanism and credentials)."""
        config: dict[str, Any] = {"security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_uses_sasl:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            if self.kafka_sasl_username is not None:
                config["sasl.username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config

    def common_kafka_config(self) -> dict[str, Any]:
        """librdkafka properties every client shares: the brokers and the credentials."""
        return {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            **self.kafka_security_config(),
            **self.kafka_client_extra,
        }

    def producer_config(self, client_id: str, **overrides: Any) -> dict[str, Any]:
        """Idempotent, fully acknowledged producer: no duplicates or reordering on retry."""
        config: dict[str, Any] = {
            **self.common_kafka_config(),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": int(self.request_timeout_s * 6 * 1000),
        }
        config.update(overrides)
        return config

    def consumer_config(self, group_id: str, client_id: str, **overrides: Any) -> dict[str, Any]:
        """Consumer with manual commits: offsets move only after the work is done."""
        config: dict[str, Any] = {
            **self.common_kafka_config(),
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
        }
        config.update(overrides)
        return config

    def admin_config(self) -> dict[str, Any]:
        return self.common_kafka_config()

    def registry_config(self) -> dict[str, Any]:
        """SchemaRegistryClient configuration; basic auth when registry credentials are set."""
        config: dict[str, Any] = {"url": self.schema_registry_url}
        if self.schema_registry_username:
            password = (
                self.schema_registry_password.get_secret_value() if self.schema_registry_password else ""
            )
            config["basic.auth.user.info"] = f"{self.schema_registry_username}:{password}"
        return config


class ServiceSettings(PlatformSettings):
    """Base for a service's settings: its name, HTTP binding, instance identity, group and bindings.

    A service declares the topics it reads and writes once, in :meth:`bindings`; the
    stream loop and the producer take those bindings, and a test checks them against
    the service catalogue (``schemas/services.yaml``).
    """

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}")
    heartbeat_interval_s: float = 10.0
    system_metrics_interval_s: float = Field(
        30.0, ge=0, description="Period of the system.metrics events (process and host resources); 0: off."
    )
    system_metrics_topic: str = Field(
        Topic.SYSTEM_METRICS.value, description="Where system.metrics events go (tests use a private topic)."
    )
    group_id: str | None = Field(
        None, description="Consumer group shared by all instances; default: the service name."
    )

    @property
    def consumer_group(self) -> str:
        """The consumer group every instance of the service joins."""
        return self.group_id or self.service_name

    @property
    def heartbeats(self) -> Binding:
        """Where the runtime's heartbeats go: always the catalogue topic, keyed by service name."""
        return Binding.to(Topic.SYSTEM_HEALTH, key="service")

    @property
    def system_metrics(self) -> Binding:
        """Where the runtime's resource summaries go, keyed by service name."""
        return Binding.to(Topic.SYSTEM_METRICS, self.system_metrics_topic, key="service")

    def data_path(self) -> Path | None:
        """The directory the service keeps data in, if any: its disk space is reported."""
        return None

    def bindings(self) -> ServiceBindings:
        """The topics this service consumes and produces (a front door consumes none).

        Every service produces :attr:`heartbeats` and :attr:`system_metrics`; list them among the outputs.
        """
        return ServiceBindings(produces=(self.heartbeats, self.system_metrics))
