"""HTTP basic auth for the requests that change the registry's state.

Registering a schema, deleting subjects or versions and changing compatibility levels or
modes need the configured credentials; reading, looking a schema up
(``POST /subjects/{s}``) and testing compatibility (``POST /compatibility/...``) stay open,
because every service and serializer does them. Unknown POSTs count as writes (fail closed).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from pydantic import SecretStr

from schema_registry_server.api import COMPAT_PREFIX

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_write(method: str, path: str) -> bool:
    """Whether ``method path`` (with or without the compatibility prefix) changes state."""
    method = method.upper()
    if method in _READ_METHODS:
        return False
    if path.startswith(COMPAT_PREFIX + "/") or path == COMPAT_PREFIX:
        path = path[len(COMPAT_PREFIX) :] or "/"
    if method == "POST":
        if path.startswith("/compatibility/"):
            return False
        # POST /subjects/{s} looks a schema up; POST /subjects/{s}/versions registers one.
        stripped = path.rstrip("/")
        if stripped.startswith("/subjects/") and not stripped.endswith("/versions"):
            return False
    return True


class WriteAuth:
    """Checks the ``Authorization`` header of state-changing requests."""

    def __init__(self, username: str | None, password: SecretStr | None) -> None:
        secret = password.get_secret_value() if password is not None else ""
        self.enabled = bool(username and secret)
        self._username = (username or "").encode()
        self._password = secret.encode()

    def refusal(self, method: str, path: str, authorization: str | None) -> str | None:
        """None when the request may proceed, else why it is refused (answered with 401)."""
        if not self.enabled or not is_write(method, path):
            return None
        if not authorization:
            return "Unauthorized: this request changes the registry and needs HTTP basic auth credentials"
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return "Unauthorized: only HTTP basic authentication is accepted"
        try:
            username, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return "Unauthorized: malformed basic auth credentials"
        # Both compared in constant time, whatever matched first.
        user_ok = hmac.compare_digest(username, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        if not sep or not (user_ok and password_ok):
            return "Unauthorized: invalid username or password"
        return None
