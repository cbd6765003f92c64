"""Avro serde over the schema registry (Confluent wire format).

Built on ``confluent_kafka.schema_registry.avro``; its errors are re-raised as
:class:`~mlops_platform.errors.SerializationError` (bad data, unknown schema) or
:class:`~mlops_platform.errors.SchemaRegistryUnavailable` (registry down), so callers
can tell "dead-letter this record" from "retry later".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import httpx
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from mlops_platform.contracts import Catalogue, load_catalogue, value_subject
from mlops_platform.errors import SchemaRegistryUnavailable, SerializationError
from mlops_platform.settings import PlatformSettings

MAGIC_BYTE = 0


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code >= 500 or exc.http_status_code < 0
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


class AvroSerde:
    """Encodes and decodes event values of catalogue topics.

    Producers never auto-register: schemas are registered by provisioning, which is
    where compatibility is enforced. The local schema is used as the reader schema on
    decode, so a consumer sees records in the shape it was built for even after
    producers moved to a newer compatible version.
    """

    def __init__(self, settings: PlatformSettings, catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or load_catalogue(settings.schemas_dir)
        self.registry = SchemaRegistryClient(settings.registry_config())
        self._serializers: dict[str, AvroSerializer] = {}
        self._deserializers: dict[str, AvroDeserializer] = {}
        self._lock = threading.Lock()

    def _serializer(self, topic: str) -> AvroSerializer:
        serializer = self._serializers.get(topic)
        if serializer is None:
            with self._lock:
                serializer = self._serializers.get(topic)
                if serializer is None:
                    serializer = AvroSerializer(
                        self.registry,
                        self.catalogue.value_schema_str(topic),
                        conf={"auto.register.schemas": False},
                    )
                    self._serializers[topic] = serializer
        return serializer

    def _deserializer(self, topic: str) -> AvroDeserializer:
        deserializer = self._deserializers.get(topic)
        if deserializer is None:
            with self._lock:
                deserializer = self._deserializers.get(topic)
                if deserializer is None:
                    deserializer = AvroDeserializer(self.registry, self.catalogue.value_schema_str(topic))
                    self._deserializers[topic] = deserializer
        return deserializer

    def encode(self, topic: str, value: Mapping[str, Any], *, schema_topic: str | None = None) -> bytes:
        """Serialise ``value`` for ``topic``.

        ``schema_topic`` selects the contract when writing to a topic outside the
        catalogue (e.g. a test's private topic carrying catalogue events).
        """
        contract = schema_topic or topic
        try:
            data = self._serializer(contract)(dict(value), SerializationContext(contract, MessageField.VALUE))
        except Exception as exc:
            raise self._wrap(exc, topic, "encode") from exc
        if data is None:
            raise SerializationError(f"refusing to encode a null value for {topic}", topic=topic)
        return data

    def decode(self, topic: str, data: bytes | None, *, schema_topic: str | None = None) -> dict[str, Any]:
        """Deserialise a record value of ``topic`` into a dict."""
        contract = schema_topic or topic
        if not data:
            raise SerializationError(f"empty value on {topic}", topic=topic)
        if data[0] != MAGIC_BYTE or len(data) < 5:
            raise SerializationError(
                f"value on {topic} is not in the schema registry wire format (magic byte {data[0]})",
                topic=topic,
            )
        try:
            result = self._deserializer(contract)(data, SerializationContext(contract, MessageField.VALUE))
        except Exception as exc:
            raise self._wrap(exc, topic, "decode") from exc
        if not isinstance(result, dict):
            raise SerializationError(f"decoded value on {topic} is not a record", topic=topic)
        return result

    def register_all(self, compatibility: str = "BACKWARD") -> dict[str, int]:
        """Register every catalogue schema under ``<topic>-value``; returns schema ids.

        Idempotent: an unchanged schema returns its existing id. An incompatible
        change is refused by the registry and raised as :class:`SerializationError`.
        """
        ids: dict[str, int] = {}
        for spec in self.catalogue.schema_topics():
            subject = value_subject(spec.name)
            try:
                self.registry.set_compatibility(subject_name=subject, level=compatibility)
                ids[spec.name] = self.registry.register_schema(
                    subject, Schema(self.catalogue.value_schema_str(spec.name), "AVRO")
                )
            except Exception as exc:
                raise self._wrap(exc, spec.name, "register") from exc
        return ids

    def close(self) -> None:
        """Release the registry client's HTTP connections."""
        self.registry.close()

    @staticmethod
    def _wrap(exc: BaseException, topic: str, stage: str) -> Exception:
        if isinstance(exc, SerializationError | SchemaRegistryUnavailable):
            return exc
        if _is_unavailable(exc):
            return SchemaRegistryUnavailable(f"schema registry unavailable during {stage} for {topic}: {exc}")
        return SerializationError(f"cannot {stage} value for {topic}: {exc}", topic=topic, cause=exc)
