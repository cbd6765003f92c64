"""The project's own exception types; library errors are re-raised as these."""

from __future__ import annotations


class PlatformError(Exception):
    """Base of every error raised by mlops_platform."""


class ContractError(PlatformError):
    """A topic or schema is not part of the catalogue, or a schema file is invalid."""


class SerializationError(PlatformError):
    """A value could not be encoded to, or decoded from, its Avro contract."""

    def __init__(self, message: str, *, topic: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        self.cause = cause


class SchemaRegistryUnavailable(PlatformError):
    """The schema registry could not be reached or answered with a server error."""


class KafkaUnavailable(PlatformError):
    """The Kafka cluster could not be reached or did not acknowledge in time."""


class PublishError(PlatformError):
    """Kafka refused or failed to acknowledge a produced message."""
