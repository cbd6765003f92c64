"""The event bus contract: topic catalogue, value schemas and the common envelope.

Topic names are public (external producers and consumers rely on them), so they
live in one place, ``schemas/topics.yaml``, and :class:`Topic` mirrors that file
for typed use in code (a unit test keeps the two equal).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from mlops_platform.errors import ContractError

ENVELOPE_TYPE = "com.mlops.common.Envelope"
ENVELOPE_FILE = f"{ENVELOPE_TYPE}.avsc"
DLQ_PREFIX = "dlq."


class Topic(StrEnum):
    """Every topic of the catalogue with a value schema."""

    DATA_INGESTED = "data.ingested"
    DATA_QUALITY_ISSUES = "data.quality.issues"
    DATA_DRIFT_DETECTED = "data.drift.detected"
    DATA_PROCESSED = "data.processed"
    MODEL_TRAINING_STARTED = "model.training.started"
    MODEL_TRAINING_COMPLETED = "model.training.completed"
    MODEL_EVALUATION_COMPLETED = "model.evaluation.completed"
    MODEL_DEPLOYED = "model.deployed"
    MODEL_PERFORMANCE_DEGRADED = "model.performance.degraded"
    PREDICTION_REQUEST = "prediction.request"
    PREDICTION_COMPLETED = "prediction.completed"
    PREDICTION_FEEDBACK = "prediction.feedback"
    SYSTEM_ALERTS = "system.alerts"
    SYSTEM_HEALTH = "system.health"
    SYSTEM_METRICS = "system.metrics"
    SYSTEM_ACTIONS = "system.actions"
    SYSTEM_SCALE_REQUESTED = "system.scale.requested"
    BUSINESS_USER_INTERACTION = "business.user.interaction"
    BUSINESS_RECOMMENDATION_CLICKED = "business.recommendation.clicked"
    BUSINESS_FEEDBACK_RECEIVED = "business.feedback.received"
    RECOMMENDATIONS_UPDATED = "recommendations.updated"
    PUSH_RECOMMENDATIONS = "push.recommendations"
    DRIFT_DETECTOR_PARTIALS = "drift-detector-partials"


def dlq_topic(service: str) -> str:
    """Name of a consuming service's dead-letter topic."""
    return f"{DLQ_PREFIX}{service}"


def value_subject(topic: str) -> str:
    """Schema registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


@dataclass(frozen=True)
class TopicSpec:
    """One catalogue entry."""

    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    cleanup_policy: str
    value_schema: str | None

    @property
    def is_dead_letter(self) -> bool:
        return self.name.startswith(DLQ_PREFIX)

    def kafka_config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


@dataclass(frozen=True)
class Catalogue:
    """The topic catalogue loaded from ``schemas/topics.yaml`` plus the Avro files beside it."""

    schemas_dir: Path
    topics: tuple[TopicSpec, ...]

    def spec(self, topic: str) -> TopicSpec:
        for spec in self.topics:
            if spec.name == topic:
                return spec
        raise ContractError(f"topic {topic!r} is not in the catalogue {self.schemas_dir / 'topics.yaml'}")

    def value_schema_str(self, topic: str) -> str:
        """The topic's value schema as registered: the envelope type inlined."""
        spec = self.spec(topic)
        if spec.value_schema is None:
            raise ContractError(f"topic {topic!r} carries raw bytes and has no value schema")
        return _load_schema(
            self.schemas_dir / "avro" / spec.value_schema, self.schemas_dir / "avro" / ENVELOPE_FILE
        )

    def value_schema(self, topic: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.value_schema_str(topic))
        return parsed

    def schema_topics(self) -> list[TopicSpec]:
        return [spec for spec in self.topics if spec.value_schema is not None]


def _load_schema(path: Path, envelope_path: Path) -> str:
    try:
        schema = json.loads(path.read_text())
        envelope = json.loads(envelope_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"cannot read Avro schema {path}: {exc}") from exc
    # The envelope is one named type shared by every event; inlining it keeps each
    # registered schema self-contained (no schema references for clients to resolve).
    for field in schema.get("fields", []):
        if field.get("type") == ENVELOPE_TYPE:
            field["type"] = envelope
            break
    return json.dumps(schema, separators=(",", ":"))


@lru_cache(maxsize=8)
def load_catalogue(schemas_dir: Path) -> Catalogue:
    """Load and validate the topic catalogue."""
    path = schemas_dir / "topics.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"cannot read topic catalogue {path}: {exc}") from exc
    defaults = raw.get("defaults", {})
    specs: list[TopicSpec] = []
    for entry in raw["topics"]:
        merged = {**defaults, **entry}
        schema = merged.get("value_schema")
        if schema is not None and not (schemas_dir / "avro" / schema).is_file():
            raise ContractError(f"topic {merged['name']!r} names missing schema file {schema}")
        specs.append(
            TopicSpec(
                name=str(merged["name"]),
                partitions=int(merged["partitions"]),
                replication_factor=int(merged["replication_factor"]),
                retention_ms=int(merged["retention_ms"]),
                cleanup_policy=str(merged["cleanup_policy"]),
                value_schema=schema,
            )
        )
    names = [spec.name for spec in specs]
    if len(names) != len(set(names)):
        raise ContractError(f"duplicate topic names in {path}")
    return Catalogue(schemas_dir=schemas_dir, topics=tuple(specs))


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_envelope(
    source: str,
    cause: Mapping[str, Any] | None = None,
    *,
    event_time: datetime | None = None,
    schema_version: int = 1,
) -> dict[str, Any]:
    """Envelope of a new event.

    ``cause`` is the envelope of the event that caused this one: the new event keeps
    its correlation id and names it as the cause, so any action can be traced back
    to the original fact.
    """
    event_id = str(uuid.uuid4())
    return {
        "event_id": event_id,
        "event_time": event_time or utc_now(),
        "source": source,
        "correlation_id": str(cause["correlation_id"]) if cause else event_id,
        "causation_id": str(cause["event_id"]) if cause else None,
        "schema_version": schema_version,
    }


def make_event(
    source: str, payload: Mapping[str, Any], cause: Mapping[str, Any] | None = None, **envelope_kw: Any
) -> dict[str, Any]:
    """An event value ready to serialise: a new envelope plus the payload fields.

    An ``envelope`` key inside ``payload`` (e.g. when deriving from a decoded event)
    is replaced, never reused: every event gets its own identity.
    """
    fields = {key: value for key, value in payload.items() if key != "envelope"}
    return {"envelope": new_envelope(source, cause, **envelope_kw), **fields}
