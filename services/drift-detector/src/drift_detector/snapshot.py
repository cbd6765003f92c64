"""The plain encoding of the detector's state snapshots (what the stream loop checkpoints).

A snapshot is one JSON document ``{"format": FORMAT, "state": {...}}`` built from each
component's ``to_state()``: plain dicts, lists, strings and numbers only. Numpy arrays
are ``{"dtype", "shape", "b64"}`` (the base64 of ``tobytes()``, little-endian dtypes),
datetimes (inside kept envelopes) are ``{"$datetime": iso}``. No pickle: the snapshot
outlives the code that wrote it, and a newer version must be able to read it or say
clearly that it cannot (:class:`SnapshotError`). Non-finite floats are written as JSON's
``NaN``/``Infinity`` extensions, which :mod:`json` reads back.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import numpy as np

#: Version of the snapshot layout; bump it when a component's state changes incompatibly.
FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot this version cannot read."""


def pack_array(array: np.ndarray) -> dict[str, Any]:
    """A numpy array as plain data (dtype, shape, base64 of its little-endian bytes)."""
    arr = np.ascontiguousarray(array)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    return {
        "dtype": dtype.str,
        "shape": list(arr.shape),
        "b64": base64.b64encode(arr.astype(dtype, copy=False).tobytes()).decode("ascii"),
    }


def unpack_array(data: dict[str, Any]) -> np.ndarray:
    """The array :func:`pack_array` described (a writable copy)."""
    try:
        raw = base64.b64decode(data["b64"])
        return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"bad array in snapshot: {exc}") from exc


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot put {type(value).__name__} in a snapshot")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$datetime" in obj:
            return datetime.fromisoformat(obj["$datetime"])
        if "$bytes" in obj:
            return base64.b64decode(obj["$bytes"])
    return obj


def dumps(state: dict[str, Any]) -> bytes:
    """Encode a state document (with its format version)."""
    return json.dumps({"format": FORMAT, "state": state}, default=_default, separators=(",", ":")).encode()


def loads(payload: bytes) -> dict[str, Any]:
    """Decode a state document; :class:`SnapshotError` for another format or bad data."""
    try:
        document = json.loads(payload, object_hook=_hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"snapshot is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise SnapshotError(f"snapshot format {found!r}, this version reads {FORMAT}")
    state: dict[str, Any] = document["state"]
    return state
