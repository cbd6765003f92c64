"""The alerter process: consumer, engine, dispatcher, escalation ticker, wired once.

Flow: ``system.alerts`` records (from any service, from ``POST /alertmanager`` and
from acknowledgements) reach :meth:`AlerterService.handle_records` on the stream loop's
thread (at-least-once); the engine decides in memory and the dispatcher delivers on the
event loop. The handler returns as soon as the decision is made, so the offset is
committed without waiting for any channel: a slow or broken channel never holds the stream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from alerter import metrics
from alerter.alertmanager import AlertmanagerWebhook, to_alert_payloads
from alerter.channels import ChannelStatus, build_channels, channel_status
from alerter.config import Settings
from alerter.dispatcher import Dispatcher
from alerter.engine import AlertEngine, DeliveryJob
from alerter.journal import DeliveryJournal, JournalUnavailable, KafkaJournalStore
from alerter.models import ACK_BY_LABEL, ACK_INCIDENT_LABEL, AlertEvent, AlertStatus
from alerter.restore import restore_state
from alerter.routing import RoutingConfig
from mlops_platform.contracts import make_event
from mlops_platform.errors import PlatformError
from mlops_platform.health import CheckResult
from mlops_platform.kafka import Guarantee, Outbox, Record
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.service import ServiceRuntime

log = get_logger(__name__)


@dataclass(frozen=True)
class AlertmanagerOutcome:
    received: int
    published: int
    routed_directly: int
    failed: int
    alert_ids: list[str]


class AlerterService:
    """Composition root of the alerter: engine, dispatcher, stream loop, restore and checks."""

    def __init__(self, settings: Settings, routing: RoutingConfig | None = None) -> None:
        self.settings = settings
        self.routing = routing or RoutingConfig.load(settings.routes_file)
        self.channel_status: dict[str, ChannelStatus] = channel_status(settings)
        enabled = {name for name, status in self.channel_status.items() if status.enabled}
        self.engine = AlertEngine(
            self.routing,
            enabled_channels=enabled,
            history_max=settings.history_max,
            base_url=settings.base_url,
        )
        self.journal_store: KafkaJournalStore | None = None
        self.journal: DeliveryJournal | None = None
        if settings.journal_enabled:
            self.journal_store = KafkaJournalStore(
                settings,
                settings.journal_topic,
                client_id=f"{settings.service_name}-journal-{settings.instance_id}",
                # Read by assignment, never committed; named inside the group prefix the ACLs grant.
                reader_group=f"{settings.consumer_group}-restore-journal-{settings.instance_id}",
                read_timeout_s=settings.restore_timeout_s,
            )
            self.journal = DeliveryJournal(self.journal_store, retention_s=settings.journal_retention_s)
        self.dispatcher = Dispatcher(
            {},
            on_update=self.engine.delivery_update,
            on_finish=self.journal.finish if self.journal else None,
            on_release=self.journal.release if self.journal else None,
            workers=settings.delivery_workers,
            max_attempts=settings.delivery_max_attempts,
            backoff_base_s=settings.delivery_backoff_base_s,
            backoff_max_s=settings.delivery_backoff_max_s,
            jitter=settings.delivery_backoff_jitter,
            max_pending=settings.max_pending_deliveries,
            attempt_timeout_s=max(settings.http_timeout_s, settings.smtp_timeout_s) * 2,
        )
        self.runtime = ServiceRuntime(settings)
        self.runtime.stream(
            inputs=[settings.alerts], handler=self.handle_records, guarantee=Guarantee.AT_LEAST_ONCE
        )
        self.runtime.on_start(self.restore)
        self.runtime.checks["channels"] = self.channels_check
        self.runtime.heartbeat_details = self.heartbeat_details

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start the dispatcher, then the Kafka runtime; on shutdown stop the input first, then drain."""
        http = httpx.AsyncClient(timeout=self.settings.http_timeout_s)
        self.dispatcher.channels = dict(build_channels(self.settings, http))
        await self.dispatcher.start()
        self._report_channels()
        try:
            async with self.runtime.lifespan(app):
                ticker = asyncio.create_task(self._escalate_forever(), name="escalations")
                try:
                    yield
                finally:
                    ticker.cancel()
                    await asyncio.gather(ticker, return_exceptions=True)
        finally:
            await self.dispatcher.stop(self.settings.shutdown_timeout_s)
            if self.journal is not None:
                await asyncio.to_thread(self.journal.close, self.settings.shutdown_timeout_s)
            await http.aclose()
            log.info("alerter_stopped", **self.engine.stats())

    def restore(self) -> None:
        """Runs before the consumer loop starts: alert state (:mod:`alerter.restore`), then the journal."""
        result = restore_state(
            self.engine,
            settings=self.settings,
            serde=self.runtime.serde,
            binding=self.settings.alerts,
            group_id=self.settings.consumer_group,
            client_id=f"{self.settings.service_name}-restore",
            lookback_s=self.settings.restore_lookback_s,
            timeout_s=self.settings.restore_timeout_s,
        )
        self.resume_deliveries()
        self.send(result.announced)

    def resume_deliveries(self) -> int:
        """Attempt again what the journal says was started and never finished; returns how many.

        Runs after the alert state is replayed, so a resumed delivery updates its line in
        the alert's history. A journal that cannot be created or read is logged, not fatal:
        alerting goes on without it (deliveries in flight at a crash are then lost).
        """
        if self.journal is None or self.journal_store is None:
            return 0
        try:
            self.journal_store.ensure_topic()
            loaded = self.journal.load()
        except JournalUnavailable as exc:
            # Unusable (e.g. no ACL for the topic): run without it rather than make every
            # batch wait for acknowledgements that cannot come.
            log.error("journal_unusable_running_without", topic=self.settings.journal_topic, error=str(exc))
            metrics.JOURNAL_WRITE_FAILURES.inc()
            self.journal = None
            self.dispatcher.on_finish = self.dispatcher.on_release = None
            return 0
        jobs: list[DeliveryJob] = []
        for entry in loaded.resume:
            try:
                notification, channel = entry.job()
            except (KeyError, ValueError) as exc:
                log.warning("journal_entry_unusable", delivery_id=entry.delivery_id, error=str(exc))
                continue
            metrics.DELIVERIES_RESUMED.labels(channel).inc()
            log.info("delivery_resumed", delivery_id=entry.delivery_id, recorded_at=entry.at)
            jobs.append(self.engine.resumed_job(notification, channel))
        log.info(
            "journal_loaded",
            topic=self.settings.journal_topic,
            read=loaded.read,
            skipped=loaded.skipped,
            resumed=len(jobs),
            finished=loaded.finished,
            expired=loaded.expired,
        )
        self.dispatcher.submit(jobs)
        return len(jobs)

    def send(self, jobs: list[DeliveryJob]) -> None:
        """Journal ``jobs`` as pending (acknowledged by Kafka), then hand them to the dispatcher.

        Blocking: call it from a thread, not the event loop. Deliveries the journal already
        confirms are shown as delivered and not sent again.
        """
        if not jobs:
            return
        if self.journal is not None:
            jobs, confirmed = self.journal.begin(jobs)
            for job, entry in confirmed:
                state = "delivered" if entry.state.value == "done" else "failed"
                self.engine.delivery_update(job, state=state, attempts=entry.attempts, error=entry.error)
        self.dispatcher.submit(jobs)

    def _report_channels(self) -> None:
        for name, status in self.channel_status.items():
            metrics.CHANNEL_ENABLED.labels(name).set(1 if status.enabled else 0)
            if status.enabled:
                log.info("channel_enabled", channel=name, detail=status.detail)
            else:
                log.warning("channel_disabled", channel=name, detail=status.detail)
        unused = self.routing.channels_used() - set(self.dispatcher.channels)
        if unused:
            log.warning("routes_name_disabled_channels", channels=sorted(unused), routing=self.routing.source)

    async def _escalate_forever(self) -> None:
        loop = asyncio.get_running_loop()
        compacted_at = loop.time()
        while True:
            await asyncio.sleep(self.settings.escalation_interval_s)
            try:
                jobs = self.engine.due_escalations()
                if jobs:
                    await asyncio.to_thread(self.send, jobs)
                if (
                    self.journal is not None
                    and loop.time() - compacted_at >= self.settings.journal_compact_interval_s
                ):
                    compacted_at = loop.time()
                    await asyncio.to_thread(self.journal.compact)
            except Exception as exc:  # keep ticking whatever happened
                log.error("escalation_tick_failed", error=repr(exc))

    # ------------------------------------------------------------------ input

    def handle_records(self, records: list[Record], _outbox: Outbox) -> None:
        """Stream-loop handler: decide in memory, hand deliveries to the dispatcher, return.

        It emits nothing on the stream: people are told by the dispatcher, not through Kafka
        (only the delivery journal is written, and waited for).
        """
        jobs: list[DeliveryJob] = []
        for record in records:
            with bind_event(record.envelope):
                alert = AlertEvent.from_value(record.value, timestamp_ms=record.timestamp_ms)
                jobs.extend(self.engine.process(alert))
        # Journaled before the handler returns, so before the offsets are committed: a crash
        # from here on either processes the records again or finds the deliveries pending.
        self.send(jobs)

    async def receive_alertmanager(self, webhook: AlertmanagerWebhook) -> AlertmanagerOutcome:
        """Put Alertmanager's alerts on the alerts topic, so they take the same path as every alert.

        Delivery happens only when the consumer reads them back, so nothing is sent twice.
        If Kafka refuses them, they are routed in-process instead (when enabled): alerts
        about an outage must not depend on the thing that is out. Should such a record
        reach the topic after all, the engine knows its event id and does not send it again.
        """
        events = [make_event(self.settings.service_name, payload) for payload in to_alert_payloads(webhook)]
        errors = await self._publish(events)
        published = routed = failed = 0
        for event, error in zip(events, errors, strict=True):
            if error is None:
                published += 1
                metrics.ALERTMANAGER_ALERTS.labels("published").inc()
                continue
            log.warning("alertmanager_alert_not_published", dedup_key=event["dedup_key"], error=error)
            if not self.settings.alertmanager_direct_fallback:
                failed += 1
                continue
            routed += 1
            metrics.ALERTMANAGER_ALERTS.labels("direct").inc()
            # Not journaled: Kafka just refused these, and the caller must not wait on it again.
            self.dispatcher.submit(self.engine.process(AlertEvent.from_value(event)))
        return AlertmanagerOutcome(
            received=len(events),
            published=published,
            routed_directly=routed,
            failed=failed,
            alert_ids=[str(e["alert_id"]) for e in events],
        )

    async def acknowledge(
        self, alert_id: str, by: str, comment: str | None
    ) -> tuple[dict[str, Any], bool, bool]:
        """Ack now (escalation stops at once), then record it on the topic so a restart remembers.

        Returns (alert, changed, persisted).
        """
        alert, changed = self.engine.acknowledge(alert_id, by=by, comment=comment)
        if not changed:
            return alert, False, True
        cause = (
            {"event_id": alert["event_id"], "correlation_id": alert["correlation_id"] or alert["event_id"]}
            if alert.get("event_id")
            else None
        )
        event = make_event(
            self.settings.service_name,
            {
                "alert_id": str(uuid.uuid4()),
                "severity": alert["severity"],
                "title": f"acknowledged: {alert['title']}",
                "message": comment or f"acknowledged by {by}",
                "dedup_key": alert["dedup_key"],
                "status": AlertStatus.ACKNOWLEDGED.value,
                "labels": {ACK_INCIDENT_LABEL: alert["alert_id"], ACK_BY_LABEL: by},
                "related_event_id": alert.get("event_id"),
            },
            cause=cause,
        )
        errors = await self._publish([event])
        if errors[0] is not None:
            log.warning("ack_not_persisted", alert_id=alert["alert_id"], error=errors[0])
        return alert, True, errors[0] is None

    # ------------------------------------------------------------------ publishing

    async def _publish(self, events: list[dict[str, Any]]) -> list[str | None]:
        """Publish to the alerts topic and wait for the acknowledgements; one error (or None) per event.

        Every event is encoded before anything is sent (an encoding failure fails them
        all, with nothing written); then each reports its own outcome, so a partial
        refusal sends only the refused ones to the caller's fallback.
        """
        try:
            return await run_in_threadpool(self._deliver, events)
        except PlatformError as exc:  # encoding needs the registry
            return [str(exc)] * len(events)

    def _deliver(self, events: list[dict[str, Any]]) -> list[str | None]:
        outbox = Outbox(self.runtime.producer)
        for event in events:
            outbox.emit(self.settings.alerts, event)  # keyed by dedup_key (the binding's key field)
        return outbox.deliver_each()

    # ------------------------------------------------------------------ health

    def channels_check(self) -> CheckResult:
        enabled = [name for name, status in self.channel_status.items() if status.enabled]
        detail = "; ".join(f"{name}: {status.detail}" for name, status in self.channel_status.items())
        ok = bool(enabled) or not self.settings.require_channel
        return CheckResult(ok, detail)

    def heartbeat_details(self) -> dict[str, str]:
        stats = self.engine.stats()
        return {
            "consumer_lag": str(self.runtime.lag()),
            "open_alerts": str(stats["open"]),
            "pending_deliveries": str(self.dispatcher.pending),
            "journal_pending": str(self.journal.pending if self.journal else 0),
        }

    def channels_view(self) -> Mapping[str, dict[str, Any]]:
        return {
            name: {"enabled": status.enabled, "detail": status.detail}
            for name, status in self.channel_status.items()
        }
