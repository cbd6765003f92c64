from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from alerter.channels import DeliveryError
from alerter.dispatcher import Dispatcher
from alerter.engine import DeliveryJob
from alerter.models import DeliveryKind, Notification, Severity


def job(channel: str, alert_id: str = "A1", record_id: int = 1) -> DeliveryJob:
    notification = Notification(
        alert_id=alert_id,
        kind=DeliveryKind.NOTIFY,
        severity=Severity.HIGH,
        status="firing",
        title="t",
        message="m",
        dedup_key="k",
        source="s",
        labels={},
        opened_at=datetime.now(UTC),
        occurrences=1,
    )
    return DeliveryJob(alert_id=alert_id, record_id=record_id, channel=channel, notification=notification)


class FakeChannel:
    """Fails the first ``failures`` sends with ``error``, then succeeds; records attempt times."""

    def __init__(self, name: str, failures: int = 0, error: Exception | None = None) -> None:
        self.name = name
        self.failures = failures
        self.error = error or DeliveryError("HTTP 503: busy", retryable=True)
        self.attempts: list[float] = []
        self.sent: list[Notification] = []
        self.gate: asyncio.Event | None = None

    async def send(self, notification: Notification) -> None:
        self.attempts.append(time.monotonic())
        if self.gate is not None:
            await self.gate.wait()
        if len(self.attempts) <= self.failures:
            raise self.error
        self.sent.append(notification)


class Updates:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, int, str | None]] = []

    def __call__(self, job: DeliveryJob, *, state: str, attempts: int, error: str | None) -> None:
        self.items.append((job.alert_id, state, attempts, error))

    def final(self, alert_id: str) -> tuple[str, int, str | None]:
        last = [i for i in self.items if i[0] == alert_id][-1]
        return last[1], last[2], last[3]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def dispatcher(channels: dict[str, Any], updates: Updates, **kw: Any) -> Dispatcher:
    options: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 1.0, "jitter": 0.0, **kw}
    return Dispatcher(channels, on_update=updates, **options)


async def test_delivers_and_counts() -> None:
    updates, channel = Updates(), FakeChannel("t-ok")
    d = dispatcher({"t-ok": channel}, updates)
    await d.start()
    before = metric("alerter_deliveries_total", channel="t-ok", kind="notify")
    d.submit([job("t-ok")])
    await until(lambda: channel.sent)
    await d.stop(5)
    assert updates.final("A1") == ("delivered", 1, None)
    assert metric("alerter_deliveries_total", channel="t-ok", kind="notify") == before + 1
    assert metric("alerter_delivery_latency_seconds_count", channel="t-ok") >= 1


async def test_transient_failures_are_retried_with_exponential_backoff() -> None:
    updates, channel = Updates(), FakeChannel("t-flaky", failures=3)
    d = dispatcher({"t-flaky": channel}, updates, max_attempts=5)
    await d.start()
    retries = metric("alerter_delivery_retries_total", channel="t-flaky")
    d.submit([job("t-flaky")])
    await until(lambda: channel.sent)
    await d.stop(5)
    assert len(channel.attempts) == 4
    gaps = [b - a for a, b in zip(channel.attempts, channel.attempts[1:], strict=False)]
    # 0.01, 0.02, 0.04 at least: each wait doubles
    for gap, minimum in zip(gaps, (0.01, 0.02, 0.04), strict=True):
        assert gap >= minimum * 0.95
    assert metric("alerter_delivery_retries_total", channel="t-flaky") == retries + 3
    assert ("A1", "retrying", 1, "HTTP 503: busy") in updates.items
    assert updates.final("A1") == ("delivered", 4, None)


async def test_gives_up_after_max_attempts_and_counts_a_failure() -> None:
    updates, channel = Updates(), FakeChannel("t-down", failures=100)
    d = dispatcher({"t-down": channel}, updates, max_attempts=3)
    await d.start()
    failures = metric("alerter_delivery_failures_total", channel="t-down")
    d.submit([job("t-down")])
    await until(lambda: updates.items and updates.final("A1")[0] == "failed")
    await d.stop(5)
    assert len(channel.attempts) == 3
    assert updates.final("A1") == ("failed", 3, "HTTP 503: busy")
    assert metric("alerter_delivery_failures_total", channel="t-down") == failures + 1


async def test_permanent_errors_are_not_retried() -> None:
    updates = Updates()
    channel = FakeChannel("t-bad", failures=100, error=DeliveryError("HTTP 400: bad", retryable=False))
    d = dispatcher({"t-bad": channel}, updates, max_attempts=5)
    await d.start()
    d.submit([job("t-bad")])
    await until(lambda: updates.items and updates.final("A1")[0] == "failed")
    await d.stop(5)
    assert len(channel.attempts) == 1


async def test_a_failing_channel_does_not_hold_other_deliveries() -> None:
    """One worker only: the failing job waits for its retry on a timer, not in the worker."""
    updates = Updates()
    broken, healthy = FakeChannel("t-broken", failures=100), FakeChannel("t-healthy")
    d = dispatcher({"t-broken": broken, "t-healthy": healthy}, updates, workers=1, backoff_base_s=30)
    await d.start()
    d.submit([job("t-broken", "A1")])
    await until(lambda: broken.attempts)
    d.submit([job("t-healthy", "A2"), job("t-healthy", "A3")])
    await until(lambda: len(healthy.sent) == 2)
    assert len(broken.attempts) == 1  # still waiting for its retry
    assert d.pending == 1
    await d.stop(0.1)
    assert updates.final("A1")[0] == "failed"


async def test_shutdown_lets_pending_deliveries_finish() -> None:
    updates, channel = Updates(), FakeChannel("t-slow")
    channel.gate = asyncio.Event()
    d = dispatcher({"t-slow": channel}, updates)
    await d.start()
    d.submit([job("t-slow")])
    await until(lambda: channel.attempts)
    stopping = asyncio.create_task(d.stop(10))
    await asyncio.sleep(0.05)
    assert not stopping.done()
    channel.gate.set()
    await stopping
    assert updates.final("A1") == ("delivered", 1, None)


async def test_shutdown_is_bounded_and_records_what_was_abandoned() -> None:
    updates, channel = Updates(), FakeChannel("t-hang")
    channel.gate = asyncio.Event()  # never set
    d = dispatcher({"t-hang": channel}, updates)
    await d.start()
    d.submit([job("t-hang")])
    await until(lambda: channel.attempts)
    await d.stop(0.05)
    assert updates.final("A1")[0] == "failed"
    assert "shutdown" in (updates.final("A1")[2] or "")
    d.submit([job("t-hang", "A2")])  # refused after stop, recorded, not raised
    assert updates.final("A2")[0] == "failed"


async def test_submit_from_another_thread() -> None:
    updates, channel = Updates(), FakeChannel("t-thread")
    d = dispatcher({"t-thread": channel}, updates)
    await d.start()
    thread = threading.Thread(target=d.submit, args=([job("t-thread")],))
    thread.start()
    thread.join()
    await until(lambda: channel.sent)
    await d.stop(5)


async def test_queue_is_bounded() -> None:
    updates, channel = Updates(), FakeChannel("t-full")
    channel.gate = asyncio.Event()
    d = dispatcher({"t-full": channel}, updates, max_pending=1)
    await d.start()
    d.submit([job("t-full", "A1"), job("t-full", "A2")])
    assert updates.final("A2") == ("failed", 0, "delivery queue full")
    channel.gate.set()
    await d.stop(5)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 1.2), (2, 2.4), (3, 4.8), (7, 72.0), (10, 72.0)])
def test_backoff_doubles_up_to_the_cap_plus_jitter(attempt: int, delay: float) -> None:
    d = Dispatcher({}, backoff_base_s=1.0, backoff_max_s=60.0, jitter=0.2, rng=lambda: 1.0)
    assert d.backoff_s(attempt) == pytest.approx(delay)
