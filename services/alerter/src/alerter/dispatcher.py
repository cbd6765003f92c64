"""Asynchronous delivery: a pool of asyncio workers with retries and exponential backoff.

:meth:`Dispatcher.submit` is safe to call from any thread (the Kafka consumer thread
included) and never waits: jobs go onto the event loop's queue. A failed attempt is
re-queued after ``base * 2**(attempt-1)`` seconds (capped, plus up to ``jitter`` of
it at random) by a timer, so a worker never sleeps on a backoff and a channel that
keeps failing cannot starve the others. Every outcome is reported through
``on_update`` (the history) and the ``alerter_*`` metrics; nothing is raised to the
caller.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from alerter import metrics
from alerter.channels import Channel, DeliveryError
from alerter.engine import DeliveryJob
from mlops_platform.logs import get_logger

log = get_logger(__name__)

UpdateCallback = Callable[..., None]  # (job, *, state, attempts, error) -> None
ReleaseCallback = Callable[[DeliveryJob], None]


@dataclass
class _Pending:
    job: DeliveryJob
    queued_at: float
    attempts: int = 0
    timer: asyncio.TimerHandle | None = None


class Dispatcher:
    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        on_update: UpdateCallback | None = None,
        on_finish: UpdateCallback | None = None,
        on_release: ReleaseCallback | None = None,
        workers: int = 8,
        max_attempts: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        jitter: float = 0.2,
        max_pending: int = 10_000,
        attempt_timeout_s: float = 60.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.channels = dict(channels)
        self.on_update = on_update
        # The delivery journal: told of final outcomes (on_finish) and of deliveries left
        # unfinished at shutdown (on_release), which stay pending for the next start.
        self.on_finish = on_finish
        self.on_release = on_release
        self.workers = workers
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.jitter = jitter
        self.max_pending = max_pending
        self.attempt_timeout_s = attempt_timeout_s
        self._rng = rng
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._queue: asyncio.Queue[int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._closing = False
        self._deadline: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._queue = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = [asyncio.create_task(self._worker(), name=f"delivery-{i}") for i in range(self.workers)]

    async def stop(self, timeout_s: float) -> None:
        """Stop accepting jobs; let pending deliveries finish for up to ``timeout_s`` seconds."""
        if self._loop is None:
            return
        self._closing = True
        self._deadline = self._loop.time() + timeout_s
        if self._pending:
            log.info("draining_deliveries", pending=len(self._pending), timeout_s=timeout_s)
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for key in list(self._pending):
            pending = self._pending[key]
            if pending.timer is not None:
                pending.timer.cancel()
            self._give_up(key, "abandoned at shutdown", final=False)
        self._loop = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ submitting

    def submit(self, jobs: Iterable[DeliveryJob]) -> None:
        """Queue deliveries; callable from any thread, never blocks."""
        batch = list(jobs)
        if not batch:
            return
        loop = self._loop
        if loop is None or self._closing:
            for job in batch:
                self._report(job, state="failed", attempts=0, error="alerter is shutting down")
                metrics.DELIVERY_FAILURES.labels(job.channel).inc()
                self._release(job)
            return
        if threading.get_ident() == self._loop_thread:
            self._enqueue(batch)
        else:
            loop.call_soon_threadsafe(self._enqueue, batch)

    def _enqueue(self, jobs: list[DeliveryJob]) -> None:
        assert self._queue is not None
        for job in jobs:
            if len(self._pending) >= self.max_pending:
                log.error("delivery_queue_full", channel=job.channel, alert_id=job.alert_id)
                self._report(job, state="failed", attempts=0, error="delivery queue full")
                metrics.DELIVERY_FAILURES.labels(job.channel).inc()
                self._finished(job, state="failed", attempts=0, error="delivery queue full")
                continue
            key = next(self._ids)
            self._pending[key] = _Pending(job=job, queued_at=time.monotonic())
            self._idle.clear()
            self._queue.put_nowait(key)
        metrics.PENDING_DELIVERIES.set(len(self._pending))

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered upwards."""
        delay = min(self.backoff_base_s * (2 ** (attempt - 1)), self.backoff_max_s)
        return delay * (1.0 + self.jitter * self._rng())

    # ------------------------------------------------------------------ working

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            key = await self._queue.get()
            try:
                if key in self._pending:
                    await self._attempt(key)
            except Exception as exc:  # a bug here must not kill the worker
                log.error("delivery_worker_error", error=repr(exc))
                self._give_up(key, f"internal error: {exc!r}")
            finally:
                self._queue.task_done()

    async def _attempt(self, key: int) -> None:
        pending = self._pending[key]
        pending.timer = None
        job = pending.job
        pending.attempts += 1
        channel = self.channels.get(job.channel)
        if channel is None:
            self._give_up(key, "channel not configured")
            return
        try:
            await asyncio.wait_for(channel.send(job.notification), self.attempt_timeout_s)
        except Exception as exc:
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            retryable = bool(getattr(exc, "retryable", True))
            self._retry_or_give_up(key, error, retryable)
            return
        metrics.DELIVERIES.labels(job.channel, job.notification.kind.value).inc()
        metrics.DELIVERY_LATENCY.labels(job.channel).observe(time.monotonic() - pending.queued_at)
        log.info(
            "alert_delivered",
            alert_id=job.alert_id,
            channel=job.channel,
            kind=job.notification.kind.value,
            attempts=pending.attempts,
        )
        self._report(job, state="delivered", attempts=pending.attempts, error=None)
        self._finished(job, state="delivered", attempts=pending.attempts, error=None)
        self._finish(key)

    def _retry_or_give_up(self, key: int, error: str, retryable: bool) -> None:
        assert self._loop is not None
        pending = self._pending[key]
        job = pending.job
        if not retryable or pending.attempts >= self.max_attempts:
            self._give_up(key, error)
            return
        delay = self.backoff_s(pending.attempts)
        if self._closing and self._deadline is not None and self._loop.time() + delay > self._deadline:
            self._give_up(key, f"{error} (no time left to retry before shutdown)", final=False)
            return
        metrics.DELIVERY_RETRIES.labels(job.channel).inc()
        log.warning(
            "delivery_retry_scheduled",
            alert_id=job.alert_id,
            channel=job.channel,
            attempt=pending.attempts,
            retry_in_s=round(delay, 3),
            error=error,
        )
        self._report(job, state="retrying", attempts=pending.attempts, error=error)
        pending.timer = self._loop.call_later(delay, self._requeue, key)

    def _requeue(self, key: int) -> None:
        if key in self._pending and self._queue is not None:
            self._queue.put_nowait(key)

    def _give_up(self, key: int, error: str, *, final: bool = True) -> None:
        """Stop trying; ``final=False`` (shutdown) leaves it to the journal's next start."""
        pending = self._pending.get(key)
        if pending is None:
            return
        job = pending.job
        metrics.DELIVERY_FAILURES.labels(job.channel).inc()
        log.error(
            "delivery_failed",
            alert_id=job.alert_id,
            channel=job.channel,
            attempts=pending.attempts,
            error=error,
        )
        self._report(job, state="failed", attempts=pending.attempts, error=error)
        if final:
            self._finished(job, state="failed", attempts=pending.attempts, error=error)
        else:
            self._release(job)
        self._finish(key)

    def _finished(self, job: DeliveryJob, *, state: str, attempts: int, error: str | None) -> None:
        if self.on_finish is None:
            return
        try:
            self.on_finish(job, state=state, attempts=attempts, error=error)
        except Exception as exc:
            log.warning("delivery_finish_hook_failed", error=repr(exc))

    def _release(self, job: DeliveryJob) -> None:
        if self.on_release is None:
            return
        try:
            self.on_release(job)
        except Exception as exc:
            log.warning("delivery_release_hook_failed", error=repr(exc))

    def _finish(self, key: int) -> None:
        self._pending.pop(key, None)
        metrics.PENDING_DELIVERIES.set(len(self._pending))
        if not self._pending:
            self._idle.set()

    def _report(self, job: DeliveryJob, *, state: str, attempts: int, error: str | None) -> None:
        if self.on_update is None:
            return
        try:
            self.on_update(job, state=state, attempts=attempts, error=error)
        except Exception as exc:
            log.warning("delivery_update_failed", error=repr(exc))
