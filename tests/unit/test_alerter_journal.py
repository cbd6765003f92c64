"""The delivery journal's bookkeeping, over an in-memory store standing in for the compacted topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from alerter.channels import WebhookChannel, email_message
from alerter.config import Settings
from alerter.dispatcher import Dispatcher
from alerter.engine import DeliveryJob
from alerter.journal import (
    DeliveryJournal,
    JournalEntry,
    JournalFormatError,
    JournalState,
    JournalUnavailable,
)
from alerter.models import DeliveryKind, Notification, Severity
from alerter.routing import RoutingConfig
from alerter.service import AlerterService
from tests.unit.test_alerter_engine import engine, event


class MemoryStore:
    """A log of (key, value) records; ``down`` makes acknowledged writes fail."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None]] = []
        self.down = False

    def read(self) -> Iterator[tuple[str, bytes | None]]:
        yield from list(self.records)

    def write(self, items: Sequence[tuple[str, bytes | None]]) -> None:
        if self.down:
            raise JournalUnavailable("broker down")
        self.records.extend(items)

    def write_later(self, key: str, value: bytes | None) -> None:
        if not self.down:
            self.records.append((key, value))

    def close(self, timeout_s: float) -> None:
        pass

    def latest(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for key, value in self.records:
            out[key] = None if value is None else JournalEntry.decode(key, value).state.value
        return {k: v for k, v in out.items() if v is not None}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def notification(
    alert_id: str = "A1", kind: DeliveryKind = DeliveryKind.NOTIFY, **kw: object
) -> Notification:
    base: dict[str, object] = dict(
        alert_id=alert_id,
        kind=kind,
        severity=Severity.CRITICAL,
        status="firing",
        title="disk full",
        message="sda1 at 99%",
        dedup_key="disk",
        source="node",
        labels={"team": "ops"},
        opened_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        occurrences=1,
        url="http://alerter/alerts/A1",
        event_id="e1",
    )
    base.update(kw)
    return Notification(**base)  # type: ignore[arg-type]


def job(channel: str = "webhook", **kw: object) -> DeliveryJob:
    n = notification(**kw)
    return DeliveryJob(n.alert_id, 1, channel, n)


def journal(store: MemoryStore, clock: Clock | None = None, retention_s: float = 3600) -> DeliveryJournal:
    return DeliveryJournal(store, retention_s=retention_s, clock=clock or Clock())


def test_delivery_id_names_alert_channel_and_attempt_kind() -> None:
    assert job().delivery_id == "A1/webhook/notify-1"
    assert job("email", kind=DeliveryKind.REMINDER, occurrences=4).delivery_id == "A1/email/reminder-4"
    assert (
        job("slack", kind=DeliveryKind.ESCALATION, escalation_level=2).delivery_id == "A1/slack/escalation-2"
    )
    assert job(kind=DeliveryKind.RESOLVED, status="resolved").delivery_id == "A1/webhook/resolved"


def test_notification_round_trips_through_its_dict() -> None:
    n = notification(
        kind=DeliveryKind.ESCALATION, escalation_level=2, correlation_id="c", related_event_id="r"
    )
    assert Notification.from_dict(n.as_dict()) == n


def test_pending_is_written_before_sending_and_done_after() -> None:
    store = MemoryStore()
    j = journal(store)
    send, confirmed = j.begin([job("webhook"), job("email")])
    assert [x.channel for x in send] == ["webhook", "email"] and confirmed == []
    assert store.latest() == {"A1/webhook/notify-1": "pending", "A1/email/notify-1": "pending"}
    assert j.pending == 2
    j.finish(send[0], state="delivered", attempts=1, error=None)
    j.finish(send[1], state="failed", attempts=5, error="SMTP 550")
    assert store.latest() == {"A1/webhook/notify-1": "done", "A1/email/notify-1": "failed"}
    assert j.pending == 0


def test_restart_resumes_pending_and_never_resends_confirmed() -> None:
    store = MemoryStore()
    first = journal(store)
    sent, _ = first.begin([job("webhook", alert_id="A1"), job("webhook", alert_id="A2")])
    first.finish(sent[0], state="delivered", attempts=1, error=None)  # A2 was in flight: crash

    second = journal(store)
    loaded = second.load()
    assert [e.delivery_id for e in loaded.resume] == ["A2/webhook/notify-1"]
    assert loaded.finished == 1 and second.pending == 1
    n, channel = loaded.resume[0].job()
    assert channel == "webhook" and n == notification(alert_id="A2")
    # The alert records are processed again (offsets not committed before the crash):
    send, confirmed = second.begin([job("webhook", alert_id="A1"), job("webhook", alert_id="A2")])
    assert send == []  # A1 confirmed, A2 already being resumed
    assert [(c.delivery_id, e.state) for c, e in confirmed] == [("A1/webhook/notify-1", JournalState.DONE)]


def test_a_later_kind_of_the_same_alert_is_a_new_delivery() -> None:
    store = MemoryStore()
    j = journal(store)
    sent, _ = j.begin([job()])
    j.finish(sent[0], state="delivered", attempts=1, error=None)
    send, confirmed = j.begin([job(kind=DeliveryKind.REMINDER, occurrences=3)])
    assert len(send) == 1 and confirmed == []


def test_duplicate_jobs_in_one_batch_are_sent_once() -> None:
    j = journal(MemoryStore())
    send, _ = j.begin([job(), job()])
    assert len(send) == 1


def test_unwritable_journal_still_sends() -> None:
    store = MemoryStore()
    store.down = True
    j = journal(store)
    send, _ = j.begin([job()])
    assert len(send) == 1 and store.records == []


def test_released_delivery_stays_pending_for_the_next_start() -> None:
    store = MemoryStore()
    j = journal(store)
    send, _ = j.begin([job()])
    j.release(send[0])
    assert j.pending == 0 and store.latest() == {"A1/webhook/notify-1": "pending"}
    assert [e.delivery_id for e in journal(store).load().resume] == ["A1/webhook/notify-1"]


def test_old_entries_are_tombstoned_and_stale_pending_not_resumed() -> None:
    store, clock = MemoryStore(), Clock()
    j = journal(store, clock, retention_s=100)
    sent, _ = j.begin([job(alert_id="A1"), job(alert_id="A2")])
    j.finish(sent[0], state="delivered", attempts=1, error=None)
    clock.now += 50
    sent3, _ = j.begin([job(alert_id="A3")])
    j.finish(sent3[0], state="delivered", attempts=1, error=None)
    clock.now += 60  # A1 finished 110 s ago, A3 50 s ago
    assert j.compact() == 1
    assert set(store.latest()) == {"A2/webhook/notify-1", "A3/webhook/notify-1"}

    later = journal(store, clock, retention_s=100)
    loaded = later.load()  # A2 pending for 110 s: too old to resume
    assert loaded.resume == [] and loaded.expired == 1 and loaded.finished == 1
    assert set(store.latest()) == {"A3/webhook/notify-1"}


def test_foreign_records_are_skipped_not_fatal() -> None:
    store = MemoryStore()
    store.records += [("x", b"not json"), ("y", b'{"delivery_id": "z", "state": "done"}')]
    loaded = journal(store).load()
    assert loaded.skipped == 2 and loaded.resume == []
    with pytest.raises(JournalFormatError):
        JournalEntry.decode("x", b"{}")


def test_dispatcher_reports_outcomes_to_the_journal_and_releases_at_shutdown() -> None:
    store = MemoryStore()
    j = journal(store)

    class Channel:
        name = "webhook"

        def __init__(self) -> None:
            self.gate = asyncio.Event()

        async def send(self, n: Notification) -> None:
            if n.alert_id == "slow":
                await self.gate.wait()

    async def run() -> None:
        dispatcher = Dispatcher({"webhook": Channel()}, on_finish=j.finish, on_release=j.release, workers=2)
        await dispatcher.start()
        send, _ = j.begin([job(alert_id="fast"), job(alert_id="slow")])
        dispatcher.submit(send)
        for _ in range(200):
            if dispatcher.pending == 1:
                break
            await asyncio.sleep(0.01)
        await dispatcher.stop(0.05)

    asyncio.run(run())
    assert store.latest() == {"fast/webhook/notify-1": "done", "slow/webhook/notify-1": "pending"}


def test_channels_carry_the_delivery_id() -> None:
    import httpx

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async def post() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await WebhookChannel("http://sink/webhook", client).send(notification())

    asyncio.run(post())
    assert seen[0].headers["Idempotency-Key"] == "A1/webhook/notify-1"
    assert seen[0].headers["X-Delivery-Id"] == "A1/webhook/notify-1"
    first = email_message(notification(), "a@x", ["b@x"], "A1/email/notify-1")
    again = email_message(notification(), "a@x", ["b@x"], "A1/email/notify-1")
    assert first["Message-ID"] == again["Message-ID"] and first["X-Delivery-Id"] == "A1/email/notify-1"


class StoreOnMemory(MemoryStore):
    """The service's view of the Kafka store: ``ensure_topic`` fails when the topic is refused."""

    def __init__(self, refused: bool = False) -> None:
        super().__init__()
        self.refused = refused

    def ensure_topic(self) -> None:
        if self.refused:
            raise JournalUnavailable("TOPIC_AUTHORIZATION_FAILED")


def service_with(store: StoreOnMemory) -> tuple[AlerterService, list[DeliveryJob]]:
    routing = RoutingConfig.from_dict({"routes": [{"name": "all", "channels": ["webhook"]}]})
    service = AlerterService(Settings(restore_lookback_s=0, webhook_url="http://sink/webhook"), routing)
    service.journal_store = store  # type: ignore[assignment]
    service.journal = DeliveryJournal(store, retention_s=3600)
    submitted: list[DeliveryJob] = []
    service.dispatcher.submit = submitted.extend  # type: ignore[method-assign]
    return service, submitted


def test_service_resumes_pending_deliveries_and_skips_confirmed_ones() -> None:
    store = StoreOnMemory()
    earlier = DeliveryJournal(store, retention_s=3600)
    sent, _ = earlier.begin([job(alert_id="A1"), job(alert_id="A2")])
    earlier.finish(sent[0], state="delivered", attempts=1, error=None)

    service, submitted = service_with(store)
    assert service.resume_deliveries() == 1
    assert [j.delivery_id for j in submitted] == ["A2/webhook/notify-1"]
    service.send([job(alert_id="A1"), job(alert_id="A2"), job(alert_id="A3")])
    assert [j.delivery_id for j in submitted] == ["A2/webhook/notify-1", "A3/webhook/notify-1"]


def test_service_runs_without_a_journal_it_cannot_create() -> None:
    service, submitted = service_with(StoreOnMemory(refused=True))
    assert service.resume_deliveries() == 0
    assert service.journal is None and service.dispatcher.on_finish is None
    service.send([job(alert_id="A1")])  # delivered all the same, without waiting on Kafka
    assert [j.delivery_id for j in submitted] == ["A1/webhook/notify-1"]


def test_resumed_delivery_updates_its_alert_line_whether_replayed_or_processed_again() -> None:
    # Replayed first (offset committed before the crash): the replayed line goes pending, then delivered.
    eng = engine()
    [job_a, _] = eng.process(event("ka", alert_id="RA"), replay=False)
    eng2 = engine()
    eng2.process(event("ka", alert_id="RA", event_id="e-ra"), replay=True)
    resumed = eng2.resumed_job(job_a.notification, job_a.channel)
    assert resumed.record_id > 0 and resumed.delivery_id == job_a.delivery_id
    assert [d["state"] for d in eng2.get("RA")["deliveries"]] == ["pending", "replayed"]  # type: ignore[index]
    eng2.delivery_update(resumed, state="delivered", attempts=1)
    assert [d["state"] for d in eng2.get("RA")["deliveries"]] == ["delivered", "replayed"]  # type: ignore[index]

    # Resumed before the alert is back (its record was not committed): the line made when it
    # is processed again is the one the resumed delivery finishes.
    eng3 = engine()
    early = eng3.resumed_job(job_a.notification, job_a.channel)
    assert early.record_id == 0
    eng3.process(event("ka", alert_id="RA"))
    eng3.delivery_update(early, state="delivered", attempts=1)
    states = {d["channel"]: d["state"] for d in eng3.get("RA")["deliveries"]}  # type: ignore[index]
    assert states == {job_a.channel: "delivered", "webhook": "pending"}
