"""The stream handler: routes each record by its contract to the evaluators, their events to the outbox.

* ``prediction.completed`` (of the monitored model) — the
  :class:`~drift_detector.drift_evaluator.DriftEvaluator` feeds its windows; the
  :class:`~drift_detector.quality_evaluator.QualityEvaluator` waits for its label.
* ``prediction.feedback`` — the quality evaluator joins it with its prediction.
* whenever a join makes a version/arm's quality evaluation due, the
  :class:`~drift_detector.ab_evaluator.ABEvaluator` checks whether the current
  champion/challenger pair can be compared.
* ``model.deployed`` — the drift evaluator asks the registry which version is ``@champion``
  now; the A/B evaluator remembers the deployment as the cause of later verdicts.
* ``system.actions`` — a succeeded ``monitor`` action shrinks the drift window for a while.

Consecutive predictions are handed over as one run (windows do not depend on how the
loop batches them); other records one at a time, in stream order.

**At least once.** The loop rewinds and replays a batch whose events were not
acknowledged, and replays a failed batch record by record. Records at or below the last
processed offset of their partition are skipped, so no prediction or label is counted
twice; the events made for them are kept until a delivery confirms them, and emitted
again with the replay. The handler therefore delivers its outbox itself, at the end of
each call: only then does it know that those events are stored and can be forgotten.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from drift_detector.ab_evaluator import ABEvaluator
from drift_detector.config import Settings
from drift_detector.drift_evaluator import DriftEvaluator
from drift_detector.events import Emitter, event_ms
from drift_detector.models import ModelInfoCache
from drift_detector.quality_evaluator import QualityEvaluator
from drift_detector.reports import ReportWorker
from mlops_platform.contracts import Topic
from mlops_platform.kafka import Outbox, Output, Record
from mlops_platform.logs import get_logger

log = get_logger(__name__)


class DriftDetector:
    """Dispatcher of the drift detector's stream: one lock, three evaluators, one emitter."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelInfoCache,
        reports: ReportWorker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        # The stream thread, the registry's lookup thread and HTTP views share the evaluators.
        self.lock = threading.RLock()
        self.emitter = Emitter()
        self.drift = DriftEvaluator(
            settings, registry=registry, emitter=self.emitter, reports=reports, clock=clock
        )
        self.quality = QualityEvaluator(settings, registry=registry, emitter=self.emitter)
        self.quality.on_joined = self.drift.take_label
        self.ab = ABEvaluator(settings, registry=registry, quality=self.quality, emitter=self.emitter)
        self.ignored_predictions = 0
        self._processed: dict[tuple[str, int], int] = {}
        self._unconfirmed: list[Output] = []

    # ------------------------------------------------------------------ input

    def handle(self, records: list[Record], outbox: Outbox) -> None:
        """The stream loop's handler: process the records not seen yet, deliver their events."""
        with self.lock:
            outbox.emit_all(self._unconfirmed)  # their records are skipped below
            self.emitter.take()  # whatever a record that failed half-way left behind
            self.drift.sync_registry()
            run: list[Record] = []
            for record in records:
                if not self._first_time(record):
                    continue
                if record.contract is Topic.PREDICTION_COMPLETED:
                    run.append(record)
                    continue
                self._predictions(run, outbox)
                run = []
                self._route(record)
                self._done([record], outbox)
            self._predictions(run, outbox)
            self.quality.expire()
            outbox.deliver()
            self._unconfirmed.clear()

    def _route(self, record: Record) -> None:
        contract = record.contract
        if contract is Topic.PREDICTION_FEEDBACK:
            if self.quality.take_label(record):
                self.ab.evaluate(record.envelope)
        elif contract is Topic.MODEL_DEPLOYED:
            self._on_deployed(record)
        elif contract is Topic.SYSTEM_ACTIONS:
            self.drift.on_action(record)

    def _predictions(self, records: Sequence[Record], outbox: Outbox) -> None:
        if not records:
            return
        ours = [r for r in records if r.value.get("model_name") == self.settings.model_name]
        self.ignored_predictions += len(records) - len(ours)
        if ours:
            times = np.array([event_ms(r.envelope, r.timestamp_ms) for r in ours], dtype=np.int64)
            self.drift.take_predictions(ours, times)
            for record, time_ms in zip(ours, times.tolist(), strict=True):
                if self.quality.take_prediction(record, time_ms):
                    self.ab.evaluate(record.envelope)
        self._done(records, outbox)

    def _on_deployed(self, record: Record) -> None:
        value = record.value
        if value.get("model_name") != self.settings.model_name:
            return
        log.info(
            "model_deployed_seen",
            alias=value.get("alias"),
            version=value.get("version"),
            action=value.get("action"),
        )
        self.ab.on_deployed(record)
        self.drift.on_deployed(record)

    def _done(self, records: Sequence[Record], outbox: Outbox) -> None:
        """Hand the records' events to the outbox and mark the records processed.

        Marked as soon as handled: if a later record fails, the loop replays the batch one
        record at a time, and the ones already counted are skipped (their events stay in
        ``_unconfirmed`` until a delivery confirms them).
        """
        outputs = self.emitter.take()
        outbox.emit_all(outputs)
        self._unconfirmed.extend(outputs)
        for record in records:
            self._processed[(record.topic, record.partition)] = record.offset

    def _first_time(self, record: Record) -> bool:
        last = self._processed.get((record.topic, record.partition))
        return last is None or record.offset > last

    # ------------------------------------------------------------------ registry

    def sync(self) -> None:
        """Pick up registry results now (called by the lookup thread, so no traffic is needed)."""
        with self.lock:
            self.drift.sync_registry()

    @property
    def reference_version(self) -> str | None:
        """The champion version whose reference the drift windows are compared with."""
        return self.drift.reference_version

    # ------------------------------------------------------------------ HTTP views

    def drift_view(self) -> dict[str, Any]:
        with self.lock:
            return {**self.drift.view(), "ignored_predictions": self.ignored_predictions}

    def quality_view(self) -> dict[str, Any]:
        with self.lock:
            return self.quality.view()

    def evaluations_view(self) -> dict[str, Any]:
        with self.lock:
            return self.ab.view()
