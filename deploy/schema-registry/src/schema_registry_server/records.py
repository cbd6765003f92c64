"""Records of the schemas topic: JSON keys and values, one record per fact.

The layout mirrors Confluent's ``_schemas`` topic so the log is easy to inspect with any Kafka tool:

* ``{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`` ->
  ``{"subject":S,"version":V,"id":N,"schema":"...","deleted":false}``. A soft delete re-writes the
  value with ``"deleted":true``; a hard delete writes a tombstone (null value), which compaction later
  removes together with the earlier values of that key.
* ``{"keytype":"CONFIG","subject":S|null,"magic":0}`` -> ``{"compatibilityLevel":"FULL"}``, or a
  tombstone when the setting is removed (``null`` subject = global setting).
* ``{"keytype":"SCHEMA_ID_WATERMARK","magic":0}`` -> ``{"max_id":N}``, written with hard deletes.
  Ids are derived from the log (highest id seen + 1); once compaction drops the tombstoned records of
  the highest id, this record is what stops that id from being handed out again to a different
  schema (old messages on topics still carry it).

The topic has one partition and is compacted, so the latest record of each key is the state and the
replay order is the write order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schema_registry_server.compatibility import CompatibilityLevel


class CorruptRecordError(ValueError):
    """A record of a known type whose value cannot be understood."""


@dataclass(frozen=True)
class SchemaRecord:
    """A version of a subject (``schema`` None means the version was hard deleted)."""

    subject: str
    version: int
    schema_id: int | None = None
    schema: str | None = None
    deleted: bool = False

    @property
    def tombstone(self) -> bool:
        """Whether this record removes the version."""
        return self.schema is None


@dataclass(frozen=True)
class ConfigRecord:
    """A compatibility setting; ``subject`` None is the global one, ``level`` None removes it."""

    subject: str | None
    level: CompatibilityLevel | None


@dataclass(frozen=True)
class IdWatermarkRecord:
    """The highest schema id ever handed out."""

    max_id: int


LogRecord = SchemaRecord | ConfigRecord | IdWatermarkRecord


def _dump(document: dict[str, Any]) -> bytes:
    # Compaction compares key bytes, so the encoding must be deterministic.
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(record: LogRecord) -> tuple[bytes, bytes | None]:
    """Serialise a record to its Kafka ``(key, value)``; value None is a tombstone."""
    if isinstance(record, SchemaRecord):
        key = _dump({"keytype": "SCHEMA", "subject": record.subject, "version": record.version, "magic": 1})
        if record.tombstone:
            return key, None
        return key, _dump(
            {
                "subject": record.subject,
                "version": record.version,
                "id": record.schema_id,
                "schema": record.schema,
                "deleted": record.deleted,
            }
        )
    if isinstance(record, ConfigRecord):
        key = _dump({"keytype": "CONFIG", "subject": record.subject, "magic": 0})
        if record.level is None:
            return key, None
        return key, _dump({"compatibilityLevel": record.level.value})
    return _dump({"keytype": "SCHEMA_ID_WATERMARK", "magic": 0}), _dump({"max_id": record.max_id})


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecordError(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CorruptRecordError(f"{what} is not a JSON object")
    return document


def _int(document: dict[str, Any], name: str) -> int:
    value = document.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CorruptRecordError(f"field {name!r} must be a non-negative integer, got {value!r}")
    return value


def decode(key: bytes | None, value: bytes | None) -> LogRecord | None:
    """Parse a Kafka record of the schemas topic.

    Returns None for keys this server does not know (other tools, future record types) so they can be
    skipped, and raises ``CorruptRecordError`` for a known key type with an unusable value: silently
    skipping a schema would let its id be handed out again.
    """
    if key is None:
        return None
    try:
        key_doc = _load(key, "key")
    except CorruptRecordError:
        return None
    keytype = key_doc.get("keytype")
    if keytype == "SCHEMA":
        subject = key_doc.get("subject")
        if not isinstance(subject, str):
            raise CorruptRecordError(f"SCHEMA key without a subject: {key_doc}")
        version = _int(key_doc, "version")
        if value is None:
            return SchemaRecord(subject=subject, version=version)
        doc = _load(value, "SCHEMA value")
        schema = doc.get("schema")
        if not isinstance(schema, str):
            raise CorruptRecordError(f"SCHEMA value without a schema string: {doc}")
        return SchemaRecord(
            subject=subject,
            version=version,
            schema_id=_int(doc, "id"),
            schema=schema,
            deleted=bool(doc.get("deleted", False)),
        )
    if keytype == "CONFIG":
        config_subject = key_doc.get("subject")
        if config_subject is not None and not isinstance(config_subject, str):
            raise CorruptRecordError(f"CONFIG key with a non-string subject: {key_doc}")
        if value is None:
            return ConfigRecord(subject=config_subject, level=None)
        doc = _load(value, "CONFIG value")
        try:
            level = CompatibilityLevel.parse(doc.get("compatibilityLevel"))
        except ValueError as exc:
            raise CorruptRecordError(str(exc)) from None
        return ConfigRecord(subject=config_subject, level=level)
    if keytype == "SCHEMA_ID_WATERMARK":
        if value is None:
            return None
        return IdWatermarkRecord(max_id=_int(_load(value, "watermark value"), "max_id"))
    return None
