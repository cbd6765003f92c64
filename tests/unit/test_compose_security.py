"""docker-compose's Kafka SASL/ACL and registry basic-auth wiring, checked structurally.

Every secret comes from the git-ignored ``.env`` (``${VAR:?...}`` interpolation), never from
the file itself; ``.env.example`` names every variable compose needs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_platform.service_catalogue import load_services
from mlops_platform.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def env_of(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {key: str(value) for key, value in compose["services"][name]["environment"].items()}


def test_kafka_authenticates_every_listener_and_authorises_with_acls_only(compose: dict[str, Any]) -> None:
    kafka = env_of(compose, "kafka")
    protocols = dict(pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, protocols
    for listener in ("INTERNAL", "EXTERNAL"):
        assert "SCRAM-SHA-512" in kafka[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"]
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    mounts = compose["services"]["kafka"]["volumes"]
    assert any(v.startswith("./deploy/kafka/kafka-jaas.conf:") for v in mounts)
    assert "KAFKA_ADMIN_PASSWORD" not in (ROOT / "deploy" / "kafka" / "kafka-jaas.conf").read_text()


def test_each_service_is_its_own_scram_principal(compose: dict[str, Any]) -> None:
    catalogue = load_services(PlatformSettings().schemas_dir)
    provision = env_of(compose, "provision")
    for spec in catalogue:
        env = env_of(compose, spec.name)
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"] == spec.name
        assert env["KAFKA_SASL_PASSWORD"].startswith(f"${{{spec.env_prefix}KAFKA_PASSWORD:?")
        # The provisioning job creates the user with that same password.
        assert provision[f"{spec.env_prefix}KAFKA_PASSWORD"] == env["KAFKA_SASL_PASSWORD"]
        # Services read schemas only.
        assert env["SCHEMA_REGISTRY_USERNAME"] == "registry-reader"


def test_provisioning_acts_as_admin_and_registry_writer(compose: dict[str, Any]) -> None:
    provision = env_of(compose, "provision")
    assert provision["KAFKA_SASL_USERNAME"] == "admin"
    assert provision["SCHEMA_REGISTRY_USERNAME"] == "registry-writer"


def test_the_registry_stores_through_sasl_and_wants_basic_auth(compose: dict[str, Any]) -> None:
    registry = env_of(compose, "schema-registry")
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].startswith("SASL_PLAINTEXT://")
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert registry["SCHEMA_REGISTRY_AUTHENTICATION_METHOD"] == "BASIC"
    assert "registry-jaas.conf" in registry["SCHEMA_REGISTRY_OPTS"]
    probe = " ".join(compose["services"]["schema-registry"]["healthcheck"]["test"])
    assert "-u " in probe
    ui = env_of(compose, "kafka-ui")
    assert ui["KAFKA_CLUSTERS_0_PROPERTIES_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert ui["KAFKA_CLUSTERS_0_SCHEMAREGISTRYAUTH_USERNAME"] == "registry-reader"


def test_no_secret_is_written_in_compose(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "grafana":  # its admin password has a documented local default
            continue
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if "PASSWORD" in key or "JAAS" in key:
                assert "${" in text or text == "", f"{name}.{key} holds a literal secret"
            for literal in re.findall(r'password="([^"]*)"', text):
                assert literal.startswith("${"), f"{name}.{key} holds a literal password"


def test_the_env_example_names_every_variable_compose_requires() -> None:
    required = set(REQUIRED.findall(COMPOSE.read_text()))
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    assert required == example
    assert all(line.endswith("=change-me") for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line)


def test_the_env_file_is_never_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True, check=False
    ).returncode
    assert ignored == 0, ".env must be git-ignored"


def test_the_three_brokers_profile_adds_two_nodes_with_the_same_security(compose: dict[str, Any]) -> None:
    services = compose["services"]
    single = env_of(compose, "kafka")
    voters = "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    for node_id, name in ((2, "kafka-2"), (3, "kafka-3")):
        assert services[name]["profiles"] == ["three-brokers"], "only with the profile"
        node = env_of(compose, name)
        assert node["KAFKA_NODE_ID"] == str(node_id)
        assert node["CLUSTER_ID"] == single["CLUSTER_ID"], "one cluster"
        assert node["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert f"INTERNAL://{name}:29092" in node["KAFKA_ADVERTISED_LISTENERS"]
        for key in (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "KAFKA_AUTHORIZER_CLASS_NAME",
            "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND",
            "KAFKA_SUPER_USERS",
            "KAFKA_SASL_ENABLED_MECHANISMS",
            "KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG",
        ):
            assert node[key] == single[key], key
        for key in (
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
        ):
            assert node[key] == "3", key
        assert node["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == node["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert f"{name}-data" in compose["volumes"]
        assert any(v.startswith(f"{name}-data:") for v in services[name]["volumes"])
        assert f"--bootstrap-server {name}:29092" in " ".join(services[name]["healthcheck"]["test"])
    # The first node takes the cluster's voters and replication from the same variables.
    assert single["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "${KAFKA_QUORUM_VOTERS:-1@kafka:9093}"
    assert single["KAFKA_MIN_INSYNC_REPLICAS"] == "${KAFKA_MIN_INSYNC_REPLICAS:-1}"
    # Provisioning waits for every broker the profile runs (and for none without it).
    provision = services["provision"]["depends_on"]
    for name in ("kafka-2", "kafka-3"):
        assert provision[name] == {"condition": "service_healthy", "required": False}
