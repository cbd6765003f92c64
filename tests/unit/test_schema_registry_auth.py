"""Which registry requests count as writes, and the basic-auth check on them."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from schema_registry_server.auth import WriteAuth, is_write


@pytest.mark.parametrize(
    ("method", "path", "write"),
    [
        ("GET", "/subjects", False),
        ("GET", "/apis/ccompat/v7/subjects/s-value/versions/latest", False),
        ("POST", "/subjects/s-value", False),  # lookup
        ("POST", "/apis/ccompat/v7/subjects/s-value", False),
        ("POST", "/compatibility/subjects/s-value/versions/latest", False),
        ("POST", "/apis/ccompat/v7/compatibility/subjects/s-value/versions", False),
        ("POST", "/subjects/s-value/versions", True),  # register
        ("POST", "/apis/ccompat/v7/subjects/s-value/versions/", True),
        ("PUT", "/config", True),
        ("PUT", "/apis/ccompat/v7/config/s-value", True),
        ("DELETE", "/config/s-value", True),
        ("DELETE", "/subjects/s-value", True),
        ("DELETE", "/apis/ccompat/v7/subjects/s-value/versions/1", True),
        ("PUT", "/mode", True),
        ("POST", "/something/new", True),  # unknown: fail closed
    ],
)
def test_is_write(method: str, path: str, write: bool) -> None:
    assert is_write(method, path) is write


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_write_auth() -> None:
    auth = WriteAuth("writer", SecretStr("pw"))
    assert auth.refusal("GET", "/subjects", None) is None
    assert auth.refusal("POST", "/subjects/s/versions", header("writer", "pw")) is None
    assert "needs HTTP basic auth" in (auth.refusal("POST", "/subjects/s/versions", None) or "")
    assert "invalid username or password" in (auth.refusal("PUT", "/config", header("writer", "no")) or "")
    assert auth.refusal("PUT", "/config", header("other", "pw")) is not None
    assert auth.refusal("PUT", "/config", "Basic !!!not-base64") is not None
    assert auth.refusal("PUT", "/config", "Bearer token") is not None


def test_without_configured_credentials_writes_are_open() -> None:
    assert not WriteAuth(None, None).enabled
    assert WriteAuth(None, None).refusal("DELETE", "/subjects/s", None) is None
    assert not WriteAuth("writer", SecretStr("")).enabled
