"""API keys of the local constellation: one per role, generated once under ``$STACK_DIR``.

* ``api-keys.json`` — the plaintext keys (``local-viewer``, ``local-producer``,
  ``local-operator``), for the operator: ``make run`` prints them with a curl example, the
  demo's traffic and the benchmark send them. Mode 0600, git-ignored with ``.stack/``.
* ``api-keys.digests.json`` — the same keys as SHA-256 digests only: every service reads
  it (``API_KEYS_FILE``). A service never sees a plaintext key.

Remove both files to get new keys at the next start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from constellation.credentials import stack_dir
from mlops_platform.auth import Role, digest_of, generate_key

__all__ = ["Role", "StackKeys", "client_key", "ensure", "load", "usage", "write_private_text"]

PREFIX = "local"


def keys_path(state: Path | None = None) -> Path:
    return (state or stack_dir()) / "api-keys.json"


def digests_path(state: Path | None = None) -> Path:
    return (state or stack_dir()) / "api-keys.digests.json"


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` created 0600 from the start: never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
    os.chmod(path, 0o600)


def _write_private(path: Path, content: object) -> None:
    write_private_text(path, json.dumps(content, indent=2) + "\n")


@dataclass(frozen=True)
class StackKeys:
    """The plaintext key of each role and where the services' digests file is."""

    keys: dict[Role, str]
    digests_file: Path

    def name(self, role: Role | str) -> str:
        return f"{PREFIX}-{Role(role).value}"

    def key(self, role: Role | str) -> str:
        return self.keys[Role(role)]

    def headers(self, role: Role | str) -> dict[str, str]:
        return {"X-API-Key": self.key(role)}

    def service_env(self) -> dict[str, str]:
        """What a service needs to know the keys: the digests file."""
        return {"API_KEYS_FILE": str(self.digests_file)}


def load(state: Path | None = None) -> StackKeys | None:
    """The stack's keys, or None before the first start."""
    try:
        raw = json.loads(keys_path(state).read_text())
    except FileNotFoundError:
        return None
    keys = {Role(entry["role"]): str(entry["key"]) for entry in raw["keys"]}
    return StackKeys(keys, digests_path(state))


def ensure(state: Path | None = None) -> StackKeys:
    """Load the keys, generating a key for every role that has none; (re)write the digests file."""
    current = load(state)
    keys = dict(current.keys) if current else {}
    missing = [role for role in Role if role not in keys]
    for role in missing:
        keys[role] = generate_key()
    stack_keys = StackKeys(keys, digests_path(state))
    if missing:
        _write_private(
            keys_path(state),
            {"keys": [{"name": stack_keys.name(r), "role": r.value, "key": k} for r, k in keys.items()]},
        )
    digests = {
        "keys": [
            {"name": stack_keys.name(r), "role": r.value, "digest": digest_of(k)} for r, k in keys.items()
        ]
    }
    _write_private(stack_keys.digests_file, digests)
    return stack_keys


def client_key(role: Role | str, env_var: str | None = None) -> str | None:
    """The key a client of the local stack sends: ``env_var`` when set, else the stack's key of ``role``."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    found = load()
    return found.key(role) if found else None


def usage(stack_keys: StackKeys, ingest_url: str, responder_url: str) -> str:
    """How to call the services with the keys (printed by ``make run``; the keys are the operator's)."""
    lines = [
        "API keys (roles viewer < producer | operator; also in " + str(keys_path()) + ", mode 0600):",
    ]
    for role in Role:
        lines.append(f"  {role.value:<9} {stack_keys.key(role)}")
    lines += [
        "  e.g.",
        f"  curl -H 'X-API-Key: {stack_keys.key(Role.VIEWER)}' {responder_url}/actions",
        f"  curl -X POST -H 'Authorization: Bearer {stack_keys.key(Role.OPERATOR)}' "
        f"{responder_url}/actions/rollback",
        f"  curl -X POST -H 'X-API-Key: {stack_keys.key(Role.PRODUCER)}' -H 'Content-Type: application/json' "
        f"-H 'Idempotency-Key: my-request-1' -d @transaction.json {ingest_url}/transactions",
    ]
    return "\n".join(lines)
