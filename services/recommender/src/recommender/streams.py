"""The two stream stages of the recommender, independent of how the Faust app is built.

Stage 1 (:meth:`RecommenderStreams.ingest`) takes a raw record of a consumed binding,
decodes it with the registry's Avro serde and validates it. A record that cannot be
decoded or is invalid goes to the dead-letter topic with its bytes and headers
unchanged plus the platform's ``dlq.*`` headers; the others become commands on the
internal ``<app_id>-user-commands`` topic, keyed by user id.

Stage 2 (:meth:`RecommenderStreams.handle`) applies a command to the tables through
:class:`~recommender.engine.Recommender` and publishes what changed
(``recommendations.updated``, ``push.recommendations``), plus fan-out commands for users
with similar tastes.

Everything is written through Faust topics (:class:`StreamTopics`), so Faust commits an
input offset only after what was produced for it (outputs, commands, dead letters) was
flushed: at least once. :class:`recommender.service.RecommenderService` builds the Faust
app, its tables and agents, and hands the agents' records to these stages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from confluent_kafka import Message

from mlops_platform.bindings import Binding
from mlops_platform.contracts import make_event
from mlops_platform.errors import SchemaRegistryUnavailable, SerializationError
from mlops_platform.kafka import DeadLetters
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.serde import AvroSerde
from recommender.commands import (
    KIND_CLICK,
    KIND_FEEDBACK,
    KIND_INTERACTION,
    KIND_OF_CONTRACT,
    KIND_SERVED,
    KIND_SIMILAR_BOOST,
    InvalidEvent,
    command_from_event,
    origin_bytes,
    origin_key,
    origin_of,
    served_command,
    similar_boost_command,
    to_click,
    to_interaction,
)
from recommender.config import Settings
from recommender.engine import Outcome, RecList, Recommender, now_ms
from recommender.metrics import recommender_metrics

log = get_logger(__name__)

T = TypeVar("T")

REPLAYED = Outcome()
"""What :meth:`RecommenderStreams.apply` returns for a command that was already applied."""


class Sink(Protocol):
    """Where a stage writes: a Faust topic (its producer is the one Faust flushes before committing)."""

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: Any = None,
        headers: Any = None,
        callback: Any = None,
    ) -> Any: ...


@dataclass(frozen=True)
class StreamTopics:
    """The Faust topics the stages write to."""

    commands: Sink
    updated: Sink
    push: Sink
    dead_letters: Sink


@dataclass
class RecordView:
    """The parts of a Kafka record a dead letter is built from, in confluent-kafka's shape."""

    topic_name: str
    partition_no: int
    offset_no: int
    timestamp_ms: int
    key_bytes: bytes | None
    value_bytes: bytes | None
    header_items: list[tuple[str, bytes | None]] = field(default_factory=list)

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_no

    def offset(self) -> int:
        return self.offset_no

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self.header_items

    def key(self) -> bytes | None:
        return self.key_bytes

    def value(self) -> bytes | None:
        return self.value_bytes

    @classmethod
    def of(cls, message: Any) -> RecordView:
        """View of a Faust message (``faust.types.Message``)."""
        raw_headers = message.headers or []
        items = raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers
        value = message.value
        return cls(
            topic_name=str(message.topic),
            partition_no=int(message.partition),
            offset_no=int(message.offset),
            timestamp_ms=int((message.timestamp or 0) * 1000),
            key_bytes=message.key if isinstance(message.key, bytes | None) else str(message.key).encode(),
            value_bytes=value if isinstance(value, bytes | None) else str(value).encode(),
            header_items=[(str(k), _header_bytes(v)) for k, v in items],
        )

    @classmethod
    def of_origin(cls, origin: Mapping[str, Any]) -> RecordView:
        """View of the source record a command was made from."""
        key, value, headers = origin_bytes(origin)
        return cls(
            topic_name=str(origin["topic"]),
            partition_no=int(origin["partition"]),
            offset_no=int(origin["offset"]),
            timestamp_ms=int(origin["timestamp"]),
            key_bytes=key,
            value_bytes=value,
            header_items=headers,
        )


def _header_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def _key(binding: Binding, value: Mapping[str, Any]) -> bytes | None:
    key = binding.key_of(value)
    return None if key is None else key.encode()


class RecommenderStreams:
    """Decode, validate, apply and publish: what the two Faust agents do with each record."""

    def __init__(
        self, settings: Settings, serde: AvroSerde, engine: Recommender, topics: StreamTopics
    ) -> None:
        self.settings = settings
        self.serde = serde
        self.engine = engine
        self.topics = topics
        self.service = settings.service_name
        self.bindings = settings.bindings()
        self.metrics = recommender_metrics()
        self.platform = platform_metrics()
        self.dead_letters = DeadLetters(self.service, settings.dead_letter_topic)
        # Set when the service stops: serde retries give up, so the agents finish their
        # event and Faust can commit.
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------------ stage 1: decode

    async def ingest(self, message: Any) -> None:
        """Decode and validate one record of a consumed topic; forward it as a user command."""
        binding = self.bindings.consumed(str(message.topic))
        kind = KIND_OF_CONTRACT[binding.contract]
        self.platform.events_consumed.labels(self.service, binding.topic).inc()
        received = now_ms()
        view = RecordView.of(message)
        try:
            value = await self._serde(
                self.serde.decode, binding.topic, message.value, schema_topic=binding.contract.value
            )
        except (SerializationError, SchemaRegistryUnavailable) as exc:
            await self._dead_letter(view, exc, "deserialize", kind)
            return
        try:
            command = command_from_event(
                kind,
                value,
                origin=origin_of(
                    topic=view.topic_name,
                    partition=view.partition_no,
                    offset=view.offset_no,
                    timestamp_ms=view.timestamp_ms,
                    key=view.key_bytes,
                    value=view.value_bytes,
                    headers=view.header_items,
                ),
                received_ms=received,
            )
        except Exception as exc:  # invalid content: the record is kept in the dead-letter topic
            await self._dead_letter(view, exc, "validate", kind)
            return
        await self.topics.commands.send(key=command["user_id"].encode(), value=command)

    # ------------------------------------------------------------------ stage 2: apply

    async def handle(self, command: Mapping[str, Any], message: Any) -> None:
        """Apply one command to the tables and publish what changed."""
        kind = str(command.get("kind", "unknown")) if isinstance(command, Mapping) else "unknown"
        cause = command.get("cause") if isinstance(command, Mapping) else None
        with bind_event(cause):
            started = time.perf_counter()
            try:
                if not isinstance(command, Mapping):
                    raise InvalidEvent(f"command is not an object: {command!r:.200}")
                outcome = self.apply(command, int(message.partition))
            except Exception as exc:
                await self._dead_letter(self._source_view(command, message), exc, "process", kind)
                return
            if outcome is None:
                self.metrics.events_processed.labels(kind, "ignored").inc()
                return
            if outcome is REPLAYED:
                self.metrics.events_processed.labels(kind, "replayed").inc()
                return
            if outcome.updated is not None:
                self.metrics.refresh_seconds.observe(time.perf_counter() - started)
            try:
                await self._publish(command, outcome)
            except (SerializationError, SchemaRegistryUnavailable) as exc:
                await self._dead_letter(self._source_view(command, message), exc, "produce", kind)
                return
            self.metrics.events_processed.labels(kind, "ok").inc()

    def apply(self, command: Mapping[str, Any], shard: int) -> Outcome | None:
        """Run a command through the engine (synchronous: table writes happen here).

        A command whose source record the user's state already holds (a replay after a
        crash) changes nothing and returns :data:`REPLAYED`.
        """
        kind = command["kind"]
        user_id = str(command["user_id"])
        data = command.get("data") or {}
        if self.engine.is_applied(user_id, origin_key(command)):
            return REPLAYED
        if kind in (KIND_INTERACTION, KIND_FEEDBACK):
            interaction = to_interaction(command)
            return None if interaction is None else self.engine.on_interaction(interaction, shard)
        if kind == KIND_CLICK:
            return self.engine.on_click(to_click(command), shard)
        if kind == KIND_SERVED:
            self.engine.on_served(user_id, str(data["strategy"]), list(data["item_ids"]), shard)
            return Outcome()
        if kind == KIND_SIMILAR_BOOST:
            outcome = self.engine.on_similar_boost(user_id, list(data["item_ids"]), float(data["boost"]))
            return outcome if outcome.updated is not None else None
        raise InvalidEvent(f"unknown command kind {kind!r}")

    async def _publish(self, command: Mapping[str, Any], outcome: Outcome) -> None:
        rec = outcome.updated
        cause = command.get("cause")
        received = command.get("received")
        if rec is not None:
            updated = make_event(
                self.service,
                {
                    "user_id": rec.user_id,
                    "recommendation_id": rec.recommendation_id,
                    "strategy": rec.strategy,
                    "trigger": rec.trigger,
                    "items": [{"item_id": item_id, "score": score} for item_id, score in rec.items],
                },
                cause=cause,
            )
            await self._send(self.topics.updated, self.settings.updated, updated)
            self.metrics.recommendations_published.labels("recommendations.updated", rec.trigger).inc()
            if outcome.push:
                push = make_event(
                    self.service,
                    {
                        "user_id": rec.user_id,
                        "recommendation_id": rec.recommendation_id,
                        "title": self._push_title(rec),
                        "item_ids": rec.item_ids[: self.settings.push_size],
                        "channel": self.settings.push_channel,
                    },
                    cause=cause,
                )
                await self._send(self.topics.push, self.settings.push, push)
                self.metrics.recommendations_published.labels("push.recommendations", rec.trigger).inc()
            if isinstance(received, int):
                self.metrics.update_latency.labels(rec.trigger).observe(max(now_ms() - received, 0) / 1000)
        for user_id in outcome.similar_users:
            boost = similar_boost_command(
                user_id, outcome.boosted_items, self.engine.config.similar_user_boost, command
            )
            await self.topics.commands.send(key=user_id.encode(), value=boost)

    def _push_title(self, rec: RecList) -> str:
        first = self.engine.catalogue.get(rec.item_ids[0]) if rec.items else None
        if first is None:
            return "New recommendations for you"
        others = min(len(rec.items), self.settings.push_size) - 1
        return (
            f"{first.title} and {others} more picks for you"
            if others > 0
            else f"{first.title}, picked for you"
        )

    async def _send(self, sink: Sink, binding: Binding, value: Mapping[str, Any]) -> None:
        # Encoded against the binding's contract (the topic may be a private one carrying it);
        # Faust's producer sends it, so Faust's commit waits for it.
        data = await self._serde(self.serde.encode, binding.topic, value, schema_topic=binding.contract.value)

        def delivered(_future: Any) -> None:
            self.platform.events_produced.labels(self.service, binding.topic).inc()

        await sink.send(key=_key(binding, value), value=data, callback=delivered)

    # ------------------------------------------------------------------ HTTP side

    async def record_served(self, rec: RecList) -> None:
        """Count a list served over HTTP as impressions (applied on the user's partition)."""
        if not rec.items or not self.settings.count_served_impressions:
            return
        command = served_command(rec.user_id, rec.strategy, rec.item_ids, now_ms())
        await self.topics.commands.send(key=rec.user_id.encode(), value=command)

    # ------------------------------------------------------------------ helpers

    async def _serde(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a serde call off the event loop, waiting out registry outages.

        While the registry is down the record waits (it is neither skipped nor
        dead-lettered); only when the service is stopping does the error propagate.
        """
        while True:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except SchemaRegistryUnavailable as exc:
                self.metrics.registry_retries.inc()
                if self.stopping.is_set():
                    raise
                log.warning("registry_unavailable_retrying", error=str(exc))
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=self.settings.registry_retry_s)
                except TimeoutError:
                    pass

    def _source_view(self, command: Any, message: Any) -> RecordView:
        origin = command.get("origin") if isinstance(command, Mapping) else None
        return RecordView.of_origin(origin) if origin else RecordView.of(message)

    async def _dead_letter(self, view: RecordView, error: BaseException, stage: str, kind: str) -> None:
        """Send the record, bytes untouched, to the dead-letter topic through Faust's producer.

        The letter, its headers, log line and counters are the platform's (:class:`DeadLetters`);
        the record goes through Faust so that its offset is committed only once the dead
        letter is flushed, like every other output of the agents.
        """
        letter = self.dead_letters.letter(cast(Message, view), error, stage=stage)
        await self.topics.dead_letters.send(
            key=letter.key,
            value=letter.value,
            headers=[(name, _header_bytes(value)) for name, value in letter.headers or []],
        )
        self.metrics.events_processed.labels(kind, "dead_letter").inc()
