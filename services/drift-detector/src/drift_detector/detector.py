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

**Scaled out** (``DRIFT_SCALE_OUT``, :mod:`drift_detector.scaleout`): the predictions are
binned into one partial per handler call, emitted into the same transaction, instead of
feeding windows of this instance's own; the merger judges the summed windows. Quality,
target drift and A/B verdicts are published only by the owner of partition 0.

**Exactly once, with checkpointed state.** The detector is the
:class:`~mlops_platform.kafka.Stateful` owner of its handler: the exactly-once stream
loop commits :meth:`DriftDetector.snapshot` (windows, alert state machines, pending
label joins, quality samples, A/B bookkeeping) with the events and the input offsets in
one transaction, restores the last committed snapshot when a transaction aborts (the
records it held are consumed again, so nothing is counted twice), and restores the
latest one at start, so a restart resumes where the last commit left off. The reference
is not in the snapshot, only its version: it is loaded from MLflow again, and until it
is back (:meth:`~drift_detector.drift_evaluator.DriftEvaluator.awaiting_reference`)
the handler asks the loop to retry rather than feed windows that cannot be evaluated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from drift_detector import metrics as m
from drift_detector import snapshot
from drift_detector.ab_evaluator import ABEvaluator
from drift_detector.config import Settings
from drift_detector.drift_evaluator import DriftEvaluator
from drift_detector.events import SOURCE, Emitter, check_prediction, event_ms
from drift_detector.merge import MergeHandler
from drift_detector.models import ModelInfoCache
from drift_detector.quality_evaluator import QualityEvaluator
from drift_detector.reports import ReportWorker
from drift_detector.scaleout import PartialCollector
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import Outbox, Output, Record, RetryableError
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
        self.reports = reports
        self.clock = clock
        # The stream thread, the registry's lookup thread and HTTP views share the evaluators.
        self.lock = threading.RLock()
        self.emitter = Emitter()
        #: scale-out only (set by the service): the partial of each handler call, the number of
        #: partitions of the predictions topic, whether this instance owns its partition 0, the merger
        self.partials: PartialCollector | None = None
        self.partition_count: Callable[[], int] = lambda: 1
        self.owns_first_partition: Callable[[], bool] = lambda: True
        self.merge: MergeHandler | None = None
        self._partial_cause: dict[str, Any] | None = None
        self._build()

    def _build(self) -> None:
        """Fresh evaluators (the initial state)."""
        settings, registry = self.settings, self.registry
        self.drift = DriftEvaluator(
            settings, registry=registry, emitter=self.emitter, reports=self.reports, clock=self.clock
        )
        self.quality = QualityEvaluator(settings, registry=registry, emitter=self.emitter)
        self.quality.on_joined = self.drift.take_label
        self.ab = ABEvaluator(settings, registry=registry, quality=self.quality, emitter=self.emitter)
        self.ignored_predictions = 0

    # ------------------------------------------------------------------ state

    def snapshot(self) -> bytes:
        """The whole stream state, plainly encoded (:mod:`drift_detector.snapshot`): the loop commits it."""
        with self.lock:
            return snapshot.dumps(
                {
                    "drift": self.drift.to_state(),
                    "quality": self.quality.to_state(),
                    "ab": self.ab.to_state(),
                    "ignored_predictions": self.ignored_predictions,
                }
            )

    def restore(self, payload: bytes | None) -> None:
        """Go back to a snapshot (``None``: the initial state); the reference is loaded again."""
        with self.lock:
            state = None if payload is None else snapshot.loads(payload)
            wait_until = self.drift.reference_wait_until
            self.emitter.take()  # events of records that are consumed again
            self._build()
            if state is None:
                return
            self.drift.from_state(state["drift"])
            self.drift.reference_wait_until = wait_until  # one wait per process, not per abort
            self.quality.from_state(state["quality"])
            self.ab.from_state(state["ab"])
            self.ignored_predictions = int(state["ignored_predictions"])
            self.drift.sync_registry()  # the reference may still be cached (an abort, not a restart)
            log.info(
                "state_restored",
                reference_version=self.drift.restored_reference or self.drift.reference_version,
                rows_seen=self.drift.tracks["data"].window.total,
                pending_labels=len(self.quality.joiner.pending),
            )

    # ------------------------------------------------------------------ input

    def handle(self, records: list[Record], outbox: Outbox) -> None:
        """The stream loop's handler: route the records, hand their events to the outbox."""
        # Before any state changes: a bad prediction fails the batch, and the loop dead-letters it alone.
        for record in records:
            if record.contract is Topic.PREDICTION_COMPLETED:
                check_prediction(record.value)
        with self.lock:
            self.emitter.take()  # whatever a record that failed half-way left behind
            if self.partials is not None:
                self.partials.begin()
                self._partial_cause = None
            self.drift.sync_registry()
            if self.drift.awaiting_reference():
                raise RetryableError(
                    f"waiting for reference v{self.drift.restored_reference} of the restored windows"
                )
            run: list[Record] = []
            for record in records:
                if record.contract is Topic.PREDICTION_COMPLETED:
                    run.append(record)
                    continue
                self._predictions(run, outbox)
                run = []
                self._route(record)
                self._done([record], outbox)
            self._predictions(run, outbox)
            self.quality.expire()
            if self.partials is not None:
                self._send_partial(outbox)

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
        if self.partials is not None:
            for record in records:  # every prediction moves its partition's watermark
                time_ms = event_ms(record.envelope, record.timestamp_ms)
                self.partials.mark(record.partition, record.offset, time_ms)
        if ours:
            times = np.array([event_ms(r.envelope, r.timestamp_ms) for r in ours], dtype=np.int64)
            if self.partials is None:
                self.drift.take_predictions(ours, times)
            else:
                if self.drift.reference_version is None:
                    raise RetryableError("no reference yet to bin the predictions with")
                self.drift.count_predictions(ours, times, self.partials)
                self._partial_cause = ours[-1].envelope
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
        """Hand the events made for ``records`` to the outbox (committed with the loop's transaction).

        Scaled out, each instance judges quality, target drift and A/B on the labels of its
        own partitions (a sample of the traffic: records are spread by transaction id); only
        the owner of partition 0 publishes those verdicts, so they are not repeated per instance.
        """
        outputs = self.emitter.take()
        if outputs and self.partials is not None and not self.owns_first_partition():
            m.QUALITY_MUTED.inc(len(outputs))
            return
        outbox.emit_all(outputs)

    def _send_partial(self, outbox: Outbox) -> None:
        """Scale-out: the bin counts of this call's predictions, in the same transaction as their offsets."""
        assert self.partials is not None
        payload = self.partials.payload(
            model_name=self.settings.model_name,
            instance_id=self.settings.instance_id,
            reference_version=self.drift.reference_version or "",
            partition_count=self.partition_count(),
        )
        if payload is None:
            return
        event = make_event(SOURCE, payload, cause=self._partial_cause)
        outbox.emit_all([Output(self.settings.partials, event)])
        m.PARTIALS_SENT.inc()

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
        """``GET /drift``; scaled out, with what this instance sent and the merged windows it holds."""
        with self.lock:
            view = {**self.drift.view(), "ignored_predictions": self.ignored_predictions}
            if self.partials is not None:
                view["scale_out"] = {
                    "partials_sent": self.partials.partials_sent,
                    "rows_sent": self.partials.rows_sent,
                }
        if self.merge is not None:
            view["merge"] = self.merge.view()
        return view

    def quality_view(self) -> dict[str, Any]:
        with self.lock:
            return self.quality.view()

    def evaluations_view(self) -> dict[str, Any]:
        with self.lock:
            return self.ab.view()
