"""What the predictor processed per window, published as ``data.processed``.

The scoring handler adds each scored batch to the open :class:`ProcessedWindow`; a
:class:`ProcessedReporter` thread closes the window on its boundary (windows are aligned
to multiples of their length in UTC, so the windows of several instances line up) and
publishes the summary with the service's shared producer. A window in which nothing
arrived is still published (``events`` 0): silence is a fact too.

The counts are of scoring work done: a batch whose transaction is aborted and then
scored again (only after a broker or coordinator failure) counts twice.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_platform.contracts import make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics
from predictor.config import Settings
from predictor.risk import RISK_LEVELS

if TYPE_CHECKING:
    from predictor.scoring import ScoredBatch

log = get_logger(__name__)


@dataclass
class _Arm:
    events: int = 0
    probability_sum: float = 0.0


@dataclass
class _Totals:
    events: int = 0
    probability_sum: float = 0.0
    by_model: dict[tuple[str, str], _Arm] = field(default_factory=dict)
    risk_levels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RISK_LEVELS, 0))
    invalid: int = 0
    latencies_ms: list[np.ndarray] = field(default_factory=list)


def window_start(at: datetime, length_s: float) -> datetime:
    """Start of the aligned window of ``length_s`` seconds containing ``at``."""
    epoch_s = at.timestamp()
    return datetime.fromtimestamp(math.floor(epoch_s / length_s) * length_s, UTC)


class ProcessedWindow:
    """Thread-safe totals of the open window (the scoring thread adds, the reporter closes)."""

    def __init__(self, started: datetime) -> None:
        self._lock = threading.Lock()
        self._totals = _Totals()
        self.started = started

    def add(self, batch: ScoredBatch, latencies_ms: np.ndarray) -> None:
        """Account for one scored batch and the request-to-score latency of each of its rows."""
        if len(batch) == 0:
            return
        probabilities = np.asarray(batch.probabilities, dtype=np.float64)
        # Grouped outside the lock: the scoring thread holds it only for the additions.
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (model, arm) in enumerate(zip(batch.models, batch.arms, strict=True)):
            groups.setdefault((model.version, arm), []).append(i)
        sums = {key: float(probabilities[rows].sum()) for key, rows in groups.items()}
        levels: dict[str, int] = {}
        for level in batch.levels:
            levels[level] = levels.get(level, 0) + 1
        with self._lock:
            totals = self._totals
            totals.events += len(batch)
            totals.probability_sum += float(probabilities.sum())
            for key, rows in groups.items():
                entry = totals.by_model.setdefault(key, _Arm())
                entry.events += len(rows)
                entry.probability_sum += sums[key]
            for level, n in levels.items():
                totals.risk_levels[level] = totals.risk_levels.get(level, 0) + n
            totals.latencies_ms.append(np.asarray(latencies_ms, dtype=np.float64))

    def add_invalid(self, count: int = 1) -> None:
        """Requests refused as unscorable."""
        with self._lock:
            self._totals.invalid += count

    def close(self, ended: datetime, *, dead_letters: int = 0) -> dict[str, Any]:
        """The ``data.processed`` payload of the window ending at ``ended``; a new window opens there."""
        with self._lock:
            totals, self._totals = self._totals, _Totals()
            started, self.started = self.started, ended
        latencies = np.concatenate(totals.latencies_ms) if totals.latencies_ms else np.empty(0)
        p50, p99 = (
            (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)))
            if latencies.size
            else (None, None)
        )
        return {
            "window_start": started,
            "window_end": ended,
            "events": totals.events,
            "by_model": [
                {
                    "model_version": version,
                    "ab_arm": arm,
                    "events": entry.events,
                    "fraud_probability_mean": entry.probability_sum / entry.events,
                }
                for (version, arm), entry in sorted(totals.by_model.items())
            ],
            "fraud_probability_mean": totals.probability_sum / totals.events if totals.events else None,
            "risk_levels": totals.risk_levels,
            "invalid": totals.invalid,
            "dead_letters": dead_letters,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
        }


def dead_letters_sent(service: str) -> int:
    """Records ``service`` sent to dead-letter topics since the process started (all reasons)."""
    total = 0.0
    for metric in platform_metrics().dead_letters.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("service") == service:
                total += sample.value
    return int(total)


class ProcessedReporter:
    """Closes the window on each boundary and publishes it as ``data.processed``."""

    def __init__(
        self,
        settings: Settings,
        producer: EventProducer,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.clock = clock
        self.length_s = settings.processed_window_s
        self.window = ProcessedWindow(clock())
        self._dead_letters_before = dead_letters_sent(settings.service_name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.length_s > 0

    def next_boundary(self) -> datetime:
        return window_start(self.window.started, self.length_s) + timedelta(seconds=self.length_s)

    def publish(self, ended: datetime) -> dict[str, Any]:
        """Close the open window at ``ended`` and publish it (best effort, like heartbeats)."""
        sent = dead_letters_sent(self.settings.service_name)
        summary = self.window.close(ended, dead_letters=sent - self._dead_letters_before)
        self._dead_letters_before = sent
        event = make_event(
            self.settings.service_name,
            {
                "service": self.settings.service_name,
                "instance_id": self.settings.instance_id,
                "model_name": self.settings.model_name,
                **summary,
            },
        )
        self.producer.produce(self.settings.processed, event)
        log.info(
            "window_processed",
            window_start=summary["window_start"].isoformat(),
            events=summary["events"],
            invalid=summary["invalid"],
        )
        return event

    def start(self) -> None:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="processed-windows", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and publish the partial window (the loops have stopped by now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            try:
                self.publish(self.clock())
            except Exception as exc:
                log.warning("processed_window_not_published", error=str(exc))

    def _run(self) -> None:
        while True:
            boundary = self.next_boundary()
            wait_s = (boundary - self.clock()).total_seconds()
            if self._stop.wait(max(wait_s, 0.0)):
                return
            try:
                self.publish(boundary)
            except Exception as exc:  # the next window is still counted and published
                log.warning("processed_window_not_published", error=str(exc))
