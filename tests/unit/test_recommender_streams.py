"""The stream glue (decode, validate, dead-letter, apply, publish) without a broker.

The stages write to recorders instead of Faust's topics and the engine works on dicts;
the service's Faust app itself is only built, never started.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest

from mlops_platform.contracts import Topic, load_catalogue, make_event
from mlops_platform.errors import SchemaRegistryUnavailable, SerializationError
from recommender.commands import KIND_INTERACTION, command_from_event, origin_of, served_command
from recommender.config import Settings
from recommender.engine import Interaction, Origin, Recommender, StateTables
from recommender.service import CommitFlush, RecommenderService
from recommender.streams import RecommenderStreams, StreamTopics
from recsys_data import load_catalogue as load_items

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CATALOGUE = load_items()


class FakeSerde:
    """JSON instead of Avro; can pretend the registry is down."""

    def __init__(self) -> None:
        self.encoded: list[tuple[str, str | None, dict[str, Any]]] = []
        self.unavailable = 0

    def _maybe_down(self) -> None:
        if self.unavailable:
            self.unavailable -= 1
            raise SchemaRegistryUnavailable("registry down")

    def decode(self, topic: str, data: bytes | None, *, schema_topic: str | None = None) -> dict[str, Any]:
        self._maybe_down()
        try:
            return dict(json.loads(data or b""))
        except ValueError as exc:
            raise SerializationError(f"cannot decode {topic}", topic=topic, cause=exc) from exc

    def encode(self, topic: str, value: dict[str, Any], *, schema_topic: str | None = None) -> bytes:
        self._maybe_down()
        self.encoded.append((topic, schema_topic, value))
        return f"encoded-{len(self.encoded)}".encode()


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> None:
        callback = kwargs.pop("callback", None)
        self.sent.append(kwargs)
        if callback is not None:
            callback(None)


def _service(settings: Settings) -> RecommenderService:
    # What the service takes from the platform runtime: the serde, the checks, the heartbeat.
    runtime = SimpleNamespace(serde=FakeSerde(), checks={}, heartbeat_details=None)
    return RecommenderService(settings, runtime=runtime, catalogue=CATALOGUE)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, registry_retry_s=0.01, ab_arms={"hybrid": 1.0})


@pytest.fixture
def streams(settings: Settings) -> RecommenderStreams:
    engine = Recommender(CATALOGUE, StateTables(), settings.engine_config())
    topics = StreamTopics(commands=Recorder(), updated=Recorder(), push=Recorder(), dead_letters=Recorder())
    return RecommenderStreams(settings, FakeSerde(), engine, topics)  # type: ignore[arg-type]


@pytest.fixture
def service(settings: Settings, streams: RecommenderStreams) -> RecommenderService:
    service = _service(settings)
    service.streams = streams
    return service


def _message(value: bytes, *, topic: str = "business.user.interaction", key: bytes = b"u1") -> Any:
    return SimpleNamespace(
        topic=topic,
        partition=1,
        offset=41,
        timestamp=1_700_000_000.5,
        key=key,
        value=value,
        headers=[("trace", b"abc")],
    )


def _interaction(user: str, item: str, kind: str) -> bytes:
    event = make_event("test", {"user_id": user, "item_id": item, "interaction_type": kind, "context": {}})
    event["envelope"]["event_time"] = 1_700_000_000_000
    return json.dumps(event).encode()


def _sent(streams: RecommenderStreams, name: str) -> list[dict[str, Any]]:
    return getattr(streams.topics, name).sent  # type: ignore[no-any-return]


def _headers(sent: dict[str, Any]) -> dict[str, bytes | None]:
    return dict(sent["headers"])


def test_the_faust_app_is_declared_with_its_tables_and_internal_topic(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, app_id="rec-x", partitions=3)
    service = _service(settings)
    assert service.app.conf.id == "rec-x"
    assert service.app.conf.topic_replication_factor == 1 and service.app.conf.topic_partitions == 3
    assert set(service.app.tables) == {
        "activity",
        "profiles",
        "boosts",
        "topk",
        "item_stats",
        "cooccurrence",
        "strategy_stats",
        "segments",
    }
    assert service.commands_topic.get_topic_name() == "rec-x-user-commands"
    assert service.commands_topic.internal and service.commands_topic.partitions == 3
    assert not service.check().ok  # not started
    # The readiness check and the heartbeat figures are the platform runtime's.
    assert service.runtime.checks["streams"] == service.check
    assert service.runtime.heartbeat_details == service.heartbeat_details


def test_the_app_id_is_the_consumer_group_and_defaults_to_the_service_name(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).consumer_group == "recommender"
    assert Settings(data_dir=tmp_path, group_id="rec-g").consumer_group == "rec-g"
    assert Settings(data_dir=tmp_path, app_id="rec-x", group_id="rec-g").consumer_group == "rec-x"
    assert _service(Settings(data_dir=tmp_path)).app.conf.id == "recommender"


def test_the_service_reads_and_writes_the_bound_topics(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, interaction_topic="private.interactions", updated_topic="private.updated"
    )
    bindings = settings.bindings()
    assert bindings.contracts_consumed() == {
        "business.user.interaction",
        "business.recommendation.clicked",
        "business.feedback.received",
    }
    assert bindings.contracts_produced() == {
        "recommendations.updated",
        "push.recommendations",
        "system.health",
        "system.metrics",
    }
    assert bindings.consumed("private.interactions").contract is Topic.BUSINESS_USER_INTERACTION
    service = _service(settings)
    assert set(service.source_topic.topics) == {
        "private.interactions",
        "business.recommendation.clicked",
        "business.feedback.received",
    }
    assert service.streams.topics.updated.get_topic_name() == "private.updated"  # type: ignore[attr-defined]


async def test_a_valid_record_becomes_a_command_for_its_user(streams: RecommenderStreams) -> None:
    value = _interaction("user-7", "item-00001", "like")
    await streams.ingest(_message(value, key=b"some-other-key"))
    [sent] = _sent(streams, "commands")
    assert sent["key"] == b"user-7"
    command = sent["value"]
    assert command["kind"] == KIND_INTERACTION and command["user_id"] == "user-7"
    assert command["origin"]["offset"] == 41 and command["origin"]["partition"] == 1
    assert not _sent(streams, "dead_letters")


async def test_undecodable_bytes_are_dead_lettered_unchanged(streams: RecommenderStreams) -> None:
    await streams.ingest(_message(b"\x01garbage"))
    [letter] = _sent(streams, "dead_letters")
    assert letter["value"] == b"\x01garbage" and letter["key"] == b"u1"
    headers = _headers(letter)
    assert headers["trace"] == b"abc"
    assert headers["dlq.original.topic"] == b"business.user.interaction"
    assert headers["dlq.original.partition"] == b"1" and headers["dlq.original.offset"] == b"41"
    assert headers["dlq.original.timestamp"] == b"1700000000500"
    assert headers["dlq.stage"] == b"deserialize" and headers["dlq.service"] == b"recommender"
    assert headers["dlq.error.class"] == b"SerializationError"
    assert not _sent(streams, "commands")


async def test_invalid_records_are_dead_lettered_at_validation(streams: RecommenderStreams) -> None:
    await streams.ingest(_message(_interaction("", "item-00001", "like")))
    [letter] = _sent(streams, "dead_letters")
    assert _headers(letter)["dlq.stage"] == b"validate"
    assert _headers(letter)["dlq.error.class"] == b"InvalidEvent"


async def test_registry_outage_is_waited_out(streams: RecommenderStreams) -> None:
    streams.serde.unavailable = 2  # type: ignore[attr-defined]
    await streams.ingest(_message(_interaction("u", "item-00001", "view")))
    assert len(_sent(streams, "commands")) == 1
    assert not _sent(streams, "dead_letters")


async def test_registry_outage_while_stopping_keeps_the_record_as_a_dead_letter(
    streams: RecommenderStreams,
) -> None:
    streams.serde.unavailable = 100  # type: ignore[attr-defined]
    streams.stopping.set()
    await streams.ingest(_message(_interaction("u", "item-00001", "view")))
    [letter] = _sent(streams, "dead_letters")
    assert _headers(letter)["dlq.error.class"] == b"SchemaRegistryUnavailable"


def _command(
    streams: RecommenderStreams, user: str, item: str, kind: str, *, offset: int = 41, partition: int = 1
) -> dict[str, Any]:
    value = _interaction(user, item, kind)
    message = _message(value)
    origin = origin_of(
        topic=message.topic,
        partition=partition,
        offset=offset,
        timestamp_ms=1,
        key=message.key,
        value=value,
        headers=message.headers,
    )
    return command_from_event(KIND_INTERACTION, json.loads(value), origin=origin, received_ms=1)


async def test_a_positive_interaction_publishes_updated_and_push_with_its_cause(
    streams: RecommenderStreams,
) -> None:
    command = _command(streams, "user-1", "item-00005", "purchase")
    await streams.handle(command, SimpleNamespace(partition=2, topic="cmds", offset=0))
    serde: FakeSerde = streams.serde  # type: ignore[assignment]
    contracts = {topic: schema_topic for topic, schema_topic, _ in serde.encoded}
    assert contracts == {
        "recommendations.updated": Topic.RECOMMENDATIONS_UPDATED.value,
        "push.recommendations": Topic.PUSH_RECOMMENDATIONS.value,
    }
    schemas = load_catalogue(SCHEMAS)
    for topic, _schema_topic, value in serde.encoded:
        assert value["envelope"]["causation_id"] == command["cause"]["event_id"]
        assert value["envelope"]["correlation_id"] == command["cause"]["correlation_id"]
        parsed = fastavro.parse_schema(schemas.value_schema(topic))
        assert fastavro.validation.validate(value, parsed, raise_errors=True)
    updated = next(v for t, _, v in serde.encoded if t == "recommendations.updated")
    push = next(v for t, _, v in serde.encoded if t == "push.recommendations")
    assert updated["trigger"] == "interaction" and len(updated["items"]) == 20
    assert push["item_ids"] == [item["item_id"] for item in updated["items"][:10]]
    assert push["recommendation_id"] == updated["recommendation_id"] and push["title"]
    assert [s["key"] for s in _sent(streams, "updated")] == [b"user-1"]
    assert [s["key"] for s in _sent(streams, "push")] == [b"user-1"]
    # The state was written under the command's partition.
    assert "2|item-00005" in streams.engine.tables.item_stats


async def test_a_replayed_command_changes_nothing_and_publishes_nothing(
    streams: RecommenderStreams,
) -> None:
    first = _command(streams, "user-1", "item-00005", "purchase", offset=7)
    await streams.handle(first, SimpleNamespace(partition=2))
    tables = streams.engine.tables
    before = {name: json.dumps(dict(table), sort_keys=True) for name, table in tables.named().items()}
    published = len(_sent(streams, "updated"))
    # The same record again (stage 2 re-read it, or stage 1 re-forwarded it after a crash),
    # and an older record of the same source partition.
    await streams.handle(first, SimpleNamespace(partition=2))
    await streams.handle(
        _command(streams, "user-1", "item-00009", "like", offset=6), SimpleNamespace(partition=2)
    )
    after = {name: json.dumps(dict(table), sort_keys=True) for name, table in tables.named().items()}
    assert after == before
    assert len(_sent(streams, "updated")) == published
    assert streams.engine.profile("user-1")["interactions"] == 1  # type: ignore[index]


async def test_a_new_command_applies_after_one_of_another_source_partition(
    streams: RecommenderStreams,
) -> None:
    await streams.handle(
        _command(streams, "user-1", "item-00005", "like", offset=7), SimpleNamespace(partition=2)
    )
    # Offsets are per source partition: a lower offset of another partition is new.
    await streams.handle(
        _command(streams, "user-1", "item-00006", "like", offset=3, partition=0), SimpleNamespace(partition=2)
    )
    await streams.handle(
        _command(streams, "user-1", "item-00007", "like", offset=8), SimpleNamespace(partition=2)
    )
    profile = streams.engine.profile("user-1")
    assert profile is not None and profile["interactions"] == 3
    assert [entry["item"] for entry in profile["recent_activity"]] == [
        "item-00007",
        "item-00006",
        "item-00005",
    ]
    applied = streams.engine.tables.profiles["user-1"]["applied"]
    assert applied == {"business.user.interaction|1": 8, "business.user.interaction|0": 3}


def test_the_applied_offsets_are_bounded_oldest_source_first(settings: Settings) -> None:
    engine = Recommender(CATALOGUE, StateTables(), replace(settings.engine_config(), applied_sources=2))
    for partition in range(3):
        engine.on_interaction(
            Interaction("u", "item-00001", "view", 1, origin=Origin("t", partition, 5)), shard=0
        )
    assert engine.tables.profiles["u"]["applied"] == {"t|1": 5, "t|2": 5}
    assert engine.is_applied("u", Origin("t", 2, 5)) and not engine.is_applied("u", Origin("t", 2, 6))


async def test_similar_users_get_boost_commands(streams: RecommenderStreams) -> None:
    item = next(i.item_id for i in CATALOGUE.items if i.genres == ("western",))
    other = [i.item_id for i in CATALOGUE.items if i.genres == ("western",)][1]
    await streams.handle(_command(streams, "fan", other, "like"), SimpleNamespace(partition=0))
    buyer = _command(streams, "buyer", item, "purchase")
    await streams.handle(buyer, SimpleNamespace(partition=1))
    boosts = [s for s in _sent(streams, "commands") if s["value"]["kind"] == "similar_boost"]
    assert [(s["key"], s["value"]["data"]["item_ids"]) for s in boosts] == [(b"fan", [item])]
    # Applying it refreshes the fan's list, caused by the purchase.
    serde: FakeSerde = streams.serde  # type: ignore[assignment]
    serde.encoded.clear()
    await streams.handle(boosts[0]["value"], SimpleNamespace(partition=0))
    [(topic, _, value)] = serde.encoded
    assert topic == "recommendations.updated" and value["trigger"] == "similar_user"
    assert value["envelope"]["causation_id"] == buyer["cause"]["event_id"]


async def test_a_failing_command_dead_letters_the_original_record(streams: RecommenderStreams) -> None:
    command = _command(streams, "user-1", "item-00005", "like")
    del command["data"]["item_id"]  # breaks the engine call
    await streams.handle(command, SimpleNamespace(partition=0, topic="cmds", offset=9))
    [letter] = _sent(streams, "dead_letters")
    assert letter["value"] == _interaction_bytes_of(command)
    headers = _headers(letter)
    assert headers["dlq.original.topic"] == b"business.user.interaction"
    assert headers["dlq.original.offset"] == b"41"
    assert headers["dlq.stage"] == b"process" and headers["dlq.error.class"] == b"KeyError"
    assert headers["trace"] == b"abc"


def _interaction_bytes_of(command: dict[str, Any]) -> bytes:
    import base64

    return base64.b64decode(command["origin"]["value"])


async def test_served_lists_are_counted_without_outputs(streams: RecommenderStreams) -> None:
    command = served_command("u", "hybrid", ["item-00001", "item-00002"], 5)
    await streams.handle(command, SimpleNamespace(partition=0))
    assert streams.engine.strategy_stats()["hybrid"]["impressions"] == 2
    assert not streams.serde.encoded  # type: ignore[attr-defined]


async def test_report_refreshes_gauges_and_heartbeat_figures(
    streams: RecommenderStreams, service: RecommenderService
) -> None:
    await streams.handle(_command(streams, "u", "item-00003", "like"), SimpleNamespace(partition=0))
    service.lag = lambda: {("business.user.interaction", 0): 4}  # type: ignore[method-assign]
    await service._report()
    details = service.heartbeat_details()
    assert details["users"] == "1" and details["consumer_lag"] == "4"


async def test_a_crashed_app_stops_the_process(
    service: RecommenderService, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[bool] = []
    fake_app = SimpleNamespace(crashed=False, crash_reason=None)
    monkeypatch.setattr(service, "app", fake_app)
    monkeypatch.setattr(service, "on_crash", lambda: crashes.append(True))
    watchdog = asyncio.create_task(service.exit_on_crash(interval_s=0.01))
    await asyncio.sleep(0.05)
    assert not crashes and not watchdog.done()
    fake_app.crashed, fake_app.crash_reason = True, RuntimeError("fetcher died")
    await asyncio.wait_for(watchdog, timeout=5)
    assert crashes == [True]


class FakeBuffer:
    """Faust's producer buffer as far as the commit flush is concerned."""

    def __init__(self) -> None:
        self.queued: list[asyncio.Future[Any]] = []

    def put(self, fut: asyncio.Future[Any]) -> None:
        self.queued.append(fut)

    async def flush(self) -> None:  # faust-streaming's: returns while records are queued
        return None


async def test_the_commit_flush_waits_for_every_queued_table_write() -> None:
    buffer = FakeBuffer()
    flush = CommitFlush(buffer)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    buffer.put(first)
    buffer.put(second)
    assert buffer.queued == [first, second]
    flushing = asyncio.ensure_future(buffer.flush())
    first.set_result(None)
    await asyncio.sleep(0)
    assert not flushing.done()  # the second record is not acknowledged yet
    # A record queued during the flush belongs to a later commit.
    buffer.put(loop.create_future())
    second.set_result(None)
    await asyncio.wait_for(flushing, timeout=5)
    assert len(flush.pending) == 1


async def test_a_failed_table_write_fails_the_commit_flush() -> None:
    buffer = FakeBuffer()
    CommitFlush(buffer)
    failed = asyncio.get_running_loop().create_future()
    buffer.put(failed)
    failed.set_exception(RuntimeError("broker said no"))
    with pytest.raises(RuntimeError, match="broker said no"):
        await buffer.flush()
