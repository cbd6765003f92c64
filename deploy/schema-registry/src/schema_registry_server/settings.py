"""Runtime configuration, read from environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schema_registry_server.compatibility import CompatibilityLevel


class Settings(BaseSettings):
    """Server settings.

    Every field maps to one environment variable (``SCHEMA_REGISTRY_<FIELD>``), except the Kafka
    bootstrap servers which use the project-wide ``KAFKA_BOOTSTRAP_SERVERS``.
    """

    model_config = SettingsConfigDict(env_prefix="SCHEMA_REGISTRY_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    topic: str = "_schemas"
    topic_replication_factor: int = Field(default=1, ge=1)
    default_compatibility: CompatibilityLevel = CompatibilityLevel.BACKWARD
    log_level: str = "INFO"
    kafka_timeout_seconds: float = Field(default=10.0, gt=0)
    """Upper bound for one Kafka operation (a write being acknowledged, a metadata request)."""
    startup_timeout_seconds: float = Field(default=60.0, gt=0)
    """How long start-up keeps retrying while Kafka is unreachable before giving up."""

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
