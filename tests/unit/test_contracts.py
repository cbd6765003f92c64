from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest
import yaml

from mlops_platform.contracts import Topic, dlq_topic, load_catalogue, make_event, value_subject
from mlops_platform.errors import ContractError
from mlops_platform.settings import PlatformSettings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CONSUMING_SERVICES = ["predictor", "drift-detector", "auto-responder", "recommender", "alerter"]


@pytest.fixture(scope="module")
def catalogue():  # type: ignore[no-untyped-def]
    return load_catalogue(SCHEMAS)


def test_topic_enum_matches_catalogue_file(catalogue) -> None:  # type: ignore[no-untyped-def]
    in_file = {spec.name for spec in catalogue.schema_topics()}
    assert in_file == {topic.value for topic in Topic}


def test_every_consuming_service_has_a_dead_letter_topic(catalogue) -> None:  # type: ignore[no-untyped-def]
    for service in CONSUMING_SERVICES:
        spec = catalogue.spec(dlq_topic(service))
        assert spec.is_dead_letter and spec.value_schema is None


def test_every_value_schema_parses_and_carries_the_envelope(catalogue) -> None:  # type: ignore[no-untyped-def]
    for spec in catalogue.schema_topics():
        schema = catalogue.value_schema(spec.name)
        fastavro.parse_schema(schema)  # raises on an invalid schema
        envelope = schema["fields"][0]
        assert envelope["name"] == "envelope"
        names = [f["name"] for f in envelope["type"]["fields"]]
        assert names == [
            "event_id",
            "event_time",
            "source",
            "correlation_id",
            "causation_id",
            "schema_version",
        ]


def test_every_field_is_documented_or_self_explaining(catalogue) -> None:  # type: ignore[no-untyped-def]
    for spec in catalogue.schema_topics():
        assert catalogue.value_schema(spec.name).get("doc"), f"{spec.name} has no doc"


def test_event_round_trips_through_avro(catalogue) -> None:  # type: ignore[no-untyped-def]
    schema = fastavro.parse_schema(catalogue.value_schema(Topic.PREDICTION_FEEDBACK))
    event = make_event("test", {"transaction_id": "t-1", "is_fraud": True, "label_source": "chargeback"})
    from io import BytesIO

    buffer = BytesIO()
    fastavro.schemaless_writer(buffer, schema, event)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, schema, schema)
    assert decoded["transaction_id"] == "t-1"
    assert decoded["envelope"]["event_id"] == event["envelope"]["event_id"]
    assert decoded["envelope"]["event_time"] == event["envelope"]["event_time"].replace(
        microsecond=event["envelope"]["event_time"].microsecond // 1000 * 1000
    )


def test_caused_event_keeps_correlation_and_names_its_cause() -> None:
    first = make_event("ingest", {"x": 1})
    second = make_event("predictor", {"y": 2}, cause=first["envelope"])
    third = make_event("drift-detector", {"z": 3}, cause=second["envelope"])
    assert first["envelope"]["causation_id"] is None
    assert first["envelope"]["correlation_id"] == first["envelope"]["event_id"]
    assert second["envelope"]["causation_id"] == first["envelope"]["event_id"]
    assert third["envelope"]["correlation_id"] == first["envelope"]["event_id"]
    assert third["envelope"]["causation_id"] == second["envelope"]["event_id"]


def test_unknown_topic_is_a_contract_error(catalogue) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ContractError, match="not in the catalogue"):
        catalogue.spec("no.such.topic")
    with pytest.raises(ContractError, match="raw bytes"):
        catalogue.value_schema_str(dlq_topic("predictor"))


def test_catalogue_rejects_a_missing_schema_file(tmp_path: Path) -> None:
    (tmp_path / "avro").mkdir()
    (tmp_path / "topics.yaml").write_text(
        yaml.safe_dump(
            {
                "defaults": {
                    "partitions": 1,
                    "replication_factor": 1,
                    "retention_ms": 1,
                    "cleanup_policy": "delete",
                },
                "topics": [{"name": "a.b", "value_schema": "missing.avsc"}],
            }
        )
    )
    with pytest.raises(ContractError, match="missing schema file"):
        load_catalogue(tmp_path)


def test_catalogue_defaults_and_overrides(catalogue) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((SCHEMAS / "topics.yaml").read_text())
    request = catalogue.spec(Topic.PREDICTION_REQUEST)
    assert request.partitions == 6
    assert catalogue.spec(Topic.DATA_INGESTED).partitions == raw["defaults"]["partitions"]
    assert catalogue.spec(Topic.SYSTEM_ACTIONS).retention_ms == -1
    assert value_subject("prediction.request") == "prediction.request-value"


def test_settings_default_schemas_dir_finds_the_checkout() -> None:
    settings = PlatformSettings()
    assert (settings.schemas_dir / "topics.yaml").is_file()
    assert json.loads((settings.schemas_dir / "avro" / "prediction.request.avsc").read_text())["name"]
