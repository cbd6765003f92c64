from __future__ import annotations

from collections import Counter
from pathlib import Path

import fastavro
import numpy as np

from mlops_platform.contracts import load_catalogue as load_contracts
from mlops_platform.contracts import make_event
from recsys_data import CLICK_TOPIC, INTERACTION_TOPIC, InteractionGenerator, SimEvent, load_catalogue

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_same_seed_same_events() -> None:
    a = InteractionGenerator(n_users=50, seed=3).events(200)
    b = InteractionGenerator(n_users=50, seed=3).events(200)
    c = InteractionGenerator(n_users=50, seed=4).events(200)
    assert a == b
    assert a != c


def test_events_are_time_ordered_and_well_formed() -> None:
    generator = InteractionGenerator(n_users=80, seed=5)
    events = generator.events(400)
    assert [e.timestamp_ms for e in events] == sorted(e.timestamp_ms for e in events)
    catalogue = load_catalogue()
    types = Counter(e.interaction_type for e in events)
    assert set(types) <= {"view", "click", "like", "add_to_cart", "purchase", "rating"}
    assert types["view"] > types["click"] > types["purchase"] > 0
    for event in events:
        assert event.kind == "interaction" and event.topic == INTERACTION_TOPIC
        assert event.item_id in catalogue
        assert event.user_id.startswith("user-") and event.session_id
        if event.interaction_type == "rating":
            assert event.rating is not None and 1 <= event.rating <= 5


def test_sessions_start_with_a_view_and_buy_only_what_is_in_the_cart() -> None:
    generator = InteractionGenerator(n_users=30, seed=8)
    by_session: dict[str, list[SimEvent]] = {}
    for event in generator.generate(150):
        by_session.setdefault(event.session_id or "", []).append(event)
    for events in by_session.values():
        assert events[0].interaction_type == "view"
        carted: set[str] = set()
        for event in events:
            if event.interaction_type == "add_to_cart":
                carted.add(event.item_id)
            if event.interaction_type == "purchase":
                assert event.item_id in carted


def test_users_interact_mostly_with_their_tastes() -> None:
    generator = InteractionGenerator(n_users=60, seed=9)
    events = generator.events(1500)
    catalogue = load_catalogue()
    matches = []
    for event in events:
        if event.interaction_type != "purchase":
            continue
        user = generator.user(event.user_id)
        favourites = set(user.top_genres(catalogue.genres, 3))
        matches.append(bool(favourites & set(catalogue.get(event.item_id).genres)))  # type: ignore[union-attr]
    assert np.mean(matches) > 0.8


def test_clicks_on_shown_recommendations() -> None:
    generator = InteractionGenerator(n_users=40, seed=10)
    catalogue = load_catalogue()
    shown: list[str] = []

    def recommend(user_id: str, k: int, context: object) -> tuple[str, str, list[str]]:
        # Show every user the items it likes most: clicks must follow.
        affinity = generator.affinity(generator.user(user_id))
        items = [catalogue.items[i].item_id for i in np.argsort(-affinity)[:k]]
        shown.append(user_id)
        return f"rec-{len(shown)}", "test-strategy", items

    events = list(generator.generate(300, recommend=recommend))
    clicks = [e for e in events if e.kind == "click"]
    assert len(shown) == 300
    assert len(clicks) > 30
    for click in clicks:
        assert click.topic == CLICK_TOPIC
        assert click.strategy == "test-strategy" and click.recommendation_id.startswith("rec-")  # type: ignore[union-attr]
        assert 0 <= click.position < 10  # type: ignore[operator]
    # A click is followed by the interactions of the clicked item.
    index = events.index(clicks[0])
    assert events[index + 1].item_id == clicks[0].item_id
    assert events[index + 1].context["page"] == "recommendations"


def test_payloads_fit_the_avro_contracts() -> None:
    contracts = load_contracts(SCHEMAS)
    schemas = {
        topic: fastavro.parse_schema(contracts.value_schema(topic))
        for topic in (INTERACTION_TOPIC, CLICK_TOPIC)
    }
    generator = InteractionGenerator(n_users=20, seed=12)
    catalogue = load_catalogue()

    def recommend(user_id: str, k: int, context: object) -> tuple[str, str, list[str]]:
        return "r-1", "hybrid", [item.item_id for item in catalogue.popular(k)]

    events = list(generator.generate(100, recommend=recommend))
    assert {e.topic for e in events} == {INTERACTION_TOPIC, CLICK_TOPIC}
    for event in events:
        record = make_event("generator", event.payload())
        assert fastavro.validation.validate(record, schemas[event.topic], raise_errors=True)
