"""Runtime configuration, read from environment variables."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schema_registry_server.compatibility import CompatibilityLevel


class Settings(BaseSettings):
    """Server settings.

    Every field maps to one environment variable (``SCHEMA_REGISTRY_<FIELD>``), except the Kafka
    connection (bootstrap servers and SASL credentials), which uses the project-wide
    ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` variables.

    ``auth_username`` / ``auth_password`` (``SCHEMA_REGISTRY_AUTH_USERNAME`` / ``_PASSWORD``) are
    the HTTP basic-auth credentials every state-changing request must carry (register, delete,
    config and mode changes); reads, lookups and compatibility checks stay open. Without them the
    registry accepts anonymous writes and says so at start-up.
    """

    model_config = SettingsConfigDict(env_prefix="SCHEMA_REGISTRY_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: str = Field(default="SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(default=None, validation_alias="KAFKA_SASL_PASSWORD")
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    topic: str = "_schemas"
    topic_replication_factor: int = Field(default=1, ge=1)
    default_compatibility: CompatibilityLevel = CompatibilityLevel.BACKWARD
    log_level: str = "INFO"
    kafka_timeout_seconds: float = Field(default=10.0, gt=0)
    """Upper bound for one Kafka operation (a write being acknowledged, a metadata request)."""
    startup_timeout_seconds: float = Field(default=60.0, gt=0)
    """How long start-up keeps retrying while Kafka is unreachable before giving up."""

    @property
    def write_auth_enabled(self) -> bool:
        return bool(self.auth_username and self.auth_password and self.auth_password.get_secret_value())

    def kafka_security_config(self) -> dict[str, Any]:
        """librdkafka security properties of the store's clients."""
        config: dict[str, Any] = {"security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_security_protocol.startswith("SASL_"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            if self.kafka_sasl_username is not None:
                config["sasl.username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config

    @field_validator("default_compatibility", mode="before")
    @classmethod
    def _parse_level(cls, value: object) -> CompatibilityLevel:
        return CompatibilityLevel.parse(value)

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            raise ValueError(f"unknown log level {value!r}")
        return level
