from __future__ import annotations

import itertools
from collections import Counter

import pytest

from recommender.engine import (
    INTERACTION_WEIGHTS,
    STRATEGY_CONTENT,
    STRATEGY_HYBRID,
    STRATEGY_POPULAR,
    Click,
    EngineConfig,
    Interaction,
    RecList,
    Recommender,
    StateTables,
    shard_key,
)
from recsys_data import load_catalogue

CATALOGUE = load_catalogue()


def _engine(**config: object) -> Recommender:
    ids = (f"rec-{n}" for n in itertools.count())
    clock = itertools.count(1_000)
    return Recommender(
        CATALOGUE,
        StateTables(),
        EngineConfig(**config),  # type: ignore[arg-type]
        clock=lambda: next(clock),
        new_id=lambda: next(ids),
    )


def _items(genre: str, n: int, *, single: bool = True) -> list[str]:
    """Items of ``genre`` (with no other genre when ``single``)."""
    found = [
        item.item_id
        for item in CATALOGUE.items
        if genre in item.genres and (not single or len(item.genres) == 1)
    ]
    assert len(found) >= n
    return found[:n]


def _ix(user: str, item: str, kind: str, ts: int = 1, rating: float | None = None, **ctx: str) -> Interaction:
    return Interaction(user, item, kind, ts, rating=rating, context=ctx)


def test_seed_weights() -> None:
    assert {k: INTERACTION_WEIGHTS[k] for k in ("view", "click", "like", "purchase", "high_rating")} == {
        "view": 0.1,
        "click": 0.3,
        "like": 0.7,
        "purchase": 1.0,
        "high_rating": 1.2,
    }
    assert _ix("u", "i", "rating", rating=4.0).kind == "high_rating"
    assert _ix("u", "i", "rating", rating=3.5).kind == "rating"
    assert _ix("u", "i", "share").weight == 0.1  # unknown types: the seed's default


def test_profile_learns_genre_weights_capped_at_one() -> None:
    engine = _engine()
    [item] = _items("horror", 1)
    engine.on_interaction(_ix("u", item, "view"), shard=0)
    assert engine.tables.profiles["u"]["genres"] == {"horror": pytest.approx(0.01)}
    engine.on_interaction(_ix("u", item, "purchase"), shard=0)
    assert engine.tables.profiles["u"]["genres"]["horror"] == pytest.approx(0.11)
    engine.on_interaction(_ix("u", item, "rating", rating=5.0), shard=0)
    assert engine.tables.profiles["u"]["genres"]["horror"] == pytest.approx(0.23)
    for _ in range(20):
        engine.on_interaction(_ix("u", item, "purchase"), shard=0)
    profile = engine.tables.profiles["u"]
    assert profile["genres"]["horror"] == 1.0
    assert profile["dominant"] == "horror"
    assert profile["n"] == 23
    assert profile["counts"] == {"view": 1, "purchase": 21, "high_rating": 1}


def test_dislike_lowers_and_low_rating_keeps_the_profile() -> None:
    engine = _engine()
    [item] = _items("war", 1)
    engine.on_interaction(_ix("u", item, "like"), shard=0)
    engine.on_interaction(_ix("u", item, "rating", rating=2.0), shard=0)
    assert engine.tables.profiles["u"]["genres"]["war"] == pytest.approx(0.07)
    engine.on_interaction(_ix("u", item, "dislike"), shard=0)
    assert engine.tables.profiles["u"]["genres"]["war"] == pytest.approx(0.04)


def test_activity_keeps_the_last_100() -> None:
    engine = _engine()
    items = _items("comedy", 120, single=False)
    for ts, item in enumerate(items):
        engine.on_interaction(_ix("u", item, "view", ts=ts, device="tv"), shard=0)
    activity = engine.tables.activity["u"]
    assert len(activity) == 100
    assert activity[0]["item"] == items[20] and activity[-1]["item"] == items[-1]
    assert activity[-1]["ctx"] == {"device": "tv"}


@pytest.mark.parametrize("kind", ["like", "click", "purchase", "add_to_cart"])
def test_positive_interactions_refresh_and_push(kind: str) -> None:
    engine = _engine()
    items = _items("sci-fi", 2)
    outcome = engine.on_interaction(_ix("u", items[0], kind), shard=0)
    assert outcome.push and outcome.updated is not None
    rec = outcome.updated
    assert rec.trigger == "interaction" and len(rec.items) == 20
    assert items[0] not in rec.item_ids
    assert engine.tables.topk["u"] == rec.to_state()
    # The pushed part counts as impressions of the user's strategy.
    stats = engine.strategy_stats()[rec.strategy]
    assert stats["impressions"] == 10 and stats["lists"] == 1


def test_views_do_not_refresh() -> None:
    engine = _engine()
    outcome = engine.on_interaction(_ix("u", _items("drama", 1)[0], "view"), shard=0)
    assert outcome.updated is None and not outcome.push
    assert "u" not in engine.tables.topk


def test_recommendations_follow_the_profile() -> None:
    engine = _engine(arms=((STRATEGY_HYBRID, 1.0),))
    for item in _items("western", 5):
        engine.on_interaction(_ix("u", item, "purchase"), shard=0)
    rec = engine.recommend("u", 10)
    assert rec.strategy == STRATEGY_HYBRID
    westerns = sum("western" in CATALOGUE.get(i).genres for i in rec.item_ids)  # type: ignore[union-attr]
    assert westerns >= 7
    content = engine.recommend("u", 10, strategy=STRATEGY_CONTENT)
    assert all("western" in CATALOGUE.get(i).genres for i in content.item_ids)  # type: ignore[union-attr]


def test_cooccurrence_surfaces_items_consumed_together() -> None:
    engine = _engine(arms=((STRATEGY_HYBRID, 1.0),))
    a, b = _items("history", 2)
    # Many users consume a then b.
    for n in range(20):
        engine.on_interaction(_ix(f"other-{n}", a, "click", ts=1), shard=n % 3)
        engine.on_interaction(_ix(f"other-{n}", b, "purchase", ts=2), shard=n % 3)
    # Neighbours are summed over the shards they were written to.
    assert engine.similar_items(a, 1) == [(b, 1.0)]
    assert sum(1 for key in engine.tables.cooccurrence if key.endswith(f"|{a}")) == 3
    outcome = engine.on_interaction(_ix("u", a, "like"), shard=1)
    assert outcome.updated is not None and outcome.updated.item_ids[0] == b


def test_unknown_user_gets_popular_items_in_context() -> None:
    engine = _engine()
    rec, source = engine.serve("nobody", 5)
    assert source == "fallback"
    assert rec.strategy == STRATEGY_POPULAR and rec.trigger == "cold_start"
    assert rec.item_ids == [item.item_id for item in CATALOGUE.popular(5)]
    comedy, _ = engine.serve("nobody", 8, genre="comedy", category="movie")
    for item_id in comedy.item_ids:
        item = CATALOGUE.get(item_id)
        assert item is not None and "comedy" in item.genres and item.category == "movie"


def test_fallback_uses_the_users_own_context() -> None:
    engine = _engine()
    item = _items("fantasy", 1)[0]
    engine.on_interaction(_ix("u", item, "view", category="podcast"), shard=0)
    rec, source = engine.serve("u", 3)
    assert source == "fallback"
    for item_id in rec.item_ids:
        other = CATALOGUE.get(item_id)
        assert other is not None and "fantasy" in other.genres
    assert item not in rec.item_ids
    assert engine.context_of("u") == {"genre": "fantasy", "category": "podcast"}


def test_live_popularity_moves_the_fallback() -> None:
    engine = _engine()
    tail = CATALOGUE.items[int(CATALOGUE.popularity.argmin())].item_id
    for n in range(30):
        engine.on_interaction(_ix(f"fan-{n}", tail, "purchase"), shard=n % 3)
    assert engine.fallback("newcomer", 3).item_ids[0] == tail


def test_serve_answers_from_the_table_and_tops_up() -> None:
    engine = _engine(topk_size=12, push_size=10)
    items = _items("crime", 2)
    engine.on_interaction(_ix("u", items[0], "like"), shard=0)
    stored = engine.tables.topk["u"]
    rec, source = engine.serve("u", 5)
    assert source == "table"
    assert rec.recommendation_id == stored["recommendation_id"]
    assert rec.item_ids == [item_id for item_id, _ in stored["items"][:5]]
    longer, _ = engine.serve("u", 30)
    assert len(longer.items) == 30 and len(set(longer.item_ids)) == 30
    assert longer.item_ids[:12] == [item_id for item_id, _ in stored["items"]]
    # An item touched since the list was computed is not served again.
    engine.on_interaction(_ix("u", rec.item_ids[0], "view"), shard=0)
    again, _ = engine.serve("u", 5)
    assert rec.item_ids[0] not in again.item_ids


def test_ab_arms_are_deterministic_and_follow_the_shares() -> None:
    engine = _engine(arms=((STRATEGY_HYBRID, 0.7), (STRATEGY_CONTENT, 0.3)))
    arms = Counter(engine.arm_for(f"user-{n}") for n in range(5000))
    assert arms[STRATEGY_CONTENT] / 5000 == pytest.approx(0.3, abs=0.03)
    assert engine.arm_for("user-42") == engine.arm_for("user-42")
    assert _engine(arms=((STRATEGY_CONTENT, 1.0),)).arm_for("anyone") == STRATEGY_CONTENT
    with pytest.raises(ValueError):
        _engine(arms=((STRATEGY_HYBRID, 0.0),))


def test_purchase_finds_similar_users_and_their_boost_refreshes_them() -> None:
    engine = _engine()
    romance = _items("romance", 6)
    war = _items("war", 2)
    engine.on_interaction(_ix("alike", romance[0], "like", ts=10), shard=1)
    engine.on_interaction(_ix("also", romance[1], "like", ts=11), shard=2)
    engine.on_interaction(_ix("different", war[0], "like", ts=12), shard=0)
    outcome = engine.on_interaction(_ix("buyer", romance[2], "purchase", ts=20), shard=0)
    assert outcome.boosted_items == [romance[2]]
    assert set(outcome.similar_users) == {"alike", "also"}
    boosted = engine.on_similar_boost("alike", outcome.boosted_items, 0.3)
    assert boosted.updated is not None and boosted.updated.trigger == "similar_user"
    assert not boosted.push
    assert boosted.updated.item_ids[0] == romance[2]
    assert engine.tables.boosts["alike"][romance[2]] == pytest.approx(0.3 * 0.85)
    # Users without a profile are left alone.
    assert engine.on_similar_boost("stranger", [romance[3]], 0.3).updated is None


def test_segment_membership_follows_the_dominant_genre() -> None:
    engine = _engine()
    engine.on_interaction(_ix("u", _items("horror", 1)[0], "like", ts=1), shard=2)
    assert engine.tables.segments[shard_key(2, "horror")] == {"u": 1}
    for ts in range(2, 5):
        engine.on_interaction(_ix("u", _items("family", 1)[0], "purchase", ts=ts), shard=2)
    assert "u" not in engine.tables.segments[shard_key(2, "horror")]
    assert "u" in engine.tables.segments[shard_key(2, "family")]


def test_click_updates_ctr_boosts_similar_items_and_refreshes() -> None:
    engine = _engine()
    items = _items("mystery", 3)
    first = engine.on_interaction(_ix("u", items[0], "purchase"), shard=1).updated
    assert first is not None
    clicked = first.item_ids[2]
    outcome = engine.on_click(Click("u", clicked, first.recommendation_id, first.strategy, 2, 5), shard=1)
    assert outcome.updated is not None and outcome.updated.trigger == "click" and not outcome.push
    assert clicked not in outcome.updated.item_ids
    stats = engine.strategy_stats()[first.strategy]
    assert stats["clicks"] == 1 and stats["impressions"] == 10
    assert stats["ctr"] == pytest.approx(0.1)
    assert engine.tables.boosts["u"]
    view = engine.item_view(clicked)
    assert view is not None and view["clicks"] == 1 and view["impressions"] == 1 and view["ctr"] == 1.0
    assert engine.tables.activity["u"][-1]["type"] == "recommendation_click"


def test_served_lists_count_as_impressions() -> None:
    engine = _engine()
    engine.on_served("u", "email", ["item-00001", "item-00002"], shard=2)
    engine.on_served("u", "email", ["item-00001"], shard=0)
    assert engine.strategy_stats()["email"] == {"impressions": 3, "clicks": 0, "lists": 2, "ctr": 0.0}
    assert engine.item_view("item-00001")["impressions"] == 2  # type: ignore[index]


def test_reload_rebuilds_the_item_counters_from_the_table() -> None:
    engine = _engine()
    for n in range(3):
        engine.on_interaction(_ix(f"u{n}", "item-00007", "purchase"), shard=n)
    restored = Recommender(CATALOGUE, StateTables(item_stats=dict(engine.tables.item_stats)))
    assert restored.item_view("item-00007")["interaction_weight"] == 0  # type: ignore[index]
    restored.reload()
    assert restored.item_view("item-00007")["interaction_weight"] == pytest.approx(3.0)  # type: ignore[index]
    assert restored.item_view("no-such-item") is None


def test_items_outside_the_catalogue_are_recorded_but_teach_nothing() -> None:
    engine = _engine()
    outcome = engine.on_interaction(_ix("u", "external-sku-1", "purchase"), shard=0)
    assert engine.tables.profiles["u"]["genres"] == {}
    assert engine.tables.activity["u"][-1]["item"] == "external-sku-1"
    assert outcome.updated is not None and outcome.similar_users == []


def test_profile_view() -> None:
    engine = _engine()
    assert engine.profile("nobody") is None
    items = _items("animation", 2)
    engine.on_interaction(_ix("u", items[0], "view", ts=5), shard=0)
    engine.on_interaction(_ix("u", items[1], "like", ts=6), shard=0)
    profile = engine.profile("u")
    assert profile is not None
    assert profile["genres"] == {"animation": pytest.approx(0.08)}
    assert profile["dominant_genre"] == "animation" and profile["interactions"] == 2
    assert [entry["item"] for entry in profile["recent_activity"]] == [items[1], items[0]]
    assert profile["strategy"] in {STRATEGY_HYBRID, STRATEGY_CONTENT}


def test_rec_list_round_trips_through_table_state() -> None:
    rec = RecList("u", "r-1", "hybrid", "click", [("a", 0.5), ("b", 0.25)], 123)
    assert RecList.from_state("u", rec.to_state()) == rec
