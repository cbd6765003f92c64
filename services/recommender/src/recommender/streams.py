"""The Faust application: topics, changelog-backed tables and the two stream agents.

Stage 1, ``<app_id>-ingest``, reads the public topics as raw bytes, decodes them with
the registry's Avro serde and validates them. A record that cannot be decoded or is
invalid goes to the dead-letter topic with its bytes and headers unchanged plus the
``dlq.*`` headers; the others become commands on the internal ``<app_id>-user-commands``
topic, keyed by user id.

Stage 2, ``<app_id>-commands``, applies commands to the tables through
:class:`~recommender.engine.Recommender` and publishes what changed
(``recommendations.updated``, ``push.recommendations``), plus fan-out commands for users
with similar tastes. The tables are co-partitioned with the commands topic, so each
user's state lives on exactly one partition and its changelog; Faust rebuilds them
from the changelog topics on start and after every rebalance.

Delivery is at least once: Faust commits an input offset only after the records
produced for it (outputs, commands, dead letters) were flushed. A crash between the
table writes and the commit can apply a record twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import faust
from confluent_kafka import Message
from faust.contrib.asgi import faust_app_running
from faust.types import EventT, StreamT

from mlops_platform.contracts import Topic, make_event
from mlops_platform.errors import SchemaRegistryUnavailable, SerializationError
from mlops_platform.health import CheckResult
from mlops_platform.kafka import dead_letter_headers
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.serde import AvroSerde
from recommender.commands import (
    KIND_CLICK,
    KIND_FEEDBACK,
    KIND_INTERACTION,
    KIND_SERVED,
    KIND_SIMILAR_BOOST,
    InvalidEvent,
    command_from_event,
    origin_bytes,
    origin_of,
    served_command,
    similar_boost_command,
    to_click,
    to_interaction,
)
from recommender.config import Settings
from recommender.engine import Outcome, RecList, Recommender, StateTables, now_ms
from recommender.metrics import recommender_metrics
from recsys_data import Catalogue

log = get_logger(__name__)

T = TypeVar("T")

TABLES = (
    ("activity", "Last interactions per user"),
    ("profiles", "Genre profile per user"),
    ("boosts", "Boosted items per user"),
    ("topk", "Current top-k recommendations per user"),
    ("item_stats", "Interactions, impressions and clicks per item (sharded by partition)"),
    ("cooccurrence", "Co-consumed items per item (sharded by partition)"),
    ("strategy_stats", "Impressions, clicks and lists per strategy (sharded by partition)"),
    ("segments", "Recently active users per dominant genre (sharded by partition)"),
)


@dataclass
class RecordView:
    """The parts of a Kafka record ``dead_letter_headers`` reads, in confluent-kafka's shape."""

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


class RecommenderStreams:
    """The Faust app of the recommender, its tables and the engine working on them."""

    def __init__(self, settings: Settings, serde: AvroSerde, catalogue: Catalogue) -> None:
        self.settings = settings
        self.serde = serde
        self.service = settings.service_name
        self.metrics = recommender_metrics()
        self.platform = platform_metrics()
        self.stopping = asyncio.Event()
        self.started = False
        self.total_lag = 0
        self.user_count = 0
        settings.faust_datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.app_id,
            broker=settings.broker_urls,
            store="memory://",
            # Faust creates its internal topics (changelogs, the commands topic) itself,
            # through the admin API: the broker does not auto-create topics.
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,
            web_enabled=False,
            autodiscover=False,
            datadir=str(settings.faust_datadir),
            consumer_auto_offset_reset=settings.auto_offset_reset,
            broker_commit_interval=settings.commit_interval_s,
            broker_client_id=f"{settings.service_name}-{settings.instance_id}",
            producer_acks=-1,
            # Table keys and values are JSON documents in their changelogs.
            table_key_serializer="json",
            table_value_serializer="json",
        )
        # Source topic -> (event kind, catalogue topic whose contract it carries).
        self.sources: dict[str, tuple[str, str]] = {
            settings.interaction_topic: (KIND_INTERACTION, Topic.BUSINESS_USER_INTERACTION.value),
            settings.click_topic: (KIND_CLICK, Topic.BUSINESS_RECOMMENDATION_CLICKED.value),
            settings.feedback_topic: (KIND_FEEDBACK, Topic.BUSINESS_FEEDBACK_RECEIVED.value),
        }
        self.source_topic = self.app.topic(*self.sources, key_serializer="raw", value_serializer="raw")
        self.commands_topic = self.app.topic(
            f"{settings.app_id}-user-commands",
            internal=True,
            partitions=settings.partitions,
            replicas=settings.replication_factor,
            retention=timedelta(milliseconds=settings.command_retention_ms),
            key_serializer="raw",
            value_serializer="json",
        )
        self.updated_topic = self.app.topic(
            settings.updated_topic, key_serializer="raw", value_serializer="raw"
        )
        self.push_topic = self.app.topic(settings.push_topic, key_serializer="raw", value_serializer="raw")
        self.dead_letter_topic = self.app.topic(
            settings.dead_letter_topic, key_serializer="raw", value_serializer="raw"
        )
        tables = {
            name: self.app.Table(
                name,
                partitions=settings.partitions,
                help=description,
            )
            for name, description in TABLES
        }
        self.tables = StateTables(**cast(dict[str, Any], tables))
        self.engine = Recommender(catalogue, self.tables, settings.engine_config())
        tables["item_stats"].on_recover(self._on_item_stats_recovered)
        self.app.agent(self.source_topic, name=f"{settings.app_id}-ingest")(self._ingest_agent)
        self.app.agent(self.commands_topic, name=f"{settings.app_id}-commands")(self._command_agent)
        self.app.timer(settings.metrics_interval_s)(self._report)

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the Faust app on the current event loop; stop it (and commit) on exit."""
        self.stopping.clear()
        async with faust_app_running(self.app, stop_timeout=self.settings.stop_timeout_s):
            # Table writes queue their changelog records; past this many the agents pause until
            # the queue drains. An interaction writes about fifteen (its user's tables, item
            # statistics, co-occurrence, impressions of the pushed list), so Faust's default of
            # 100 would throttle (and warn) at a handful of events in flight.
            self.app.producer.buffer.max_messages = self.settings.changelog_buffer
            self.started = True
            log.info("streams_started", app_id=self.settings.app_id, sources=sorted(self.sources))
            watchdog = asyncio.create_task(self.exit_on_crash(), name="recommender-crash-watchdog")
            try:
                yield
            finally:
                watchdog.cancel()
                # Serde retries give up, so the agents finish their event and Faust can commit.
                self.stopping.set()
                log.info("streams_stopping")
        self.started = False
        log.info("streams_stopped")

    async def exit_on_crash(self, interval_s: float = 1.0) -> None:
        """A crashed Faust app never recovers by itself: stop the process so it is restarted.

        SIGTERM goes through the normal graceful shutdown (uvicorn runs the lifespan exit).
        """
        while not self.app.crashed:
            await asyncio.sleep(interval_s)
        log.error("streams_crashed_exiting", reason=repr(self.app.crash_reason))
        self.on_crash()

    def on_crash(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def check(self) -> CheckResult:
        """Readiness: the app runs, is not rebalancing, and its tables are restored."""
        app = self.app
        if not self.started:
            return CheckResult(False, "stream processor not started")
        if app.crashed:
            return CheckResult(False, f"stream processor crashed: {app.crash_reason!r}")
        if app.should_stop:
            return CheckResult(False, "stream processor stopping")
        recovery = cast(Any, app.tables).recovery
        if not recovery.completed.is_set() or app.in_recovery:
            return CheckResult(False, "restoring tables from their changelogs")
        if app.rebalancing:
            return CheckResult(False, "rebalancing")
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in self.sources]
        if not assigned:
            # More instances than partitions, or the source topics are missing: this
            # instance holds no users, so it cannot answer for any.
            return CheckResult(False, f"no partition of {sorted(self.sources)} assigned")
        return CheckResult(
            True, f"app {self.settings.app_id}: {len(assigned)} source partitions, tables restored"
        )

    def heartbeat_details(self) -> dict[str, str]:
        """Details of the ``system.health`` heartbeat (figures kept by the metrics timer)."""
        return {
            "app_id": self.settings.app_id,
            "consumer_lag": str(self.total_lag),
            "users": str(self.user_count),
            "running": str(self.started).lower(),
        }

    async def _on_item_stats_recovered(self) -> None:
        self.engine.reload()
        log.info("tables_recovered", sizes=self.tables.sizes())

    # ------------------------------------------------------------------ stage 1: decode

    async def _ingest_agent(self, stream: StreamT[Any]) -> None:
        event: EventT[Any]
        async for event in stream.events():
            await self.ingest(event.message)

    async def ingest(self, message: Any) -> None:
        """Decode and validate one record of a public topic; forward it as a user command."""
        topic = str(message.topic)
        kind, contract = self.sources[topic]
        self.platform.events_consumed.labels(self.service, topic).inc()
        received = now_ms()
        view = RecordView.of(message)
        try:
            value = await self._serde(self.serde.decode, topic, message.value, schema_topic=contract)
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
        await self.commands_topic.send(key=command["user_id"].encode(), value=command)

    # ------------------------------------------------------------------ stage 2: apply

    async def _command_agent(self, stream: StreamT[Any]) -> None:
        event: EventT[Any]
        async for event in stream.events():
            await self.handle(cast(Mapping[str, Any], event.value), event.message)

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
            if outcome.updated is not None:
                self.metrics.refresh_seconds.observe(time.perf_counter() - started)
            try:
                await self._publish(command, outcome)
            except (SerializationError, SchemaRegistryUnavailable) as exc:
                await self._dead_letter(self._source_view(command, message), exc, "produce", kind)
                return
            self.metrics.events_processed.labels(kind, "ok").inc()

    def apply(self, command: Mapping[str, Any], shard: int) -> Outcome | None:
        """Run a command through the engine (synchronous: table writes happen here)."""
        kind = command["kind"]
        user_id = str(command["user_id"])
        data = command.get("data") or {}
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
            key = rec.user_id.encode()
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
            await self._send(self.updated_topic, Topic.RECOMMENDATIONS_UPDATED.value, key, updated)
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
                await self._send(self.push_topic, Topic.PUSH_RECOMMENDATIONS.value, key, push)
                self.metrics.recommendations_published.labels("push.recommendations", rec.trigger).inc()
            if isinstance(received, int):
                self.metrics.update_latency.labels(rec.trigger).observe(max(now_ms() - received, 0) / 1000)
        for user_id in outcome.similar_users:
            boost = similar_boost_command(
                user_id, outcome.boosted_items, self.engine.config.similar_user_boost, command
            )
            await self.commands_topic.send(key=user_id.encode(), value=boost)

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

    async def _send(self, topic: Any, contract: str, key: bytes, value: Mapping[str, Any]) -> None:
        name = str(topic.get_topic_name())
        data = await self._serde(self.serde.encode, name, value, schema_topic=contract)

        def delivered(_future: Any) -> None:
            self.platform.events_produced.labels(self.service, name).inc()

        await topic.send(key=key, value=data, callback=delivered)

    # ------------------------------------------------------------------ HTTP side

    async def record_served(self, rec: RecList) -> None:
        """Count a list served over HTTP as impressions (applied on the user's partition)."""
        if not rec.items or not self.settings.count_served_impressions:
            return
        command = served_command(rec.user_id, rec.strategy, rec.item_ids, now_ms())
        await self.commands_topic.send(key=rec.user_id.encode(), value=command)

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
        log.warning(
            "dead_letter",
            topic=view.topic_name,
            partition=view.partition_no,
            offset=view.offset_no,
            stage=stage,
            error=f"{type(error).__name__}: {error}",
        )
        headers = dead_letter_headers(cast(Message, view), error, stage=stage, service=self.service)
        await self.dead_letter_topic.send(
            key=view.key_bytes,
            value=view.value_bytes,
            headers=cast(Any, [(name, _header_bytes(value)) for name, value in headers]),
        )
        self.platform.dead_letters.labels(self.service, view.topic_name, stage).inc()
        self.platform.events_failed.labels(self.service, view.topic_name, stage).inc()
        self.metrics.events_processed.labels(kind, "dead_letter").inc()

    async def _report(self) -> None:
        """Refresh the gauges: table sizes, per-strategy A/B stats, consumer lag."""
        sizes = self.tables.sizes()
        for name, size in sizes.items():
            self.metrics.table_keys.labels(name).set(size)
        self.user_count = sizes["profiles"]
        for strategy, stats in self.engine.strategy_stats().items():
            self.metrics.strategy_impressions.labels(strategy).set(stats["impressions"])
            self.metrics.strategy_clicks.labels(strategy).set(stats["clicks"])
            self.metrics.strategy_ctr.labels(strategy).set(stats["ctr"])
        self.report_lag()

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each assigned source partition."""
        consumer = self.app.consumer
        read_offsets = getattr(consumer, "_read_offset", {})
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            if tp.topic not in self.sources and tp.topic != self.commands_topic.get_topic_name():
                continue
            try:
                high = consumer.highwater(tp)
            except Exception as exc:  # the partition was not fetched yet
                log.debug("highwater_unknown", topic=tp.topic, partition=tp.partition, error=repr(exc))
                continue
            if high is None:
                continue
            read = read_offsets.get(tp)
            position = read + 1 if read is not None else high
            lags[(tp.topic, tp.partition)] = max(int(high) - int(position), 0)
        return lags

    def report_lag(self) -> None:
        lags = self.lag()
        for (topic, partition), lag in lags.items():
            self.platform.consumer_lag.labels(self.service, self.settings.app_id, topic, str(partition)).set(
                lag
            )
        self.total_lag = sum(lags.values())
