from __future__ import annotations

import math

import pytest

from recsys_data import InteractionGenerator, SimEvent, evaluate, hit_rate_at_k, holdout_split, ndcg_at_k


def _ev(user: str, item: str, ts: int, kind: str = "view", rating: float | None = None) -> SimEvent:
    return SimEvent("interaction", ts, user, item, kind, rating)


def test_holds_out_the_last_new_positive_item() -> None:
    events = [
        _ev("u", "a", 1, "view"),
        _ev("u", "a", 2, "click"),
        _ev("u", "b", 3, "view"),
        _ev("u", "c", 4, "view"),
        _ev("u", "d", 5, "view"),
        _ev("u", "d", 6, "purchase"),
        _ev("u", "a", 7, "like"),  # positive, but "a" is not new to the user
        _ev("v", "x", 1, "view"),
    ]
    split = holdout_split(events)
    assert split.test == {"u": ["d"]}
    # Training ends right before the held-out item first appeared.
    assert [(e.user_id, e.item_id, e.timestamp_ms) for e in split.train] == [
        ("u", "a", 1),
        ("v", "x", 1),
        ("u", "a", 2),
        ("u", "b", 3),
        ("u", "c", 4),
    ]


def test_users_with_too_little_history_are_not_tested() -> None:
    events = [_ev("u", "a", 1), _ev("u", "b", 2, "purchase")]
    split = holdout_split(events, min_history=3)
    assert split.test == {}
    assert len(split.train) == 2


def test_high_ratings_and_clicks_count_as_positive() -> None:
    assert _ev("u", "a", 1, "rating", 4.0).is_positive
    assert not _ev("u", "a", 1, "rating", 3.0).is_positive
    assert SimEvent("click", 1, "u", "a", recommendation_id="r", strategy="s", position=0).is_positive
    assert not _ev("u", "a", 1, "view").is_positive


def test_split_of_generated_events_never_leaks_the_held_out_items() -> None:
    events = InteractionGenerator(n_users=100, seed=21).events(1200)
    split = holdout_split(events, per_user=2)
    assert len(split.test) > 50
    seen: dict[str, set[str]] = {}
    for event in split.train:
        seen.setdefault(event.user_id, set()).add(event.item_id)
    for user, items in split.test.items():
        assert 1 <= len(items) <= 2
        assert not set(items) & seen[user]


def test_ranking_metrics() -> None:
    assert hit_rate_at_k(["a", "b", "c"], ["c"], 3) == 1.0
    assert hit_rate_at_k(["a", "b", "c"], ["c"], 2) == 0.0
    assert ndcg_at_k(["x", "a"], ["a"], 2) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["a", "b"], ["a", "b"], 2) == pytest.approx(1.0)
    assert ndcg_at_k(["a"], [], 1) == 0.0
    result = evaluate({"u": ["a"], "v": ["z"]}, {"u": ["a"], "v": ["b"], "w": ["c"]}, 1)
    assert result == {"hit_rate": pytest.approx(1 / 3), "ndcg": pytest.approx(1 / 3), "users": 3.0}
    assert evaluate({}, {}, 5)["users"] == 0.0
