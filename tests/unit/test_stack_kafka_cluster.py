"""The local stack's Kafka layout: one broker by default, ``KAFKA_BROKERS=3`` a three-node KRaft cluster.

``constellation.stack`` reads its environment once, at import: each case runs it in a fresh
interpreter with its own ``STACK_DIR`` and ports, and nothing is started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_platform.kafka.admin import placement

PROBE = """
import json
from constellation import stack
node = stack.KAFKA_NODES[-1]
stack._render_kafka_config(node, secured=True, admin_password="pw")
print(json.dumps({
    "nodes": [[n.node_id, n.name, n.port, n.controller_port, str(n.data)] for n in stack.KAFKA_NODES],
    "bootstrap": stack.KAFKA_BOOTSTRAP,
    "infra": stack.INFRA,
    "kafka_means": stack._components("kafka"),
    "env": {k: v for k, v in stack.platform_env().items() if k.endswith("REPLICATION_FACTOR")},
    "config": node.config.read_text(),
}))
"""


def probe(tmp_path: Path, **env: str) -> dict[str, Any]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STACK_"))},
        "STACK_DIR": str(tmp_path),
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_default_is_the_single_broker_of_earlier_stacks(tmp_path: Path) -> None:
    found = probe(tmp_path)
    assert found["nodes"] == [[1, "kafka", 9092, 9093, str(tmp_path / "kafka" / "data")]]
    assert found["bootstrap"] == "127.0.0.1:9092"
    assert found["kafka_means"] == ["kafka"]
    config = properties(found["config"])
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9093"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert config[key] == "1"
    assert config["transaction.state.log.min.isr"] == config["min.insync.replicas"] == "1"
    assert found["env"]["SCHEMA_REGISTRY_TOPIC_REPLICATION_FACTOR"] == "1"


def test_three_brokers_form_one_secured_cluster_on_consecutive_ports(tmp_path: Path) -> None:
    found = probe(tmp_path, KAFKA_BROKERS="3", KAFKA_PORT="19092")
    assert [n[:4] for n in found["nodes"]] == [
        [1, "kafka-1", 19092, 19095],
        [2, "kafka-2", 19093, 19096],
        [3, "kafka-3", 19094, 19097],
    ]
    assert len({n[4] for n in found["nodes"]}) == 3, "each node has its own data folder"
    assert found["bootstrap"] == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert found["infra"][:3] == found["kafka_means"] == ["kafka-1", "kafka-2", "kafka-3"]
    config = properties(found["config"])
    assert config["node.id"] == "3"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19095,2@127.0.0.1:19096,3@127.0.0.1:19097"
    assert config["listeners"] == "BROKER://127.0.0.1:19094,CONTROLLER://127.0.0.1:19097"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "default.replication.factor",
    ):
        assert config[key] == "3", key
    assert config["transaction.state.log.min.isr"] == config["min.insync.replicas"] == "2"
    # The same security as the single broker.
    assert config["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert config["listener.security.protocol.map"] == "BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert found["env"]["SCHEMA_REGISTRY_TOPIC_REPLICATION_FACTOR"] == "3"


def test_a_bad_broker_count_is_refused_clearly(tmp_path: Path) -> None:
    environment = {**os.environ, "STACK_DIR": str(tmp_path), "KAFKA_BROKERS": "three"}
    result = subprocess.run(
        [sys.executable, "-m", "constellation", "stack", "status"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "KAFKA_BROKERS must be a positive number of brokers" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("wanted", "brokers", "expected"),
    [(3, 1, (1, 1)), (3, 2, (2, 1)), (3, 3, (3, 2)), (3, 5, (3, 2)), (1, 3, (1, 1)), (5, 5, (5, 2))],
)
def test_catalogue_replication_follows_the_cluster(
    wanted: int, brokers: int, expected: tuple[int, int]
) -> None:
    assert placement(wanted, brokers) == expected


def test_placement_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        placement(3, 0)
