"""Contracts against the real registry: provisioning, the compatibility gate, durability."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from mlops_platform.contracts import Topic, load_catalogue, make_event, value_subject
from mlops_platform.kafka import EventProducer
from mlops_platform.provision import check_compatibility
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.conftest import consume

ROOT = Path(__file__).resolve().parents[2]


def test_provisioning_created_every_topic_and_subject(
    platform_settings: PlatformSettings, serde: AvroSerde, schema_registry: str
) -> None:
    catalogue = load_catalogue(platform_settings.schemas_dir)
    topics = AdminClient(platform_settings.admin_config()).list_topics(timeout=10).topics
    for spec in catalogue.topics:
        assert spec.name in topics, f"{spec.name} missing"
        assert len(topics[spec.name].partitions) == spec.partitions
    subjects = set(httpx.get(f"{schema_registry}/subjects", timeout=10).json())
    for spec in catalogue.schema_topics():
        subject = value_subject(spec.name)
        assert subject in subjects
        config = httpx.get(f"{schema_registry}/config/{subject}", timeout=10).json()
        assert config["compatibilityLevel"] == "BACKWARD"


def _private_catalogue(tmp_path: Path, topic: str) -> Path:
    """A schemas dir holding one private topic whose contract starts as prediction.feedback's."""
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas" / "avro", schemas / "avro")
    shutil.copy(schemas / "avro" / "prediction.feedback.avsc", schemas / "avro" / "private.avsc")
    (schemas / "topics.yaml").write_text(
        yaml.safe_dump(
            {
                "defaults": {
                    "partitions": 1,
                    "replication_factor": 1,
                    "retention_ms": 3600000,
                    "cleanup_policy": "delete",
                },
                "topics": [{"name": topic, "value_schema": "private.avsc"}],
            }
        )
    )
    return schemas


def _edit_schema(schemas: Path, edit: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    path = schemas / "avro" / "private.avsc"
    schema = json.loads(path.read_text())
    edit(schema)
    path.write_text(json.dumps(schema, indent=2))
    load_catalogue.cache_clear()


def test_compatibility_gate_rejects_a_breaking_change_with_a_readable_diff(
    platform_settings: PlatformSettings, schema_registry: str, tmp_path: Path
) -> None:
    topic = f"test.compat.{uuid.uuid4().hex[:8]}"
    schemas = _private_catalogue(tmp_path, topic)
    settings = platform_settings.model_copy(update={"schemas_dir": schemas})
    AvroSerde(settings, load_catalogue(schemas)).register_all()

    def add_optional_field(schema: dict) -> None:  # type: ignore[type-arg]
        schema["fields"].append({"name": "reviewer", "type": ["null", "string"], "default": None})

    _edit_schema(schemas, add_optional_field)
    [report] = check_compatibility(settings, load_catalogue(schemas))
    assert report.compatible, report.render()

    def retype_label(schema: dict) -> None:  # type: ignore[type-arg]
        for field in schema["fields"]:
            if field["name"] == "is_fraud":
                field["type"] = "string"

    _edit_schema(schemas, retype_label)
    [report] = check_compatibility(settings, load_catalogue(schemas))
    assert not report.compatible
    assert report.messages, "the registry explains why"
    removed = [line for line in report.diff.splitlines() if line.startswith("-")]
    added = [line for line in report.diff.splitlines() if line.startswith("+")]
    assert any('"boolean"' in line for line in removed), report.diff
    assert any('"string"' in line for line in added), report.diff

    # The command-line gate fails the same way and prints the diff.
    env = {**os.environ, "SCHEMAS_DIR": str(schemas), "SCHEMA_REGISTRY_URL": schema_registry}
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "mlops_platform.provision", "check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"INCOMPATIBLE {topic}-value" in result.stdout
    assert "is_fraud" in result.stdout

    # Registration through the registry is refused too (409), so nothing slips past the gate;
    # as the registry's writer, or the answer would be 401 before the schema is even read.
    user, _, password = settings.registry_config().get("basic.auth.user.info", ":").partition(":")
    answer = httpx.post(
        f"{schema_registry}/subjects/{topic}-value/versions",
        json={"schema": load_catalogue(schemas).value_schema_str(topic)},
        auth=(user, password),
        timeout=10,
    )
    assert answer.status_code == 409


def test_events_written_before_a_registry_restart_decode_after_it(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    topic = topic_factory("durable")
    event = make_event("test", {"transaction_id": "before-restart", "is_fraud": False, "label_source": "x"})
    EventProducer(platform_settings, "test", serde).publish(
        topic, event, schema_topic=Topic.PREDICTION_FEEDBACK
    )

    restart = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "constellation", "stack", "restart", "schema-registry"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert "schema-registry: started" in restart.stdout, "the registry process was really restarted"

    [msg] = consume(consumer_factory(topic), 1)
    fresh = AvroSerde(platform_settings)  # new client: nothing cached from before the restart
    decoded = fresh.decode(topic, msg.value(), schema_topic=Topic.PREDICTION_FEEDBACK)
    assert decoded["transaction_id"] == "before-restart"
