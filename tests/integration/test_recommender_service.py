"""The recommender service against the real broker and registry.

The service runs as a subprocess (``python -m recommender``) with its own Faust app id,
so its consumer group and its changelog/commands topics are private to this run, and
with private input/output topics carrying the catalogue contracts. The dead-letter
topic is the real ``dlq.recommender``: the test reads it from its current end and
picks its own records by their original topic.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient, ConfigResource

from mlops_platform.contracts import Topic, dlq_topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from recsys_data import load_catalogue
from tests.support.processes import ServiceLauncher, ServiceProcess
from tests.support.recommender import create_topics, delete_run, new_run, recommender_env
from tests.support.topics import consume, consumer_at_end, read_to_end

pytestmark = pytest.mark.integration

SERVICE_START_TIMEOUT_S = 120.0
SERVICE_STOP_TIMEOUT_S = 90.0
EVENT_TIMEOUT_S = 60.0
DLQ = dlq_topic("recommender")


@dataclass
class Stack:
    """Private topics of one test module and the recommender serving them."""

    app_id: str
    topics: dict[str, str]
    service: ServiceProcess
    producer: EventProducer
    serde: AvroSerde

    def publish(self, contract: Topic, payload: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        event = make_event("recommender-test", payload)
        self.producer.publish(self.topics[contract], event, key, schema_topic=contract.value)
        return event

    def publish_raw(
        self, contract: Topic, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.producer.produce_raw(self.topics[contract], value, key, headers=headers)
        assert self.producer.flush() == 0


@pytest.fixture(scope="module")
def stack(
    platform_settings: PlatformSettings,
    kafka: str,
    serde: AvroSerde,
    tmp_path_factory: pytest.TempPathFactory,
    service_launcher: ServiceLauncher,
) -> Iterator[Stack]:
    app_id, topics = new_run()
    create_topics(platform_settings, topics)
    data_dir = tmp_path_factory.mktemp("recommender")
    producer = EventProducer(platform_settings, "recommender-test", serde)
    service: ServiceProcess | None = None
    try:
        service = service_launcher.start(
            "recommender",
            "RECOMMENDER_",
            recommender_env(app_id, topics, data_dir),
            timeout_s=SERVICE_START_TIMEOUT_S,
            stop_timeout_s=SERVICE_STOP_TIMEOUT_S,
        )
        yield Stack(app_id, topics, service, producer, serde)
    finally:
        if service is not None:
            service.stop(strict=True)
        producer.close()
        delete_run(platform_settings, app_id, [app_id, *topics.values()])


def _poll_http(
    call: Callable[[], httpx.Response], accept: Callable[[httpx.Response], bool]
) -> httpx.Response:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    response = call()
    while not accept(response) and time.monotonic() < deadline:
        time.sleep(0.3)
        response = call()
    return response


def _decode(stack: Stack, contract: Topic, msg: Message) -> dict[str, Any]:
    return stack.serde.decode(msg.topic() or "", msg.value(), schema_topic=contract.value)


def _items_of_genre(genre: str, n: int) -> list[str]:
    return [item.item_id for item in load_catalogue().items if genre in item.genres][:n]


# --------------------------------------------------------------------------- tests


def test_faust_created_its_internal_topics_with_auto_create_disabled(
    stack: Stack, platform_settings: PlatformSettings
) -> None:
    admin = AdminClient(platform_settings.admin_config())
    broker_id = next(iter(admin.list_topics(timeout=10).brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    config = admin.describe_configs([resource])[resource].result()
    assert config["auto.create.topics.enable"].value == "false"
    topics = admin.list_topics(timeout=10).topics
    internal = {name for name in topics if name.startswith(stack.app_id)}
    for table in ("activity", "profiles", "boosts", "topk", "item_stats", "cooccurrence", "strategy_stats"):
        name = f"{stack.app_id}-{table}-changelog"
        assert name in internal, sorted(internal)
        assert len(topics[name].partitions) == 3
    assert len(topics[f"{stack.app_id}-user-commands"].partitions) == 3


def test_interaction_changes_recommendations_and_publishes_both_events(
    stack: Stack, consumer_factory: Callable[..., Consumer]
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    before = stack.service.get(f"/recommendations/{user}", params={"k": 10}).json()
    assert before["source"] == "fallback"

    updated_consumer = consumer_factory(stack.topics[Topic.RECOMMENDATIONS_UPDATED])
    push_consumer = consumer_factory(stack.topics[Topic.PUSH_RECOMMENDATIONS])
    horror = _items_of_genre("horror", 3)
    stack.publish(
        Topic.BUSINESS_USER_INTERACTION,
        {"user_id": user, "item_id": horror[0], "interaction_type": "view", "context": {"device": "web"}},
        key=user,
    )
    like = stack.publish(
        Topic.BUSINESS_USER_INTERACTION,
        {"user_id": user, "item_id": horror[1], "interaction_type": "like", "session_id": "s-1"},
        key=user,
    )

    def mine(msg: Message) -> bool:
        return msg.key() == user.encode()

    [updated_msg] = consume(updated_consumer, 1, EVENT_TIMEOUT_S, where=mine)
    [push_msg] = consume(push_consumer, 1, EVENT_TIMEOUT_S, where=mine)
    updated = _decode(stack, Topic.RECOMMENDATIONS_UPDATED, updated_msg)
    push = _decode(stack, Topic.PUSH_RECOMMENDATIONS, push_msg)

    # The causal chain: both outputs name the like as their cause.
    for event in (updated, push):
        assert event["envelope"]["causation_id"] == like["envelope"]["event_id"]
        assert event["envelope"]["correlation_id"] == like["envelope"]["correlation_id"]
        assert event["envelope"]["source"] == "recommender"
        assert event["recommendation_id"] == updated["recommendation_id"]
    assert updated["user_id"] == user and updated["trigger"] == "interaction"
    assert updated["strategy"] in {"hybrid", "content"}
    item_ids = [item["item_id"] for item in updated["items"]]
    assert len(item_ids) == 20 and not {horror[0], horror[1]} & set(item_ids)
    assert push["item_ids"] == item_ids[:10]

    after = stack.service.get(f"/recommendations/{user}", params={"k": 10}).json()
    assert after["source"] == "table"
    assert after["recommendation_id"] == updated["recommendation_id"]
    assert [item["item_id"] for item in after["items"]] == item_ids[:10]
    assert [item["item_id"] for item in after["items"]] != [item["item_id"] for item in before["items"]]
    # The profile learnt the liked genre: like 0.7 and view 0.1, times the 0.1 learning rate.
    profile = stack.service.get(f"/users/{user}/profile").json()
    assert profile["genres"]["horror"] == pytest.approx(0.08)
    assert profile["counts"] == {"view": 1, "like": 1}
    assert [entry["item"] for entry in profile["recent_activity"]] == [horror[1], horror[0]]


def test_click_updates_ctr_stats_and_boosts_similar_items(
    stack: Stack, consumer_factory: Callable[..., Consumer]
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    updated_consumer = consumer_factory(stack.topics[Topic.RECOMMENDATIONS_UPDATED])
    items = _items_of_genre("western", 2)
    stack.publish(
        Topic.BUSINESS_USER_INTERACTION,
        {"user_id": user, "item_id": items[0], "interaction_type": "purchase"},
        key=user,
    )
    first = _decode(
        stack,
        Topic.RECOMMENDATIONS_UPDATED,
        consume(updated_consumer, 1, EVENT_TIMEOUT_S, where=lambda m: m.key() == user.encode())[0],
    )
    strategies_before = {s["strategy"]: s for s in stack.service.get("/strategies").json()["strategies"]}
    clicked = first["items"][3]["item_id"]
    click = stack.publish(
        Topic.BUSINESS_RECOMMENDATION_CLICKED,
        {
            "user_id": user,
            "item_id": clicked,
            "recommendation_id": first["recommendation_id"],
            "strategy": first["strategy"],
            "position": 3,
        },
        key=user,
    )
    [after_click] = consume(
        updated_consumer,
        1,
        EVENT_TIMEOUT_S,
        where=lambda m: (
            m.key() == user.encode()
            and _decode(stack, Topic.RECOMMENDATIONS_UPDATED, m)["trigger"] == "click"
        ),
    )
    refreshed = _decode(stack, Topic.RECOMMENDATIONS_UPDATED, after_click)
    assert refreshed["envelope"]["causation_id"] == click["envelope"]["event_id"]
    assert clicked not in [item["item_id"] for item in refreshed["items"]]

    strategy = first["strategy"]
    response = _poll_http(
        lambda: stack.service.get("/strategies"),
        lambda r: (
            {s["strategy"]: s for s in r.json()["strategies"]}[strategy]["clicks"]
            > strategies_before[strategy]["clicks"]
        ),
    )
    stats = {s["strategy"]: s for s in response.json()["strategies"]}[strategy]
    assert stats["clicks"] == strategies_before[strategy]["clicks"] + 1
    assert stats["impressions"] >= 10  # the pushed list of the purchase
    assert stats["ctr"] == pytest.approx(stats["clicks"] / stats["impressions"])
    profile = stack.service.get(f"/users/{user}/profile").json()
    assert profile["boosts"], "the click boosts the clicked item's similar items"

    metrics = stack.service.metrics_text()
    assert "recommender_events_processed_total" in metrics
    assert "recommender_update_latency_seconds_bucket" in metrics
    assert 'recommender_strategy_ctr{strategy="' in metrics
    assert 'recommender_table_keys{table="profiles"}' in metrics


def test_platform_endpoints(stack: Stack) -> None:
    assert stack.service.get("/health").json()["status"] == "ok"
    ready = stack.service.get("/ready").json()
    assert ready["ready"] and set(ready["checks"]) == {"kafka", "schema_registry", "streams"}
    assert "9 source partitions" in ready["checks"]["streams"]["detail"]  # 3 topics x 3
    paths = stack.service.get("/openapi.json").json()["paths"]
    assert {"/recommendations/{user_id}", "/users/{user_id}/profile", "/strategies"} <= set(paths)
    assert stack.service.get("/docs").status_code == 200


def test_unknown_user_gets_the_popular_fallback(stack: Stack) -> None:
    user = f"nobody-{uuid.uuid4().hex[:8]}"
    body = stack.service.get(f"/recommendations/{user}", params={"k": 5}).json()
    assert body["source"] == "fallback"
    assert body["strategy"] == "popular" and body["trigger"] == "cold_start"
    assert len(body["items"]) == 5
    comedy = stack.service.get(f"/recommendations/{user}", params={"k": 7, "genre": "comedy"}).json()
    assert len(comedy["items"]) == 7
    assert all("comedy" in item["genres"] for item in comedy["items"])
    assert stack.service.get(f"/users/{user}/profile").status_code == 404
    assert stack.service.get(f"/recommendations/{user}", params={"genre": "no-such-genre"}).status_code == 422


def test_bad_events_go_to_the_dead_letter_topic_without_blocking(
    stack: Stack, platform_settings: PlatformSettings, consumer_factory: Callable[..., Consumer]
) -> None:
    # Only new dead letters: the real dlq.recommender, read from its current end.
    dlq = consumer_at_end(platform_settings, DLQ)
    interactions = stack.topics[Topic.BUSINESS_USER_INTERACTION]
    try:
        garbage = b"this is not avro"
        stack.publish_raw(
            Topic.BUSINESS_USER_INTERACTION, garbage, b"poison-key", headers=[("trace", b"abc")]
        )
        invalid = stack.publish(
            Topic.BUSINESS_USER_INTERACTION,
            {"user_id": "  ", "item_id": "item-00001", "interaction_type": "like"},
            key="blank",
        )
        user = f"u-{uuid.uuid4().hex[:8]}"
        updated_consumer = consumer_factory(stack.topics[Topic.RECOMMENDATIONS_UPDATED])
        stack.publish(
            Topic.BUSINESS_USER_INTERACTION,
            {"user_id": user, "item_id": "item-00002", "interaction_type": "click"},
            key=user,
        )

        def from_my_topic(msg: Message) -> bool:
            return dict(msg.headers() or []).get("dlq.original.topic") == interactions.encode()

        letters = consume(dlq, 2, EVENT_TIMEOUT_S, where=from_my_topic)
        assert len(letters) == 2
        by_key = {msg.key(): msg for msg in letters}

        poison = by_key[b"poison-key"]
        headers = dict(poison.headers() or [])
        assert poison.value() == garbage
        assert headers["trace"] == b"abc"
        assert headers["dlq.stage"] == b"deserialize"
        assert headers["dlq.error.class"] == b"SerializationError"
        assert headers["dlq.service"] == b"recommender"
        assert {"dlq.original.partition", "dlq.original.offset", "dlq.error.message"} <= set(headers)

        blank = by_key[b"blank"]
        headers = dict(blank.headers() or [])
        assert headers["dlq.stage"] == b"validate"
        assert headers["dlq.error.class"] == b"InvalidEvent"
        decoded = stack.serde.decode(
            interactions, blank.value(), schema_topic=Topic.BUSINESS_USER_INTERACTION.value
        )
        assert decoded["envelope"]["event_id"] == invalid["envelope"]["event_id"]

        # The records after the poison ones were processed.
        assert consume(updated_consumer, 1, EVENT_TIMEOUT_S, where=lambda m: m.key() == user.encode())
    finally:
        dlq.close()


def test_restart_rebuilds_profiles_from_the_changelog(
    stack: Stack, consumer_factory: Callable[..., Consumer]
) -> None:
    users = [f"u-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    items = _items_of_genre("sci-fi", 6)
    for n, user in enumerate(users):
        stack.publish(
            Topic.BUSINESS_USER_INTERACTION,
            {"user_id": user, "item_id": items[n], "interaction_type": "purchase"},
            key=user,
        )
        stack.publish(
            Topic.BUSINESS_USER_INTERACTION,
            {"user_id": user, "item_id": items[n + 3], "interaction_type": "rating", "rating": 5.0},
            key=user,
        )
    for user in users:
        assert (
            _poll_http(
                lambda user=user: stack.service.get(f"/users/{user}/profile"),
                lambda r: r.status_code == 200 and r.json()["interactions"] == 2,
            ).status_code
            == 200
        )
    # Boosts and the top-k may still move (users with similar tastes boost each other),
    # so the comparison below is on what only the users' own events change.
    core = ("genres", "dominant_genre", "interactions", "counts", "updated_at", "recent_activity")
    before = {user: stack.service.get(f"/users/{user}/profile").json() for user in users}
    for profile in before.values():
        assert profile["counts"] == {"purchase": 1, "high_rating": 1}

    # SIGTERM: uvicorn runs the lifespan shutdown (Faust stops, commits, flushes), then
    # exits with the signal's status as it does for every service.
    assert stack.service.stop(strict=True) in (0, -signal.SIGTERM), stack.service.log()
    log = stack.service.log(40_000)
    assert "streams_stopped" in log and "Application shutdown complete" in log
    stack.service.restart()
    stack.service.wait_for("/ready", timeout_s=SERVICE_START_TIMEOUT_S)

    # Every update published before the shutdown, newest last per user.
    last_update: dict[str, str] = {}
    wanted = {user.encode() for user in users}
    updates = consumer_factory(stack.topics[Topic.RECOMMENDATIONS_UPDATED])
    for msg in read_to_end(updates, lambda m: m.key() in wanted, EVENT_TIMEOUT_S):
        last_update[(msg.key() or b"").decode()] = _decode(stack, Topic.RECOMMENDATIONS_UPDATED, msg)[
            "recommendation_id"
        ]
    for user in users:
        after = stack.service.get(f"/users/{user}/profile").json()
        # Equal, not merely present: the inputs were not consumed again (offsets were
        # committed on shutdown); the state came back from the changelog.
        assert {key: after[key] for key in core} == {key: before[user][key] for key in core}
        recs = stack.service.get(f"/recommendations/{user}").json()
        assert recs["source"] == "table"
        assert recs["recommendation_id"] == last_update[user]

    # And it keeps learning after the restart.
    stack.publish(
        Topic.BUSINESS_USER_INTERACTION,
        {"user_id": users[0], "item_id": items[5], "interaction_type": "like"},
        key=users[0],
    )
    response = _poll_http(
        lambda: stack.service.get(f"/users/{users[0]}/profile"),
        lambda r: r.json()["interactions"] == 3,
    )
    assert response.json()["counts"] == {"purchase": 1, "high_rating": 1, "like": 1}
