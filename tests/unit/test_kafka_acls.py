"""The Kafka ACLs generated from the service catalogue, and the stack's credentials file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from constellation import acls, credentials
from mlops_platform.service_catalogue import ServiceSpec, load_services
from mlops_platform.settings import PlatformSettings


def catalogue() -> list[ServiceSpec]:
    return list(load_services(PlatformSettings().schemas_dir))


def grants(spec: ServiceSpec) -> set[tuple[str, str, str, str]]:
    return {(acl.operation, acl.resource, acl.pattern, acl.name) for acl in acls.service_acls(spec)}


def test_the_recommenders_acls_are_exactly_what_its_catalogue_entry_implies() -> None:
    spec = next(spec for spec in catalogue() if spec.name == "recommender")
    assert {acl.principal for acl in acls.service_acls(spec)} == {"User:recommender"}
    expected = {
        *(
            (op, "TOPIC", "LITERAL", topic)
            for topic in (
                "recommendations.updated",
                "push.recommendations",
                "system.health",
                "system.metrics",
                "dlq.recommender",
            )
            for op in ("WRITE", "DESCRIBE")
        ),
        *(
            (op, "TOPIC", "LITERAL", topic)
            for topic in (
                "business.user.interaction",
                "business.recommendation.clicked",
                "business.feedback.received",
            )
            for op in ("READ", "DESCRIBE")
        ),
        ("READ", "GROUP", "LITERAL", "recommender"),
        ("WRITE", "TRANSACTIONAL_ID", "PREFIXED", "recommender-"),
        ("DESCRIBE", "TRANSACTIONAL_ID", "PREFIXED", "recommender-"),
        ("IDEMPOTENT_WRITE", "CLUSTER", "LITERAL", "kafka-cluster"),
        # Faust's changelogs and command topic, which it creates itself.
        ("ALL", "TOPIC", "PREFIXED", "recommender-"),
    }
    assert grants(spec) == expected


def test_instance_groups_are_prefixed_grants() -> None:
    spec = next(spec for spec in catalogue() if spec.name == "predictor")
    groups = {(acl.pattern, acl.name) for acl in acls.service_acls(spec) if acl.resource == "GROUP"}
    assert groups == {("LITERAL", "predictor"), ("PREFIXED", "predictor-model-events-")}


@pytest.mark.parametrize("spec", catalogue(), ids=lambda spec: spec.name)
def test_every_service_may_do_what_its_entry_says_and_write_nothing_else(spec: ServiceSpec) -> None:
    generated = grants(spec)
    for topic in spec.produces:
        assert ("WRITE", "TOPIC", "LITERAL", topic) in generated
    for topic in spec.consumes:
        assert ("READ", "TOPIC", "LITERAL", topic) in generated
    written = {name for op, resource, pattern, name in generated if resource == "TOPIC" and op == "WRITE"}
    assert written == {*spec.produces, *([spec.dead_letters] if spec.dead_letters else [])}
    read = {name for op, resource, _pattern, name in generated if resource == "TOPIC" and op == "READ"}
    assert read == set(spec.consumes)
    for _op, resource, pattern, name in generated:
        if resource == "TOPIC" and pattern == "PREFIXED" or resource == "TRANSACTIONAL_ID":
            assert name.startswith(spec.name), f"{spec.name} gets a prefix it does not own: {name}"
    assert all(acl.principal == f"User:{spec.name}" for acl in acls.service_acls(spec))


def test_principals_never_share_a_grant() -> None:
    every = acls.catalogue_acls(catalogue())
    assert len(every) == len(set(every))


def test_credentials_file_is_private_stable_and_grows_with_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    first = credentials.ensure(["ingest"], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first.kafka) == {"admin", "ingest"}
    assert len(first.admin_password) >= 24 and first.admin_password != first.password("ingest")
    again = credentials.ensure(["ingest", "alerter"], path)
    assert again.password("ingest") == first.password("ingest")
    assert again.admin_password == first.admin_password
    assert again.registry_password == first.registry_password
    assert set(again.kafka) == {"admin", "ingest", "alerter"}
    env = again.kafka_env("alerter")
    assert env["KAFKA_SASL_USERNAME"] == "alerter"
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"


def test_operator_env_keeps_credentials_the_environment_already_names(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    credentials.ensure([], path)
    own = {"KAFKA_SASL_USERNAME": "someone", "KAFKA_SASL_PASSWORD": "theirs"}
    assert credentials.export_operator_env(own, path)
    assert own["KAFKA_SASL_USERNAME"] == "someone" and own["KAFKA_SASL_PASSWORD"] == "theirs"
    assert own["SCHEMA_REGISTRY_USERNAME"] == credentials.REGISTRY_WRITER
    empty: dict[str, str] = {}
    assert credentials.export_operator_env(empty, path)
    assert empty["KAFKA_SASL_USERNAME"] == "admin"
    assert not credentials.export_operator_env({}, tmp_path / "missing.json")


def test_shared_settings_give_every_client_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "predictor")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SCHEMA_REGISTRY_USERNAME", "writer")
    monkeypatch.setenv("SCHEMA_REGISTRY_PASSWORD", "pw")
    settings = PlatformSettings()
    for config in (
        settings.admin_config(),
        settings.producer_config("p"),
        settings.consumer_config("g", "c"),
    ):
        assert config["security.protocol"] == "sasl_plaintext"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "predictor"
        assert config["sasl.password"] == "s3cret"
    assert settings.registry_config()["basic.auth.user.info"] == "writer:pw"
    # Never in a repr or a log line.
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_plaintext_settings_add_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "SCHEMA_REGISTRY_USERNAME",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = PlatformSettings()
    assert "sasl.username" not in settings.admin_config()
    assert "basic.auth.user.info" not in settings.registry_config()


def test_the_recommenders_faust_app_gets_the_same_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    from recommender.config import Settings
    from recommender.service import faust_credentials

    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "recommender")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    creds = faust_credentials(Settings())
    assert creds is not None
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "recommender",
        "s3cret",
        "SCRAM-SHA-512",
    )
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert faust_credentials(Settings()) is None
