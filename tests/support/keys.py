"""API keys of the test session: one per role, generated at import, never written anywhere.

The digests go to every service the tests start (``API_KEYS`` in the launcher's
environment) and to the in-process apps (this module sets ``API_KEYS`` in ``os.environ``
when imported, before any settings are read); the plaintext keys stay in this process.
``headers(role)`` is what a request with a role's key sends.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

from fastapi.testclient import TestClient

from mlops_platform.auth import KeyStore, Role, digest_of, generate_key

#: The plaintext key of each role (names: ``test-<role>``).
KEYS: Final[dict[Role, str]] = {role: generate_key() for role in Role}


def name_of(role: Role | str) -> str:
    return f"test-{Role(role).value}"


def entries() -> list[dict[str, str]]:
    """The configured form of the keys: name, role and digest (no plaintext)."""
    return [
        {"name": name_of(role), "role": role.value, "digest": digest_of(key)} for role, key in KEYS.items()
    ]


#: ``API_KEYS`` for a service: the digests of the session's keys.
API_KEYS_ENV: Final[str] = json.dumps(entries())


def store() -> KeyStore:
    """The key store of an app the test builds without the platform's app factory."""
    return KeyStore.load(entries(), None)


def key(role: Role | str) -> str:
    return KEYS[Role(role)]


def headers(role: Role | str | None) -> dict[str, str]:
    """The header carrying ``role``'s key (none for ``None``: an anonymous request)."""
    return {} if role is None else {"X-API-Key": key(role)}


def identity(role: Role | str) -> str:
    """How a caller with ``role``'s key appears in events and logs."""
    return f"{Role(role).value}:{name_of(role)}"


#: ``role`` argument meaning "the role this endpoint needs" (see :func:`needed_role`).
NEEDED: Any = object()

#: Writes that need a producer key besides ingest's (every other write needs an operator key).
_PRODUCER_WRITES = ("/alertmanager", "/score")


def needed_role(service: str, method: str, path: str) -> Role:
    """The role a test request uses by default: viewers read, producers send data, operators act."""
    if method.upper() in ("GET", "HEAD"):
        return Role.VIEWER
    if service.split(".")[0] == "ingest" or path.split("?")[0] in _PRODUCER_WRITES:
        return Role.PRODUCER
    return Role.OPERATOR


def with_key(service: str, method: str, path: str, role: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of an HTTP call with the key's header added (explicit headers win)."""
    chosen = needed_role(service, method, path) if role is NEEDED else role
    kwargs["headers"] = {**headers(chosen), **dict(kwargs.get("headers") or {})}
    return kwargs


class KeyedClient(TestClient):
    """A ``TestClient`` sending the key each endpoint needs (``role=`` overrides, ``None``: anonymous)."""

    def __init__(self, app: Any, service: str, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.service = service

    def request(self, method: str, url: Any, *args: Any, role: Any = NEEDED, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().request(method, url, *args, **with_key(self.service, method, str(url), role, kwargs))


# In-process apps built by the tests read their keys from the environment, like services do.
os.environ["API_KEYS"] = API_KEYS_ENV
os.environ.pop("API_KEYS_FILE", None)
