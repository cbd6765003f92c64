"""The recommender process: platform runtime, Faust app, tables, agents and engine, wired once.

The platform's :class:`~mlops_platform.service.ServiceRuntime` brings the registry serde,
the readiness checks of Kafka and the registry and the ``system.health`` heartbeat; the
consuming is Faust's (its changelog-backed tables need it), not a platform stream loop.

Faust app ``<app_id>`` (the consumer group, ``recommender`` by default):

* agent ``<app_id>-ingest`` reads the consumed bindings' topics as raw bytes and hands
  each record to :meth:`RecommenderStreams.ingest` (decode, validate, re-key by user);
* agent ``<app_id>-commands`` reads the internal ``<app_id>-user-commands`` topic and hands
  each command to :meth:`RecommenderStreams.handle` (tables, then outputs);
* the tables are co-partitioned with the commands topic, so each user's state lives on
  exactly one partition and its changelog; Faust rebuilds them from the changelog topics
  on start and after every rebalance;
* a timer refreshes the gauges, the consumer lag and the heartbeat figures.

Several instances may share the app id: Faust's assignor spreads the partitions over them
and publishes each member's canonical URL (``Settings.canonical_url``, its own HTTP base
URL) with the assignment, which :mod:`recommender.routing` reads to forward a per-user
request to the instance owning the user's partition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

import faust
import httpx
from fastapi import FastAPI
from faust.contrib.asgi import faust_app_running
from faust.types import EventT, StreamT, TopicT

from mlops_platform.health import CheckResult
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.service import ServiceRuntime
from recommender.config import Settings
from recommender.engine import Recommender, StateTables
from recommender.metrics import recommender_metrics
from recommender.offsets import MarkerAwareConsumer, MarkerAwareTransport
from recommender.recovery import SeekFirstTableManager
from recommender.routing import PartitionOwners, UserRouting
from recommender.streams import RecommenderStreams, StreamTopics
from recsys_data import Catalogue, load_catalogue

log = get_logger(__name__)

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


def faust_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """aiokafka's SASL credentials from the shared Kafka settings (None: PLAINTEXT)."""
    if not settings.kafka_uses_sasl:
        return None
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password is not None else None,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl.create_default_context() if settings.kafka_security_protocol == "SASL_SSL" else None,
    )


def build_faust_app(settings: Settings) -> faust.App:
    """The Faust app: its id is the consumer group and the prefix of its internal topics."""
    settings.faust_datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.consumer_group,
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
        broker_session_timeout=settings.session_timeout_s,
        broker_client_id=f"{settings.service_name}-{settings.instance_id}",
        # Published by the partition assignor with this member's partitions: where the other
        # instances forward requests for the users of those partitions.
        canonical_url=settings.canonical_url,
        # The same principal as the service's confluent-kafka clients (shared settings).
        broker_credentials=faust_credentials(settings),
        producer_acks=-1,
        # Table keys and values are JSON documents in their changelogs.
        table_key_serializer="json",
        table_value_serializer="json",
        # Seeks the stream partitions before they deliver again after a rebalance (see
        # recommender.recovery).
        TableManager=SeekFirstTableManager,
    )
    # The inputs are written by transactional producers: their markers leave gaps in the
    # offsets, which faust-streaming's own consumer commits past one transaction per commit
    # (see recommender.offsets).
    app.transport = MarkerAwareTransport(app.conf.broker_consumer, app)
    return app


class CommitFlush:
    """Make the flush Faust runs before committing offsets wait for every table write.

    Table writes are queued in the producer's buffer (``send_soon``) and produced in the
    background. Faust flushes the producer before it commits offsets, but faust-streaming's
    ``ProducerBuffer.flush`` returns once its queue looks empty (the record being handed to
    aiokafka is no longer in it) or after 0.1 s without progress, and aiokafka's flush only
    covers what it already holds; offsets could then be committed while table changes were
    unacknowledged, and a SIGKILL lost them. This flush waits until every changelog record
    queued so far is acknowledged by the broker, and fails (so nothing is committed) if
    one of them could not be written.
    """

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.pending: set[asyncio.Future[Any]] = set()
        self._put = buffer.put
        # The producer calls ``buffer.put`` for every table write and ``buffer.flush`` before
        # every commit (and on stop).
        buffer.put = self.put
        buffer.flush = self.flush

    def put(self, fut: asyncio.Future[Any]) -> None:
        self.pending.add(fut)
        fut.add_done_callback(self.pending.discard)
        self._put(fut)

    async def flush(self) -> None:
        """Wait for the records queued before this call (later ones belong to a later commit)."""
        queued = list(self.pending)
        if queued:
            await asyncio.gather(*queued)


class RecommenderService:
    """Everything the recommender runs, around one :class:`ServiceRuntime` and one Faust app."""

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: ServiceRuntime | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime or ServiceRuntime(settings)
        catalogue = catalogue or load_catalogue(settings.catalogue_items, settings.catalogue_seed)
        self.metrics = recommender_metrics()
        self.platform = platform_metrics()
        self.started = False
        self.total_lag = 0
        self.user_count = 0

        app_id = settings.consumer_group
        self.app = build_faust_app(settings)
        self.source_topics = [binding.topic for binding in settings.bindings().consumes]
        self.source_topic = self.app.topic(*self.source_topics, key_serializer="raw", value_serializer="raw")
        self.commands_topic = self.app.topic(
            f"{app_id}-user-commands",
            internal=True,
            partitions=settings.partitions,
            replicas=settings.replication_factor,
            retention=timedelta(milliseconds=settings.command_retention_ms),
            key_serializer="raw",
            value_serializer="json",
        )
        tables = {
            name: self.app.Table(name, partitions=settings.partitions, help=description)
            for name, description in TABLES
        }
        engine = Recommender(catalogue, StateTables(**cast(dict[str, Any], tables)), settings.engine_config())
        self.streams = RecommenderStreams(
            settings,
            self.runtime.serde,
            engine,
            StreamTopics(
                commands=self.commands_topic,
                updated=self._raw_topic(settings.updated.topic),
                push=self._raw_topic(settings.push.topic),
                dead_letters=self._raw_topic(settings.dead_letter_topic),
            ),
        )
        # Every per-user table shares the commands topic's partitioning: "topk" stands for all.
        self.owners = PartitionOwners(
            self.app, table="topk", partitions=settings.partitions, own_url=settings.canonical_url
        )
        tables["item_stats"].on_recover(self._on_item_stats_recovered)
        self.app.agent(self.source_topic, name=f"{app_id}-ingest")(self._ingest_agent)
        self.app.agent(self.commands_topic, name=f"{app_id}-commands")(self._command_agent)
        self.app.timer(settings.metrics_interval_s)(self._report)

        self.runtime.checks["streams"] = self.check
        self.runtime.heartbeat_details = self.heartbeat_details

    def _raw_topic(self, name: str) -> TopicT:
        # The stages encode with the registry serde themselves; Faust sends the bytes.
        return self.app.topic(name, key_serializer="raw", value_serializer="raw")

    @property
    def engine(self) -> Recommender:
        return self.streams.engine

    # ------------------------------------------------------------------ agents

    async def _ingest_agent(self, stream: StreamT[Any]) -> None:
        event: EventT[Any]
        async for event in stream.events():
            await self.streams.ingest(event.message)

    async def _command_agent(self, stream: StreamT[Any]) -> None:
        event: EventT[Any]
        async for event in stream.events():
            await self.streams.handle(cast(Mapping[str, Any], event.value), event.message)

    async def _on_item_stats_recovered(self) -> None:
        self.engine.reload()
        log.info("tables_recovered", sizes=self.engine.tables.sizes())

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """FastAPI lifespan: the platform runtime, then the Faust app; stopped in reverse order."""
        async with (
            self.runtime.lifespan(app),
            self.running(),
            httpx.AsyncClient(timeout=self.settings.forward_timeout_s) as client,
        ):
            app.state.routing = UserRouting(
                self.owners,
                client,
                instance_id=self.settings.instance_id,
                timeout_s=self.settings.forward_timeout_s,
            )
            app.state.recommender = self.streams
            yield

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the Faust app on the current event loop; stop it (and commit) on exit."""
        self.streams.stopping.clear()
        async with faust_app_running(self.app, stop_timeout=self.settings.stop_timeout_s):
            # Table writes queue their changelog records; past this many the agents pause until
            # the queue drains. An interaction writes about fifteen (its user's tables, item
            # statistics, co-occurrence, impressions of the pushed list), so Faust's default of
            # 100 would throttle (and warn) at a handful of events in flight.
            self.app.producer.buffer.max_messages = self.settings.changelog_buffer
            self.commit_flush = CommitFlush(self.app.producer.buffer)
            self.started = True
            log.info(
                "streams_started", app_id=self.settings.consumer_group, sources=sorted(self.source_topics)
            )
            watchdog = asyncio.create_task(self.exit_on_crash(), name="recommender-crash-watchdog")
            try:
                yield
            finally:
                watchdog.cancel()
                # The stream processor fails its check while it stops: say so before it does.
                self.runtime.say_goodbye()
                # Serde retries give up, so the agents finish their event and Faust can commit.
                self.streams.stopping.set()
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

    # ------------------------------------------------------------------ readiness, heartbeat, gauges

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
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in self.source_topics]
        if not assigned:
            # More instances than partitions, or the source topics are missing: this
            # instance holds no users, so it cannot answer for any.
            return CheckResult(False, f"no partition of {sorted(self.source_topics)} assigned")
        return CheckResult(
            True, f"app {self.settings.consumer_group}: {len(assigned)} source partitions, tables restored"
        )

    def heartbeat_details(self) -> dict[str, str]:
        """Details of the ``system.health`` heartbeat (figures kept by the metrics timer)."""
        return {
            "app_id": self.settings.consumer_group,
            "consumer_lag": str(self.total_lag),
            "users": str(self.user_count),
            "running": str(self.started).lower(),
        }

    async def _report(self) -> None:
        """Refresh the gauges: table sizes, per-strategy A/B stats, consumer lag."""
        sizes = self.engine.tables.sizes()
        for name, size in sizes.items():
            self.metrics.table_keys.labels(name).set(size)
        self.user_count = sizes["profiles"]
        for strategy, stats in self.engine.strategy_stats().items():
            self.metrics.strategy_impressions.labels(strategy).set(stats["impressions"])
            self.metrics.strategy_clicks.labels(strategy).set(stats["clicks"])
            self.metrics.strategy_ctr.labels(strategy).set(stats["ctr"])
        self.report_lag()

    def lag(self) -> dict[tuple[str, int], int]:
        """The group's lag on each assigned source and commands partition: end minus committed offset.

        Measured from the offsets the broker accepted, as ``kafka-consumer-groups`` shows it
        (records processed but not committed yet are replayed by a restart, so they count).
        A partition the group never committed counts from what this instance has read.
        """
        consumer = self.app.consumer
        committed = consumer.broker_committed if isinstance(consumer, MarkerAwareConsumer) else {}
        read_offsets = getattr(consumer, "_read_offset", {})
        commands = self.commands_topic.get_topic_name()
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            if tp.topic not in self.source_topics and tp.topic != commands:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception as exc:  # the partition was not fetched yet
                log.debug("highwater_unknown", topic=tp.topic, partition=tp.partition, error=repr(exc))
                continue
            if high is None:
                continue
            position = committed.get(tp)
            if position is None:
                read = read_offsets.get(tp)
                position = read + 1 if read is not None else high
            lags[(tp.topic, tp.partition)] = max(int(high) - int(position), 0)
        return lags

    def report_lag(self) -> None:
        lags = self.lag()
        service, group = self.settings.service_name, self.settings.consumer_group
        for (topic, partition), lag in lags.items():
            self.platform.consumer_lag.labels(service, group, topic, str(partition)).set(lag)
        self.total_lag = sum(lags.values())
