from __future__ import annotations

import pytest

from mlops_platform.settings import PlatformSettings, ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = {**ServiceSettings.model_config, "env_prefix": "DEMO_"}  # type: ignore[typeddict-item]
    service_name: str = "demo"
    batch_size: int = 10


def test_connection_settings_come_from_unprefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:29092")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://registry:8081")
    monkeypatch.setenv("DEMO_BATCH_SIZE", "42")
    monkeypatch.setenv("DEMO_HTTP_PORT", "9999")
    settings = DemoSettings()
    assert settings.kafka_bootstrap_servers == "broker:29092"
    assert settings.schema_registry_url == "http://registry:8081"
    assert settings.batch_size == 42
    assert settings.http_port == 9999


def test_producer_is_idempotent_and_fully_acknowledged() -> None:
    config = PlatformSettings().producer_config("svc")
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"


def test_consumer_commits_manually_and_reads_committed() -> None:
    config = PlatformSettings().consumer_config("group", "client")
    assert config["enable.auto.commit"] is False
    assert config["isolation.level"] == "read_committed"
    assert config["group.id"] == "group"


def test_extra_client_properties_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CLIENT_EXTRA", '{"security.protocol": "SSL"}')
    settings = PlatformSettings()
    assert settings.producer_config("p")["security.protocol"] == "SSL"
    assert settings.consumer_config("g", "c")["security.protocol"] == "SSL"
    assert settings.admin_config()["security.protocol"] == "SSL"
