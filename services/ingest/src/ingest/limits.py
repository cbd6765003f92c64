"""Quotas and limits of the front door: per-key token buckets, idempotency keys, body size.

* :class:`RateLimiter` — one token bucket per API key name: ``rate`` records per second
  refill it up to ``burst``; a request costs one token per record. A request the bucket
  cannot pay for is answered 429 with ``Retry-After`` (seconds until it could be paid) and
  nothing is published, so a client that backs off and retries loses nothing.
* :class:`IdempotencyStore` — a request carrying ``Idempotency-Key`` is answered once:
  the same key (per API key) with the same body within the window gets the first answer
  again (same event ids) without publishing anything; the same key with another body is
  refused (422). Concurrent requests with one key wait for the first. Only accepted (202)
  answers are kept, so a request refused for a reason (429, 503, ...) may be retried with
  its key. The store is in-process and bounded (oldest entries go first): across several
  ingest instances, or beyond the window, the key no longer deduplicates.

The body size limit (413) is FastAPI's own ``max_body_size``, set by the platform's app
factory (``INGEST_MAX_BODY_BYTES`` for ingest): checked against ``Content-Length`` before
anything is read, and while a chunked body streams in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens; returns 0 when taken, else the seconds until they would be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        cost = min(cost, self.capacity)  # a request larger than the burst waits for a full bucket
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """A token bucket per API key name (bounded: idle buckets are full anyway and are dropped)."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic, max_keys: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, cost: float) -> float:
        """0 when ``key`` may spend ``cost`` now, else the seconds to wait (nothing is taken)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket.take(cost, now)

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait_s)))


class IdempotencyConflict(Exception):
    """The key was used with a different request."""


@dataclass
class _Entry:
    fingerprint: str
    expires: float
    done: asyncio.Future[dict[str, Any]] = field(repr=False)


def fingerprint(path: str, body: Any) -> str:
    """What makes two requests the same: the endpoint and the validated body (canonical JSON)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


class IdempotencyStore:
    """Accepted answers by (API key name, Idempotency-Key): ``window_s`` seconds, ``max_entries`` at most."""

    def __init__(self, window_s: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        """Drop settled entries past their window, and the oldest settled ones while over the bound."""
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.expires > now and len(self._entries) <= self.max_entries:
                break
            if entry.done.done():  # one still in flight is settled soon by its own request
                del self._entries[key]

    async def begin(self, owner: str, key: str, print_: str) -> dict[str, Any] | None:
        """The stored answer for this request, or ``None`` when the caller must do the work.

        After ``None`` the caller must call :meth:`finish` (with the answer) or :meth:`abandon`.
        Raises :class:`IdempotencyConflict` if the key was used with another request.
        """
        now = self.clock()
        self._expire(now)
        entry = self._entries.get((owner, key))
        while entry is not None:
            if entry.fingerprint != print_:
                raise IdempotencyConflict(key)
            try:
                return await asyncio.shield(entry.done)
            except _Abandoned:
                # The first attempt failed: this one may do the work (unless another started).
                entry = self._entries.get((owner, key))
        loop = asyncio.get_running_loop()
        self._entries[(owner, key)] = _Entry(print_, now + self.window_s, loop.create_future())
        return None

    def finish(self, owner: str, key: str, answer: dict[str, Any]) -> None:
        entry = self._entries.get((owner, key))
        if entry is not None and not entry.done.done():
            entry.expires = self.clock() + self.window_s
            entry.done.set_result(answer)
            self._entries.move_to_end((owner, key))

    def abandon(self, owner: str, key: str) -> None:
        """The request was not accepted: forget the key (waiting duplicates try again)."""
        entry = self._entries.pop((owner, key), None)
        if entry is not None and not entry.done.done():
            entry.done.set_exception(_Abandoned())
            entry.done.exception()  # retrieved: no "never retrieved" warning without waiters


class _Abandoned(Exception):
    pass
