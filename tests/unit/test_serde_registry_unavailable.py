"""A registry that cannot be reached is "unavailable" (a 503 upstream), not a broken contract.

The registry client raises its own HTTP library's errors (a vendored copy of httpx in
confluent-kafka 2.16), so the serde judges by the chain of causes.
"""

from __future__ import annotations

import pytest

from mlops_platform.errors import SchemaRegistryUnavailable, SerializationError
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings


class VendoredConnectError(Exception):
    """Stands for an HTTP library's connect error that is no subclass of ours."""


def refused() -> VendoredConnectError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as cause:
            raise VendoredConnectError("[Errno 111] Connection refused") from cause
    except VendoredConnectError as exc:
        return exc


def test_a_refused_connection_deep_in_the_causes_is_unavailability() -> None:
    wrapped = AvroSerde._wrap(refused(), "prediction.request", "encode")
    assert isinstance(wrapped, SchemaRegistryUnavailable)


def test_an_encoding_error_stays_a_serialization_error() -> None:
    wrapped = AvroSerde._wrap(ValueError("amount is not a double"), "prediction.request", "encode")
    assert isinstance(wrapped, SerializationError)


def test_the_real_client_against_a_closed_port_is_unavailability() -> None:
    serde = AvroSerde(PlatformSettings(schema_registry_url="http://127.0.0.1:1"))
    with pytest.raises(SchemaRegistryUnavailable):
        serde.encode("prediction.request", {"x": 1})
