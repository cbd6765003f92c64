"""Credentials of the local stack: one Kafka (SASL/SCRAM) principal per service, an admin, a registry writer.

The first ``stack up`` generates random passwords into ``$STACK_DIR/credentials.json``
(git-ignored, mode 0600); later starts reuse them and add a password for a service that
joined the catalogue since. Nothing here prints a password.

* ``admin`` is the broker's super user: the broker itself (inter-broker and controller
  connections), provisioning, the schema registry's Kafka store and operator commands.
* each catalogue service is its own principal (``User:<service>``) limited by the ACLs
  that ``constellation.acls`` derives from the service catalogue;
* the registry writer is the HTTP basic-auth user the schema registry requires for
  registering, deleting or reconfiguring schemas (reads stay open).

Clients take them from the shared environment variables (``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
``SCHEMA_REGISTRY_USERNAME``, ``SCHEMA_REGISTRY_PASSWORD``): :func:`operator_env` gives the
admin's, :func:`service_env` one service's.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from constellation import ROOT

ADMIN = "admin"
REGISTRY_WRITER = "registry-admin"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"
SASL_MECHANISM = "SCRAM-SHA-512"
#: Environment variables that carry a credential (never logged, dropped where not needed).
KAFKA_CREDENTIAL_VARS = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
REGISTRY_CREDENTIAL_VARS = ("SCHEMA_REGISTRY_USERNAME", "SCHEMA_REGISTRY_PASSWORD")


def stack_dir() -> Path:
    return Path(os.environ.get("STACK_DIR", ROOT / ".stack"))


def credentials_path(state: Path | None = None) -> Path:
    return (state or stack_dir()) / "credentials.json"


def _password() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class StackCredentials:
    """Kafka passwords by principal name, and the registry writer's password."""

    kafka: dict[str, str]
    registry_password: str

    @property
    def admin_password(self) -> str:
        return self.kafka[ADMIN]

    def password(self, principal: str) -> str:
        try:
            return self.kafka[principal]
        except KeyError:
            raise KeyError(
                f"no Kafka credentials for {principal!r} in the stack's credentials file"
            ) from None

    def kafka_env(self, principal: str) -> dict[str, str]:
        """The shared connection variables that make a client authenticate as ``principal``."""
        return {
            "KAFKA_SECURITY_PROTOCOL": SECURITY_PROTOCOL,
            "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "KAFKA_SASL_USERNAME": principal,
            "KAFKA_SASL_PASSWORD": self.password(principal),
        }

    def registry_env(self) -> dict[str, str]:
        return {
            "SCHEMA_REGISTRY_USERNAME": REGISTRY_WRITER,
            "SCHEMA_REGISTRY_PASSWORD": self.registry_password,
        }

    def operator_env(self) -> dict[str, str]:
        """Admin on Kafka and the registry writer: provisioning and operator commands."""
        return {**self.kafka_env(ADMIN), **self.registry_env()}


def load(path: Path | None = None) -> StackCredentials | None:
    """The stack's credentials, or None before the first ``stack up``."""
    path = path or credentials_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return StackCredentials(
        kafka={str(k): str(v) for k, v in raw["kafka"].items()},
        registry_password=str(raw["schema_registry"]["password"]),
    )


def ensure(principals: Iterable[str], path: Path | None = None) -> StackCredentials:
    """Load the credentials file, adding a random password for every principal it lacks (0600)."""
    path = path or credentials_path()
    current = load(path)
    kafka = dict(current.kafka) if current else {}
    registry_password = current.registry_password if current else _password()
    changed = current is None
    for principal in (ADMIN, *principals):
        if principal not in kafka:
            kafka[principal] = _password()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        # Created with 0600 from the start: the passwords are never world-readable, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {
                    "kafka": kafka,
                    "schema_registry": {"username": REGISTRY_WRITER, "password": registry_password},
                },
                handle,
                indent=2,
            )
        tmp.replace(path)
    os.chmod(path, 0o600)
    return StackCredentials(kafka=kafka, registry_password=registry_password)


def export_operator_env(environ: MutableMapping[str, str], path: Path | None = None) -> bool:
    """Give an operator command the admin credentials, unless its environment names its own.

    Returns whether the stack's credentials file was found.
    """
    credentials = load(path)
    if credentials is None:
        return False
    if not environ.get("KAFKA_SASL_USERNAME"):
        environ.update(credentials.kafka_env(ADMIN))
    if not environ.get("SCHEMA_REGISTRY_USERNAME"):
        environ.update(credentials.registry_env())
    return True
