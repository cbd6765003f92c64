"""Scale-out: each instance counts, one instance adds up (``DRIFT_SCALE_OUT``).

Several instances share the predictions and labels by partition. A window's PSI needs
the histogram of *all* its predictions, and histograms are additive: the counts of two
disjoint sets of rows, binned with the same reference bins, sum to the counts of their
union, so PSI of the summed counts is exactly the PSI one instance would compute over all
the rows.

* **Instances** (:class:`PartialCollector`): every handler call bins the monitored
  model's predictions with the serving reference's bins and emits one *partial* on the
  partials topic, in the same exactly-once transaction as the input offsets: the counts
  per drift type and event-time bucket (``bucket_ms``, aligned on the epoch so buckets
  are the same on every instance), the rows, and per partition the offsets covered and
  the latest event time seen (its watermark). Nothing waits in an instance: a partition
  that moves to another instance (scaling up or down) leaves no counts behind, and every
  prediction is in exactly one committed partial.
* **The merger** (:class:`Merger`, :class:`BucketWindow`): the one member of the merge
  group that owns the partials topic's single partition adds the partials up per
  bucket. A bucket is *complete* once every partition of the predictions topic passed
  its end by ``lateness_ms`` (their predictions arrive in event-time order per partition,
  so nothing of the bucket is still to come). An instance that lags behind (a backlog)
  holds the buckets back until it catches up; only a partition *silent* for
  ``idle_ms`` of wall-clock time (no traffic on it, or its instance gone and the group
  not yet rebalanced) is no longer waited for. A prediction arriving for a closed
  bucket is counted in the oldest open one: misplaced by a bucket, never lost or
  counted twice. Complete buckets go into a window
  per drift type: the fewest latest buckets holding at least ``window_size``
  predictions, evaluated once ``window_step`` new predictions came in.

Counts are kept per reference version: only counts binned with the merger's reference
are added into its windows (around a promotion, an instance still on the old reference
sends counts that no longer compare; they are counted as dropped).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drift_detector.psi import Binning, psi_from_counts
from drift_detector.snapshot import SnapshotError, pack_array, unpack_array
from drift_detector.windows import WindowResult


def bucket_start(time_ms: int, bucket_ms: int) -> int:
    """Start of the event-time bucket holding ``time_ms`` (buckets are aligned on the epoch)."""
    return (int(time_ms) // bucket_ms) * bucket_ms


def sparse_counts(counts: np.ndarray) -> tuple[list[int], list[int]]:
    """``(cells, counts)``: flat indices of the non-zero entries of a count matrix, and their counts."""
    flat = np.asarray(counts, dtype=np.int64).ravel()
    cells = np.flatnonzero(flat)
    return cells.tolist(), flat[cells].tolist()


def dense_counts(cells: Sequence[int], counts: Sequence[int], n_features: int, width: int) -> np.ndarray:
    """The ``[n_features, width]`` matrix of :func:`sparse_counts`' output (ValueError: it does not fit)."""
    if len(cells) != len(counts):
        raise ValueError(f"{len(cells)} cells but {len(counts)} counts")
    out = np.zeros(n_features * width, dtype=np.int64)
    index = np.asarray(cells, dtype=np.int64)
    values = np.asarray(counts, dtype=np.int64)
    if index.size:
        if index.min() < 0 or index.max() >= out.size:
            raise ValueError(f"cell outside a {n_features}x{width} count matrix")
        if values.min() < 0:
            raise ValueError("negative count")
        np.add.at(out, index, values)
    return out.reshape(n_features, width)


# --------------------------------------------------------------------------- instances


class PartialCollector:
    """What one handler call of an instance adds to the merged windows: one partial's payload.

    :meth:`begin` at the start of each call, :meth:`add` for the binned rows of a drift
    type, :meth:`mark` for every prediction record (watermarks and offsets, the monitored
    model's or not), :meth:`payload` at the end (None when the call saw no predictions).
    """

    def __init__(self, bucket_ms: int) -> None:
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        self.bucket_ms = bucket_ms
        self.partials_sent = 0
        self.rows_sent = 0
        self.begin()

    def begin(self) -> None:
        self._buckets: dict[tuple[str, int], list[Any]] = {}  # (kind, start) -> [rows, counts]
        self._partitions: dict[int, dict[str, int]] = {}

    def add(self, kind: str, binning: Binning, values: np.ndarray, times: np.ndarray) -> None:
        """Bin ``values`` (rows of ``binning``'s columns, event times ``times``) into their buckets."""
        if len(values) == 0:
            return
        bins = binning.assign(values)
        starts = (np.asarray(times, dtype=np.int64) // self.bucket_ms) * self.bucket_ms
        for start in np.unique(starts):
            mask = starts == start
            counts = binning.count_matrix(bins[mask])
            entry = self._buckets.setdefault((kind, int(start)), [0, np.zeros_like(counts)])
            entry[0] += int(mask.sum())
            entry[1] += counts

    def mark(self, partition: int, offset: int, time_ms: int) -> None:
        """A prediction record of ``partition`` was taken: its offset and event time."""
        mark = self._partitions.get(partition)
        if mark is None:
            self._partitions[partition] = {
                "partition": partition,
                "rows": 1,
                "first_offset": offset,
                "last_offset": offset,
                "watermark_ms": time_ms,
            }
            return
        mark["rows"] += 1
        mark["first_offset"] = min(mark["first_offset"], offset)
        mark["last_offset"] = max(mark["last_offset"], offset)
        mark["watermark_ms"] = max(mark["watermark_ms"], time_ms)

    def payload(
        self, *, model_name: str, instance_id: str, reference_version: str, partition_count: int
    ) -> dict[str, Any] | None:
        """The partial of this call (the ``drift-detector-partials`` contract, without the envelope)."""
        if not self._partitions:
            return None
        buckets = []
        for (kind, start), (rows, counts) in sorted(self._buckets.items()):
            cells, values = sparse_counts(counts)
            buckets.append(
                {
                    "drift_type": kind,
                    "start_ms": start,
                    "rows": rows,
                    "n_features": int(counts.shape[0]),
                    "width": int(counts.shape[1]),
                    "cells": cells,
                    "counts": values,
                }
            )
        self.partials_sent += 1
        self.rows_sent += sum(b["rows"] for b in buckets if b["drift_type"] == "data")
        return {
            "model_name": model_name,
            "instance_id": instance_id,
            "reference_version": reference_version,
            "partition_count": partition_count,
            "bucket_ms": self.bucket_ms,
            "partitions": [self._partitions[p] for p in sorted(self._partitions)],
            "buckets": buckets,
        }


# --------------------------------------------------------------------------- merger


@dataclass
class ClosedBucket:
    """A complete bucket: the summed counts of every instance's predictions in it."""

    kind: str
    start_ms: int
    end_ms: int  # exclusive
    version: str
    rows: int
    counts: np.ndarray


class Merger:
    """Partials added up per (drift type, bucket, reference version); complete buckets handed out in order.

    ``now`` arguments are wall-clock seconds (when a partition was last heard of).
    """

    def __init__(self, bucket_ms: int, lateness_ms: int, idle_s: float) -> None:
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        self.bucket_ms = bucket_ms
        self.lateness_ms = lateness_ms
        self.idle_s = idle_s
        self.open: dict[tuple[str, int, str], list[Any]] = {}  # -> [rows, counts]
        self.watermarks: dict[int, int] = {}
        self.heard: dict[int, float] = {}  # partition -> wall clock of its latest partial
        self.first_heard: float | None = None
        self.partition_count = 0
        #: every bucket ending at or before this time is closed (None: none yet)
        self.closed_until: int | None = None
        self.partials = 0
        self.rows_added: dict[str, int] = {}
        self.rows_late = 0

    def add(self, partial: Mapping[str, Any], now: float) -> None:
        """Add one partial (a decoded ``drift-detector-partials`` value); ValueError when it does not fit."""
        if int(partial["bucket_ms"]) != self.bucket_ms:
            raise ValueError(
                f"partial of instance {partial.get('instance_id')!r} uses {partial['bucket_ms']} ms buckets,"
                f" this merger {self.bucket_ms} ms: every instance needs the same DRIFT_MERGE_BUCKET_S"
            )
        version = str(partial["reference_version"])
        buckets = [
            (
                str(b["drift_type"]),
                int(b["start_ms"]),
                int(b["rows"]),
                dense_counts(b["cells"], b["counts"], int(b["n_features"]), int(b["width"])),
            )
            for b in partial["buckets"]
        ]
        for kind, start, rows, counts in buckets:
            if self.closed_until is not None and start < self.closed_until:
                start = self.closed_until  # late: the oldest bucket still open
                self.rows_late += rows
            entry = self.open.get((kind, start, version))
            if entry is None:
                self.open[(kind, start, version)] = [rows, counts]
            elif entry[1].shape != counts.shape:
                raise ValueError(f"{kind} counts of shape {counts.shape} do not add to {entry[1].shape}")
            else:
                entry[0] += rows
                entry[1] += counts
            self.rows_added[kind] = self.rows_added.get(kind, 0) + rows
        for mark in partial["partitions"]:
            partition, time_ms = int(mark["partition"]), int(mark["watermark_ms"])
            self.watermarks[partition] = max(self.watermarks.get(partition, time_ms), time_ms)
            self.heard[partition] = now
        if self.first_heard is None:
            self.first_heard = now
        self.partition_count = max(self.partition_count, int(partial["partition_count"]))
        self.partials += 1

    def taken_over(self, now: float) -> None:
        """A merger (re)starts from this state: every partition gets ``idle_s`` to be heard of again.

        The time the merge stood still (a crash, a hand-over) is no partition's silence.
        """
        self.heard = {p: now for p in self.heard}
        if self.first_heard is not None:
            self.first_heard = now

    def close_time(self, now: float) -> int | None:
        """Buckets ending at or before this event time are complete (None: nothing is yet).

        The lowest watermark of the partitions still waited for: every partition, except
        those silent for ``idle_s`` (one never heard of counts as silent from the first
        partial on).
        """
        if not self.watermarks or self.first_heard is None:
            return None
        waited = []
        for partition in range(max(self.partition_count, 1)):
            last = self.heard.get(partition, self.first_heard)
            if now - last < self.idle_s:
                if partition not in self.watermarks:
                    return None  # not heard of yet, and not silent for long
                waited.append(self.watermarks[partition])
        if not waited:  # everything silent: what came is all there is
            return max(self.watermarks.values()) - self.lateness_ms
        return min(waited) - self.lateness_ms

    def close(self, now: float) -> list[ClosedBucket]:
        """Take the complete buckets out, oldest first (data before prediction within a bucket)."""
        closing = self.close_time(now)
        if closing is None:
            return []
        boundary = (closing // self.bucket_ms) * self.bucket_ms
        if self.closed_until is not None and boundary <= self.closed_until:
            return []
        due = sorted(
            (key for key in self.open if key[1] + self.bucket_ms <= boundary),
            key=lambda k: (k[1], k[0], k[2]),
        )
        closed = []
        for key in due:
            rows, counts = self.open.pop(key)
            kind, start, version = key
            closed.append(ClosedBucket(kind, start, start + self.bucket_ms, version, rows, counts))
        self.closed_until = boundary
        return closed

    def open_rows(self, kind: str = "data") -> int:
        return sum(entry[0] for key, entry in self.open.items() if key[0] == kind)

    def to_state(self) -> dict[str, Any]:
        return {
            "bucket_ms": self.bucket_ms,
            "open": [
                {"kind": kind, "start": start, "version": version, "rows": rows, "counts": pack_array(counts)}
                for (kind, start, version), (rows, counts) in self.open.items()
            ],
            "watermarks": {str(p): t for p, t in self.watermarks.items()},
            "heard": {str(p): t for p, t in self.heard.items()},
            "first_heard": self.first_heard,
            "partition_count": self.partition_count,
            "closed_until": self.closed_until,
            "partials": self.partials,
            "rows_added": dict(self.rows_added),
            "rows_late": self.rows_late,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if int(state["bucket_ms"]) != self.bucket_ms:
            raise SnapshotError(
                f"merge state of {state['bucket_ms']} ms buckets, settings say {self.bucket_ms} ms"
            )
        self.open = {
            (str(e["kind"]), int(e["start"]), str(e["version"])): [int(e["rows"]), unpack_array(e["counts"])]
            for e in state["open"]
        }
        self.watermarks = {int(p): int(t) for p, t in state["watermarks"].items()}
        self.heard = {int(p): float(t) for p, t in state["heard"].items()}
        first = state["first_heard"]
        self.first_heard = None if first is None else float(first)
        self.partition_count = int(state["partition_count"])
        closed = state["closed_until"]
        self.closed_until = None if closed is None else int(closed)
        self.partials = int(state["partials"])
        self.rows_added = {str(k): int(v) for k, v in state["rows_added"].items()}
        self.rows_late = int(state["rows_late"])


class BucketWindow:
    """The latest complete buckets of one drift type, summed: the merger's sliding window."""

    def __init__(self) -> None:
        self.buckets: deque[ClosedBucket] = deque()
        self.counts: np.ndarray | None = None
        self.total = 0
        self.since_eval = 0
        self.rows_seen = 0

    def clear(self) -> None:
        """Forget the buckets (a new reference: its bins differ); the rows seen stay counted."""
        self.buckets.clear()
        self.counts, self.total, self.since_eval = None, 0, 0

    def push(self, bucket: ClosedBucket, size: int, step: int, binning: Binning) -> WindowResult | None:
        """Add a complete bucket; the window PSI once due (``step`` new rows, ``size`` held)."""
        if bucket.rows == 0:
            return None
        if self.counts is None or self.counts.shape != bucket.counts.shape:
            self.clear()
            self.counts = np.zeros_like(bucket.counts)
        self.buckets.append(bucket)
        self.counts += bucket.counts
        self.total += bucket.rows
        self.since_eval += bucket.rows
        self.rows_seen += bucket.rows
        while len(self.buckets) > 1 and self.total - self.buckets[0].rows >= size:
            oldest = self.buckets.popleft()
            self.counts -= oldest.counts
            self.total -= oldest.rows
        if self.total < size or self.since_eval < step:
            return None
        self.since_eval = 0
        psi = psi_from_counts(binning, self.counts, self.total)
        return WindowResult(
            feature_psi={name: float(v) for name, v in zip(binning.names, psi, strict=True)},
            size=self.total,
            start_ms=self.buckets[0].start_ms,
            end_ms=self.buckets[-1].end_ms - 1,
            rows_seen=self.rows_seen,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "buckets": [
                {
                    "kind": b.kind,
                    "start": b.start_ms,
                    "end": b.end_ms,
                    "version": b.version,
                    "rows": b.rows,
                    "counts": pack_array(b.counts),
                }
                for b in self.buckets
            ],
            "since_eval": self.since_eval,
            "rows_seen": self.rows_seen,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        self.clear()
        for b in state["buckets"]:
            bucket = ClosedBucket(
                str(b["kind"]),
                int(b["start"]),
                int(b["end"]),
                str(b["version"]),
                int(b["rows"]),
                unpack_array(b["counts"]),
            )
            if self.counts is None:
                self.counts = np.zeros_like(bucket.counts)
            self.buckets.append(bucket)
            self.counts += bucket.counts
            self.total += bucket.rows
        self.since_eval = int(state["since_eval"])
        self.rows_seen = int(state["rows_seen"])
