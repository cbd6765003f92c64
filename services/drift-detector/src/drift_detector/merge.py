"""The scale-out merger: the stream handler that adds the instances' partials up and judges the windows.

Every instance runs this handler on its own exactly-once loop over the partials topic,
``model.deployed`` and ``system.actions`` (all of one partition) in the merge group;
the group gives those partitions to one member, which is the merger (see
:mod:`drift_detector.scaleout` for what is merged and when a bucket is complete). The
summed windows are judged by a :class:`~drift_detector.drift_evaluator.DriftEvaluator`
of its own (state machine, severity, monitor override), so an event reads like a single
instance's; it carries no Evidently report (the merger has counts, not rows).

**One state, whoever merges.** The merger's state (open buckets, watermarks, windows,
state machines) is checkpointed with the loop's transactions under one key shared by
every instance (``<merge group>/merger``), not the instance's own. When the merge
partitions move to another instance (the merger stopped, crashed or the group was
rebalanced), the new owner's state is older than the committed offsets it is handed;
the handler notices (the group's committed offsets are past the ones its state expects)
and loads the committed state before it takes a record, so nothing merged is lost or
added twice. Records older than the state (already in it) are skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drift_detector import metrics as m
from drift_detector import snapshot
from drift_detector.config import Settings
from drift_detector.drift_evaluator import DriftEvaluator
from drift_detector.events import Emitter
from drift_detector.models import ModelInfoCache
from drift_detector.scaleout import BucketWindow, ClosedBucket, Merger
from mlops_platform.contracts import Topic
from mlops_platform.kafka import Outbox, Record, RetryableError
from mlops_platform.logs import get_logger

log = get_logger(__name__)

#: Instance part of the merger's state key: the same for every instance (see the module docstring).
MERGER_STATE_INSTANCE = "merger"


class MergeHandler:
    """Handler and :class:`~mlops_platform.kafka.Stateful` owner of the merge loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelInfoCache,
        load_committed: Callable[[], bytes | None],
        committed_offsets: Callable[[Sequence[str]], dict[str, int]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        #: the latest committed merge state (read from the state topic)
        self.load_committed = load_committed
        #: the merge group's committed offsets of topics (partition 0; -1: none)
        self.committed_offsets = committed_offsets
        self.clock = clock
        #: wall clock of the partitions' silence (comparable between the instances' hosts)
        self.wall = wall
        self.lock = threading.RLock()
        self.emitter = Emitter()
        #: partials handled by this process (not state: tells which instance merges now)
        self.partials_handled = 0
        self.state_reloads = 0
        self._build()

    def _build(self) -> None:
        s = self.settings
        self.drift = DriftEvaluator(s, registry=self.registry, emitter=self.emitter, clock=self.clock)
        self.merger = Merger(
            round(s.merge_bucket_s * 1000),
            round(s.merge_lateness_s * 1000),
            s.merge_idle_s,
        )
        self.windows = {kind: BucketWindow() for kind in self.drift.tracks}
        self.windows_version: str | None = None
        self.offsets: dict[str, int] = {}  # topic -> next offset the state expects
        self.rows_dropped = 0

    # ------------------------------------------------------------------ state

    def snapshot(self) -> bytes:
        with self.lock:
            return snapshot.dumps(
                {
                    "offsets": dict(self.offsets),
                    "merger": self.merger.to_state(),
                    "windows": {kind: window.to_state() for kind, window in self.windows.items()},
                    "windows_version": self.windows_version,
                    "rows_dropped": self.rows_dropped,
                    "drift": self.drift.to_state(),
                }
            )

    def restore(self, payload: bytes | None) -> None:
        with self.lock:
            state = None if payload is None else snapshot.loads(payload)
            wait_until = self.drift.reference_wait_until
            self.emitter.take()
            self._build()
            if state is None:
                return
            self.offsets = {str(k): int(v) for k, v in state["offsets"].items()}
            self.merger.from_state(state["merger"])
            for kind, window_state in state["windows"].items():
                if kind in self.windows:
                    self.windows[kind].from_state(window_state)
            self.windows_version = state["windows_version"]
            self.rows_dropped = int(state["rows_dropped"])
            self.drift.from_state(state["drift"])
            self.drift.reference_wait_until = wait_until
            self.drift.sync_registry()
            self.merger.taken_over(self.wall())

    # ------------------------------------------------------------------ input

    def handle(self, records: list[Record], outbox: Outbox) -> None:
        """The merge loop's handler: continue from the committed state, add partials, judge windows."""
        with self.lock:
            self.emitter.take()
            records = self._after_state(records)
            self.drift.sync_registry()
            if self.drift.awaiting_reference():
                raise RetryableError(
                    f"waiting for reference v{self.drift.restored_reference} of the restored merged windows"
                )
            for record in records:
                self._route(record)
                self.offsets[record.topic] = record.offset + 1
            outbox.emit_all(self.emitter.take())

    def _after_state(self, records: Sequence[Record]) -> list[Record]:
        """The records the state has not taken yet; loads the committed state first when ours is stale.

        A batch normally starts right where the state stopped, or a little later: transaction
        markers and aborted records take offsets too. So when it does not, the group's
        committed offsets decide: the state is ours and current when no topic's committed
        offset is past it (it never is, since this instance commits the state with those
        offsets); otherwise another instance merged since, and its committed state is loaded.
        """
        first: dict[str, int] = {}
        for record in records:
            first.setdefault(record.topic, record.offset)
        moved = [t for t, offset in first.items() if self.offsets.get(t) != offset]
        if moved:
            committed = self.committed_offsets(moved)
            ahead = {t: o for t, o in committed.items() if o >= 0 and o > self.offsets.get(t, -1)}
            if ahead:
                self.restore(self.load_committed())
                self.state_reloads += 1
                log.info("merge_state_loaded", committed=ahead, offsets=self.offsets)
        return [r for r in records if r.offset >= self.offsets.get(r.topic, -1)]

    def _route(self, record: Record) -> None:
        contract = record.contract
        if contract is Topic.DRIFT_DETECTOR_PARTIALS:
            if record.value.get("model_name") != self.settings.model_name:
                return
            self.merger.add(record.value, self.wall())
            self.partials_handled += 1
            m.PARTIALS_MERGED.inc()
            self._close(record.envelope)
        elif contract is Topic.MODEL_DEPLOYED:
            if record.value.get("model_name") == self.settings.model_name:
                self.drift.on_deployed(record)
        elif contract is Topic.SYSTEM_ACTIONS:
            self.drift.on_action(record)

    def _close(self, cause: Mapping[str, Any]) -> None:
        """Judge the buckets the partial completed, while the merger's reference is the champion's.

        Around a promotion the instances switch bins one by one; holding the buckets open
        until this merger uses the new reference as well keeps their counts comparable.
        """
        version = self.drift.reference_version
        if version is None or version != self.registry.champion:
            return
        if self.windows_version != version:
            for window in self.windows.values():
                window.clear()
            self.windows_version = version
        for bucket in self.merger.close(self.wall()):
            self._take(bucket, version, cause)
        m.MERGE_OPEN_ROWS.set(self.merger.open_rows())

    def _take(self, bucket: ClosedBucket, version: str, cause: Mapping[str, Any]) -> None:
        track, window = self.drift.tracks.get(bucket.kind), self.windows.get(bucket.kind)
        if track is None or window is None:
            return
        binning = track.window.binning
        shape = None if binning is None else (len(binning.features), binning.max_bins)
        if bucket.version != version or bucket.counts.shape != shape:
            self.rows_dropped += bucket.rows if bucket.kind == "data" else 0
            m.MERGE_DROPPED.labels(bucket.kind).inc(bucket.rows)
            log.warning(
                "merge_bucket_dropped",
                drift_type=bucket.kind,
                bucket_version=bucket.version,
                reference_version=version,
                rows=bucket.rows,
            )
            return
        assert binning is not None
        self.drift.advance_clock(bucket.end_ms - 1)
        result = window.push(bucket, track.window.size, track.window.step, binning)
        if result is not None:
            self.drift.evaluate_window(bucket.kind, result, cause)

    # ------------------------------------------------------------------ registry and view

    def sync(self) -> None:
        """Pick up registry results (called by the lookup thread)."""
        with self.lock:
            self.drift.sync_registry()

    def view(self) -> dict[str, Any]:
        """The merged windows as this instance last held them (current only where ``merging``)."""
        with self.lock:
            merger = self.merger
            drift = self.drift.view()
            return {
                "partials_handled_here": self.partials_handled,
                "state_reloads": self.state_reloads,
                "partials_merged": merger.partials,
                "rows_added": dict(merger.rows_added),
                "rows_late": merger.rows_late,
                "rows_dropped": self.rows_dropped,
                "open_buckets": len(merger.open),
                "open_rows": merger.open_rows(),
                "closed_until": merger.closed_until,
                "partition_count": merger.partition_count,
                "watermarks": {str(p): t for p, t in sorted(merger.watermarks.items())},
                "windows": {
                    kind: {"buckets": len(w.buckets), "rows": w.total, "rows_seen": w.rows_seen}
                    for kind, w in self.windows.items()
                },
                "reference_version": drift["reference_version"],
                "window": {k: v for k, v in drift["window"].items() if k != "rows_seen"},
                "tracks": drift["tracks"],
            }
