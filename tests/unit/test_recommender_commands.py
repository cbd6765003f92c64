from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlops_platform.contracts import make_event
from recommender.commands import (
    KIND_CLICK,
    KIND_FEEDBACK,
    KIND_INTERACTION,
    InvalidEvent,
    command_from_event,
    origin_bytes,
    origin_of,
    similar_boost_command,
    to_click,
    to_interaction,
)

ORIGIN = origin_of(
    topic="business.user.interaction",
    partition=2,
    offset=41,
    timestamp_ms=1_700_000_000_000,
    key=b"user-1",
    value=b"\x00\x00\x00\x00\x01raw",
    headers=[("trace", b"abc"), ("empty", None)],
)


def _event(**payload: Any) -> dict[str, Any]:
    event = make_event("ingest", payload, event_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    return event


def _command(kind: str, **payload: Any) -> dict[str, Any]:
    return command_from_event(kind, _event(**payload), origin=ORIGIN, received_ms=99)


def test_interaction_command_keeps_cause_time_and_origin() -> None:
    event = _event(
        user_id=" user-1 ",
        item_id="item-00001",
        interaction_type="Like",
        rating=None,
        session_id="s",
        context={"device": "web"},
    )
    command = command_from_event(KIND_INTERACTION, event, origin=ORIGIN, received_ms=99)
    assert command["kind"] == KIND_INTERACTION and command["user_id"] == "user-1"
    assert command["data"]["interaction_type"] == "like"
    assert command["event_time"] == int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000)
    assert command["cause"] == {
        "event_id": event["envelope"]["event_id"],
        "correlation_id": event["envelope"]["correlation_id"],
    }
    assert command["received"] == 99
    interaction = to_interaction(command)
    assert interaction is not None
    assert (interaction.user_id, interaction.item_id, interaction.kind) == ("user-1", "item-00001", "like")
    assert interaction.context == {"device": "web"}


def test_origin_round_trips_the_original_bytes() -> None:
    key, value, headers = origin_bytes(ORIGIN)
    assert key == b"user-1" and value == b"\x00\x00\x00\x00\x01raw"
    assert headers == [("trace", b"abc"), ("empty", None)]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"user_id": "", "item_id": "i", "interaction_type": "view"}, "user_id"),
        ({"user_id": "u", "item_id": " ", "interaction_type": "view"}, "item_id"),
        ({"user_id": "u", "item_id": "i", "interaction_type": ""}, "interaction_type"),
        ({"user_id": "u", "item_id": "i", "interaction_type": "rating", "rating": 7.0}, "outside"),
        ({"user_id": "u", "item_id": "i", "interaction_type": "rating", "rating": None}, "without a rating"),
        ({"user_id": "u" * 300, "item_id": "i", "interaction_type": "view"}, "longer"),
    ],
)
def test_invalid_interactions_are_rejected(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        _command(KIND_INTERACTION, **payload)


def test_click_command() -> None:
    command = _command(
        KIND_CLICK, user_id="u", item_id="item-00002", recommendation_id="r-1", strategy="hybrid", position=3
    )
    click = to_click(command)
    assert (click.item_id, click.recommendation_id, click.strategy, click.position) == (
        "item-00002",
        "r-1",
        "hybrid",
        3,
    )
    with pytest.raises(InvalidEvent, match="negative"):
        _command(KIND_CLICK, user_id="u", item_id="i", recommendation_id="r", strategy="s", position=-1)
    with pytest.raises(InvalidEvent, match="strategy"):
        _command(KIND_CLICK, user_id="u", item_id="i", recommendation_id="r", strategy="", position=1)


@pytest.mark.parametrize(
    ("feedback_type", "rating", "kind"),
    [
        ("rating", 5.0, "high_rating"),
        ("rating", 2.0, "rating"),
        ("thumbs_up", None, "like"),
        ("thumbs_down", None, "dislike"),
    ],
)
def test_feedback_maps_onto_interactions(feedback_type: str, rating: float | None, kind: str) -> None:
    command = _command(
        KIND_FEEDBACK, user_id="u", item_id="item-00003", feedback_type=feedback_type, rating=rating
    )
    interaction = to_interaction(command)
    assert interaction is not None and interaction.kind == kind


def test_feedback_without_item_or_of_unknown_type() -> None:
    command = _command(KIND_FEEDBACK, user_id="u", item_id=None, feedback_type="comment", comment="meh")
    assert to_interaction(command) is None
    with pytest.raises(InvalidEvent, match="feedback_type"):
        _command(KIND_FEEDBACK, user_id="u", item_id="i", feedback_type="shrug")


def test_unknown_kind_and_missing_envelope() -> None:
    with pytest.raises(InvalidEvent, match="kind"):
        _command("teleport", user_id="u")
    with pytest.raises(InvalidEvent, match="event_id"):
        command_from_event(
            KIND_INTERACTION,
            {"user_id": "u", "item_id": "i", "interaction_type": "view", "envelope": {}},
            origin=ORIGIN,
            received_ms=1,
        )


def test_similar_boost_inherits_the_cause() -> None:
    parent = _command(KIND_INTERACTION, user_id="buyer", item_id="i", interaction_type="purchase")
    boost = similar_boost_command("neighbour", ["i"], 0.3, parent)
    assert boost["user_id"] == "neighbour" and boost["cause"] == parent["cause"]
    assert boost["data"] == {"item_ids": ["i"], "boost": 0.3, "source_user": "buyer"}
    assert boost["origin"] is None
