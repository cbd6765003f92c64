"""API credentials: keys mapped to roles, stored hashed, checked in constant time.

Every state-changing endpoint of every service requires a key with the right role;
read endpoints require at least ``viewer``; ``/health``, ``/ready`` and ``/metrics``
stay open for probes and scrapers.

- ``viewer`` reads; ``producer`` also writes events through ingest; ``operator`` also
  acts on the control plane (promote, rollback, acknowledge, refresh, manual actions).
- A client sends its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``
  (the form Alertmanager's ``http_config.authorization`` uses).
- Keys are random tokens; only their SHA-256 digests are configured (``API_KEYS`` as
  JSON, or a file named by ``API_KEYS_FILE``), so a leaked configuration does not leak
  a usable key. A presented key is hashed once and compared with every configured
  digest without stopping at the first match, so timing tells nothing about which
  keys exist. Without any key configured, every protected endpoint answers 401.

``python -m mlops_platform.auth generate NAME ROLE`` prints a new key and its entry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mlops_platform.errors import ContractError

DIGEST_PREFIX = "sha256:"


class Role(StrEnum):
    VIEWER = "viewer"
    PRODUCER = "producer"
    OPERATOR = "operator"


#: What each role may do: every role reads; producers and operators each add their own writes.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.PRODUCER: frozenset({Role.VIEWER, Role.PRODUCER}),
    Role.OPERATOR: frozenset({Role.VIEWER, Role.OPERATOR}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return role in GRANTS[self.role]

    @property
    def identity(self) -> str:
        """How the caller appears in events and logs: ``<role>:<name>``."""
        return f"{self.role.value}:{self.name}"


@dataclass(frozen=True)
class KeyEntry:
    name: str
    role: Role
    digest: bytes


def digest_of(key: str) -> str:
    """The configured form of a key: ``sha256:<hex>``."""
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _entry(raw: Any, where: str) -> KeyEntry:
    if not isinstance(raw, dict):
        raise ContractError(f"{where}: each API key entry must be an object with name, role, digest")
    try:
        name, role, digest = str(raw["name"]), Role(raw["role"]), str(raw["digest"])
    except (KeyError, ValueError) as exc:
        raise ContractError(f"{where}: bad API key entry {raw.get('name', '?')!r}: {exc}") from exc
    if not digest.startswith(DIGEST_PREFIX) or len(digest) != len(DIGEST_PREFIX) + 64:
        raise ContractError(f"{where}: API key {name!r} must be configured as its sha256:<hex> digest")
    return KeyEntry(name, role, bytes.fromhex(digest.removeprefix(DIGEST_PREFIX)))


class KeyStore:
    """The configured keys; authenticates a presented key."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self.entries = tuple(entries)

    @classmethod
    def load(cls, inline: list[dict[str, Any]] | None, path: Path | None) -> KeyStore:
        """Keys from the ``API_KEYS`` JSON list and/or the ``API_KEYS_FILE`` file (same format)."""
        entries = [_entry(raw, "API_KEYS") for raw in inline or []]
        if path is not None:
            try:
                raw_file = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ContractError(f"cannot read API keys file {path}: {exc}") from exc
            items = raw_file.get("keys", []) if isinstance(raw_file, dict) else raw_file
            entries += [_entry(raw, str(path)) for raw in items]
        return cls(entries)

    def authenticate(self, key: str) -> Principal | None:
        presented = hashlib.sha256(key.encode()).digest()
        found: KeyEntry | None = None
        for entry in self.entries:
            # No early exit: the time taken does not depend on which entry matches.
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry
        return Principal(found.name, found.role) if found else None


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer, ApiKey realm="mlops"'},
    )


@cache
def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency admitting callers whose key grants ``role``; returns the :class:`Principal`.

    Use as ``Depends(require(Role.OPERATOR))`` or through the ``Viewer`` / ``Producer`` /
    ``Operator`` annotations. The caller's identity is bound to the request's log lines.
    """

    async def authorize(
        request: Request,
        api_key: Annotated[str | None, Security(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Principal:
        key = api_key or (bearer.credentials if bearer is not None else None)
        if not key:
            raise _unauthorized("credentials required: send an API key as X-API-Key or Authorization: Bearer")
        store: KeyStore | None = getattr(request.app.state, "key_store", None)
        principal = store.authenticate(key) if store is not None else None
        if principal is None:
            raise _unauthorized("invalid credentials")
        if not principal.may(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role.value!r} may not do this ({role.value} only)",
            )
        request.state.principal = principal
        structlog.contextvars.bind_contextvars(principal=principal.identity)
        return principal

    authorize.__name__ = f"require_{role.value}"
    return authorize


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Producer = Annotated[Principal, Depends(require(Role.PRODUCER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]


def generate_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return "mk_" + secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_platform.auth", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="print a new key and the entry to configure")
    generate.add_argument("name")
    generate.add_argument("role", choices=[role.value for role in Role])
    commands.add_parser("digest", help="read a key on stdin, print its digest")
    args = parser.parse_args(argv)
    if args.command == "generate":
        key = generate_key()
        entry = {"name": args.name, "role": args.role, "digest": digest_of(key)}
        print(json.dumps({"key": key, "entry": entry}))
    else:
        print(digest_of(sys.stdin.readline().strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
