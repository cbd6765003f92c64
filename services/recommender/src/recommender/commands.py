"""From decoded Avro events to per-user commands, and back to the engine's values.

The stream has two stages. The first decodes the records of the public topics,
validates them and turns each into a *command*: a small JSON document keyed by user
id, sent to the service's internal ``<app_id>-user-commands`` topic, so that everything
about one user is handled on one partition no matter how the producer keyed it. The
second stage applies commands to the tables. A command carries what the second stage
needs to keep the causal chain (the cause's envelope) and to dead-letter the record
with its original bytes and coordinates if processing fails.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mlops_platform.contracts import Topic
from recommender.engine import Click, Interaction, Origin

KIND_INTERACTION = "interaction"
KIND_CLICK = "click"
KIND_FEEDBACK = "feedback"
KIND_SERVED = "served"
KIND_SIMILAR_BOOST = "similar_boost"

# The command kind of each consumed contract (the binding of a record says which it carries).
KIND_OF_CONTRACT: dict[Topic, str] = {
    Topic.BUSINESS_USER_INTERACTION: KIND_INTERACTION,
    Topic.BUSINESS_RECOMMENDATION_CLICKED: KIND_CLICK,
    Topic.BUSINESS_FEEDBACK_RECEIVED: KIND_FEEDBACK,
}

MAX_ID_LENGTH = 256

# Explicit feedback mapped onto interaction weights: a thumbs-up is a like, a rating is
# weighted by its value (>= 4 is a high rating), a thumbs-down counts against the genres.
FEEDBACK_TYPES = {"rating": "rating", "thumbs_up": "like", "thumbs_down": "dislike", "comment": "comment"}


class InvalidEvent(ValueError):
    """A record decoded fine but cannot be processed (missing ids, out-of-range values)."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def origin_of(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> dict[str, Any]:
    """Where a record came from, with its bytes, so it can be dead-lettered later unchanged."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp_ms,
        "key": _b64(key),
        "value": _b64(value),
        "headers": [[name, _b64(data)] for name, data in headers],
    }


def origin_bytes(
    origin: Mapping[str, Any],
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    """The original key, value and headers of a command's source record."""
    headers = [(str(name), _unb64(data)) for name, data in origin.get("headers") or []]
    return _unb64(origin.get("key")), _unb64(origin.get("value")), headers


def _millis(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    raise InvalidEvent(f"event_time {value!r} is not a timestamp")


def _required_id(value: Mapping[str, Any], name: str) -> str:
    raw = value.get(name)
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidEvent(f"{name} is missing or blank")
    if len(raw) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return raw.strip()


def _rating(value: Mapping[str, Any]) -> float | None:
    rating = value.get("rating")
    if rating is None:
        return None
    rating = float(rating)
    if math.isnan(rating) or not 0.0 <= rating <= 5.0:
        raise InvalidEvent(f"rating {rating} is outside 0..5")
    return rating


def _cause(envelope: Mapping[str, Any]) -> dict[str, str]:
    event_id = envelope.get("event_id")
    if not event_id:
        raise InvalidEvent("envelope.event_id is missing")
    return {"event_id": str(event_id), "correlation_id": str(envelope.get("correlation_id") or event_id)}


def command_from_event(
    kind: str, value: Mapping[str, Any], *, origin: Mapping[str, Any], received_ms: int
) -> dict[str, Any]:
    """Validate a decoded event of ``kind`` and build the command for its user."""
    envelope = value.get("envelope") or {}
    user_id = _required_id(value, "user_id")
    data: dict[str, Any]
    if kind == KIND_INTERACTION:
        interaction_type = _required_id(value, "interaction_type").lower()
        rating = _rating(value)
        if interaction_type == "rating" and rating is None:
            raise InvalidEvent("interaction_type rating without a rating")
        data = {
            "item_id": _required_id(value, "item_id"),
            "interaction_type": interaction_type,
            "rating": rating,
            "session_id": value.get("session_id"),
            "context": {str(k): str(v) for k, v in (value.get("context") or {}).items()},
        }
    elif kind == KIND_CLICK:
        position = int(value.get("position", 0))
        if position < 0:
            raise InvalidEvent(f"position {position} is negative")
        data = {
            "item_id": _required_id(value, "item_id"),
            "recommendation_id": str(value.get("recommendation_id") or ""),
            "strategy": _required_id(value, "strategy"),
            "position": position,
        }
    elif kind == KIND_FEEDBACK:
        feedback_type = _required_id(value, "feedback_type").lower()
        if feedback_type not in FEEDBACK_TYPES:
            raise InvalidEvent(f"feedback_type {feedback_type!r} is not one of {sorted(FEEDBACK_TYPES)}")
        rating = _rating(value)
        if feedback_type == "rating" and rating is None:
            raise InvalidEvent("feedback_type rating without a rating")
        item_id = value.get("item_id")
        data = {
            "item_id": item_id.strip() if isinstance(item_id, str) and item_id.strip() else None,
            "feedback_type": feedback_type,
            "rating": rating,
        }
    else:
        raise InvalidEvent(f"unknown event kind {kind!r}")
    return {
        "kind": kind,
        "user_id": user_id,
        "data": data,
        "event_time": _millis(envelope.get("event_time", received_ms)),
        "cause": _cause(envelope),
        "origin": dict(origin),
        "received": received_ms,
    }


def served_command(user_id: str, strategy: str, item_ids: Sequence[str], received_ms: int) -> dict[str, Any]:
    """A list was served over HTTP: count its impressions on the user's partition."""
    return {
        "kind": KIND_SERVED,
        "user_id": user_id,
        "data": {"strategy": strategy, "item_ids": list(item_ids)},
        "event_time": received_ms,
        "cause": None,
        "origin": None,
        "received": received_ms,
    }


def similar_boost_command(
    user_id: str, item_ids: Sequence[str], boost: float, parent: Mapping[str, Any]
) -> dict[str, Any]:
    """Boost ``item_ids`` for ``user_id`` because a user with similar tastes bought or rated them."""
    return {
        "kind": KIND_SIMILAR_BOOST,
        "user_id": user_id,
        "data": {"item_ids": list(item_ids), "boost": boost, "source_user": parent["user_id"]},
        "event_time": parent["event_time"],
        "cause": parent.get("cause"),
        "origin": None,
        "received": parent.get("received"),
    }


def origin_key(command: Mapping[str, Any]) -> Origin | None:
    """The topic, partition and offset of a command's source record (None: it has none)."""
    origin = command.get("origin")
    if not origin:
        return None
    return Origin(str(origin["topic"]), int(origin["partition"]), int(origin["offset"]))


def to_interaction(command: Mapping[str, Any]) -> Interaction | None:
    """The engine's interaction for an interaction or feedback command (None: nothing to apply)."""
    data = command["data"]
    if command["kind"] == KIND_FEEDBACK:
        if not data.get("item_id"):
            return None
        interaction_type = FEEDBACK_TYPES[data["feedback_type"]]
        return Interaction(
            user_id=command["user_id"],
            item_id=data["item_id"],
            interaction_type=interaction_type,
            timestamp_ms=int(command["event_time"]),
            rating=data.get("rating"),
            origin=origin_key(command),
        )
    return Interaction(
        user_id=command["user_id"],
        item_id=data["item_id"],
        interaction_type=data["interaction_type"],
        timestamp_ms=int(command["event_time"]),
        rating=data.get("rating"),
        session_id=data.get("session_id"),
        context=data.get("context") or {},
        origin=origin_key(command),
    )


def to_click(command: Mapping[str, Any]) -> Click:
    data = command["data"]
    return Click(
        user_id=command["user_id"],
        item_id=data["item_id"],
        recommendation_id=data["recommendation_id"],
        strategy=data["strategy"],
        position=int(data["position"]),
        timestamp_ms=int(command["event_time"]),
        origin=origin_key(command),
    )
