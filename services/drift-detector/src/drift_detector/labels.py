"""Joining predictions with their delayed labels, in bounded memory.

Labels (``prediction.feedback``) arrive minutes after the prediction, sometimes never,
and occasionally before it (another partition, a replay). The joiner keeps:

* **pending** predictions waiting for a label, in arrival order, each expiring
  ``ttl_ms`` after its event time; beyond ``max_pending`` the oldest is evicted;
* **orphan** labels that arrived first, with the same TTL and their own bound;
* the ids of recently joined transactions, so a duplicate label (at-least-once
  delivery) is recognised instead of waiting as an orphan.

Expiry runs on event time (the newest event time seen), so a replay joins exactly as
the live run did.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from drift_detector.snapshot import pack_array, unpack_array


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    model_version: str
    ab_arm: str
    probability: float
    time_ms: int


@dataclass(frozen=True)
class Joined:
    """A labelled prediction."""

    transaction_id: str
    prediction: PendingPrediction
    is_fraud: bool
    label_time_ms: int


@dataclass
class JoinStats:
    predictions: int = 0
    labels: int = 0
    joined: int = 0
    expired: int = 0
    evicted: int = 0
    orphans_expired: int = 0
    orphans_evicted: int = 0
    duplicate_labels: int = 0
    duplicate_predictions: int = 0


class LabelJoiner:
    def __init__(
        self, ttl_ms: int, max_pending: int, max_orphans: int, remember_joined: int = 100_000
    ) -> None:
        self.ttl_ms = ttl_ms
        self.max_pending = max_pending
        self.max_orphans = max_orphans
        self.remember_joined = remember_joined
        self.pending: OrderedDict[str, PendingPrediction] = OrderedDict()
        self.orphans: OrderedDict[str, tuple[bool, int]] = OrderedDict()
        self.recently_joined: OrderedDict[str, None] = OrderedDict()
        self.clock_ms = 0
        self.stats = JoinStats()

    def add_prediction(self, transaction_id: str, prediction: PendingPrediction) -> Joined | None:
        """Register a prediction; returns the join if its label was already waiting."""
        self.stats.predictions += 1
        self._tick(prediction.time_ms)
        orphan = self.orphans.pop(transaction_id, None)
        if orphan is not None:
            return self._joined(transaction_id, prediction, orphan[0], orphan[1])
        if transaction_id in self.pending or transaction_id in self.recently_joined:
            # Redelivery of a prediction: keep the first one (and its place in the TTL order).
            self.stats.duplicate_predictions += 1
            return None
        self.pending[transaction_id] = prediction
        while len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
            self.stats.evicted += 1
        return None

    def add_label(self, transaction_id: str, is_fraud: bool, time_ms: int) -> Joined | None:
        """Register a label; returns the join if its prediction is pending."""
        self.stats.labels += 1
        self._tick(time_ms)
        prediction = self.pending.pop(transaction_id, None)
        if prediction is not None:
            return self._joined(transaction_id, prediction, is_fraud, time_ms)
        if transaction_id in self.recently_joined:
            self.stats.duplicate_labels += 1
            return None
        self.orphans[transaction_id] = (is_fraud, time_ms)
        while len(self.orphans) > self.max_orphans:
            self.orphans.popitem(last=False)
            self.stats.orphans_evicted += 1
        return None

    def expire(self) -> int:
        """Drop predictions and orphan labels older than the TTL; returns how many predictions expired."""
        horizon = self.clock_ms - self.ttl_ms
        expired = 0
        # Arrival order is close to event-time order; stop at the first young entry.
        while self.pending:
            txn, prediction = next(iter(self.pending.items()))
            if prediction.time_ms >= horizon:
                break
            del self.pending[txn]
            expired += 1
        while self.orphans:
            txn, (_, time_ms) = next(iter(self.orphans.items()))
            if time_ms >= horizon:
                break
            del self.orphans[txn]
            self.stats.orphans_expired += 1
        self.stats.expired += expired
        return expired

    def to_state(self) -> dict[str, Any]:
        """Pending predictions, orphan labels, recent joins (in their order), clock and counters."""
        pending = list(self.pending.items())
        orphans = list(self.orphans.items())
        return {
            "pending": {
                "txn": [t for t, _ in pending],
                "version": [p.model_version for _, p in pending],
                "arm": [p.ab_arm for _, p in pending],
                "prob": pack_array(np.array([p.probability for _, p in pending], dtype=np.float64)),
                "time": pack_array(np.array([p.time_ms for _, p in pending], dtype=np.int64)),
            },
            "orphans": {
                "txn": [t for t, _ in orphans],
                "is_fraud": [bool(f) for _, (f, _) in orphans],
                "time": pack_array(np.array([t for _, (_, t) in orphans], dtype=np.int64)),
            },
            "recently_joined": list(self.recently_joined),
            "clock_ms": self.clock_ms,
            "stats": asdict(self.stats),
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the join state by a :meth:`to_state` document (bounds are the settings')."""
        p = state["pending"]
        probs, times = unpack_array(p["prob"]).tolist(), unpack_array(p["time"]).tolist()
        self.pending = OrderedDict(
            (txn, PendingPrediction(str(v), str(a), float(pr), int(t)))
            for txn, v, a, pr, t in zip(p["txn"], p["version"], p["arm"], probs, times, strict=True)
        )
        o = state["orphans"]
        self.orphans = OrderedDict(
            (txn, (bool(f), int(t)))
            for txn, f, t in zip(o["txn"], o["is_fraud"], unpack_array(o["time"]).tolist(), strict=True)
        )
        self.recently_joined = OrderedDict((txn, None) for txn in state["recently_joined"])
        self.clock_ms = int(state["clock_ms"])
        self.stats = JoinStats(**state["stats"])

    def _tick(self, time_ms: int) -> None:
        self.clock_ms = max(self.clock_ms, time_ms)

    def _joined(self, txn: str, prediction: PendingPrediction, is_fraud: bool, label_ms: int) -> Joined:
        self.stats.joined += 1
        self.recently_joined[txn] = None
        while len(self.recently_joined) > self.remember_joined:
            self.recently_joined.popitem(last=False)
        return Joined(txn, prediction, is_fraud, label_ms)
