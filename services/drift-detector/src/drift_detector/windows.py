"""Count-based sliding windows with incrementally maintained histograms.

Rows (one per prediction) go into a ring buffer that keeps their raw values, event
times and bin indices. The histogram of the current window (the last ``size`` rows) is
kept as integer counts: each new row adds its bins, each row leaving the window
subtracts its bins, so evaluating a window costs ``O(features x bins)`` no matter how
large it is. A window is evaluated every ``step`` rows once ``size`` rows arrived;
rows are fed in segments that stop exactly at evaluation points, so the windows do not
depend on how the stream was batched.

The raw values stay available for the Evidently report of a window and for re-binning
when the reference changes (a new champion), so no collected data is thrown away.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from drift_detector.psi import Binning, psi_from_counts
from drift_detector.snapshot import SnapshotError, pack_array, unpack_array


@dataclass(frozen=True)
class WindowResult:
    """PSI of one evaluated window."""

    feature_psi: dict[str, float]
    size: int
    start_ms: int
    end_ms: int
    rows_seen: int


class WindowManager:
    """Ring buffer + running histogram of the last ``size`` rows, evaluated every ``step`` rows."""

    def __init__(self, columns: list[str], capacity: int, size: int, step: int, chunk: int = 1024) -> None:
        if size > capacity:
            raise ValueError("window size exceeds the buffer capacity")
        self.columns = list(columns)
        self.chunk = chunk
        # Rows leaving the window during one segment must still be in the buffer.
        self.capacity = capacity + chunk
        self.values = np.full((self.capacity, len(columns)), np.nan, dtype=np.float32)
        self.times = np.zeros(self.capacity, dtype=np.int64)
        self.bins: np.ndarray | None = None
        self.binning: Binning | None = None
        self.counts: np.ndarray | None = None
        self.total = 0  # rows ever appended
        self.size = size
        self.step = step
        self.until_eval = size
        self.windows_evaluated = 0

    # ------------------------------------------------------------------ config

    def set_binning(self, binning: Binning | None) -> None:
        """Use new bins (a new reference): re-bin the buffered rows, keep the schedule."""
        if binning is not None and binning.names != self.columns:
            raise ValueError("binning columns differ from the window columns")
        self.binning = binning
        if binning is None:
            self.bins, self.counts = None, None
            return
        self.bins = np.zeros((self.capacity, len(self.columns)), dtype=np.int16)
        held = min(self.total, self.capacity)
        if held:
            idx = self._indices(self.total - held, self.total)
            self.bins[idx] = binning.assign(self.values[idx])
        self._recount()

    def clear(self) -> None:
        """Forget every buffered row (they are not comparable with the new reference); keep bins and size."""
        self.total = 0
        self.until_eval = self.size
        if self.bins is not None:
            self.bins[:] = 0
        self._recount()

    def resize(self, size: int, step: int) -> None:
        """Change window size/step (a 'monitor' action or its expiry)."""
        size = min(size, self.capacity - self.chunk)
        if (size, step) == (self.size, self.step):
            return
        self.size, self.step = size, step
        self._recount()
        # Evaluate at the next row if the smaller window is already full.
        self.until_eval = max(min(self.until_eval, step), size - self.total, 0)

    # ------------------------------------------------------------------ data

    def feed(self, values: np.ndarray, times: np.ndarray) -> Iterator[WindowResult]:
        """Append rows; yields a result at each evaluation point reached (when bins exist)."""
        values = np.asarray(values, dtype=np.float32)
        times = np.asarray(times, dtype=np.int64)
        offset, n = 0, len(values)
        while offset < n:
            take = min(n - offset, self.chunk, max(self.until_eval, 1))
            self._append(values[offset : offset + take], times[offset : offset + take])
            offset += take
            self.until_eval -= take
            if self.until_eval <= 0 and self.total >= self.size:
                self.until_eval = self.step
                result = self.evaluate()
                if result is not None:
                    yield result
            elif self.until_eval <= 0:
                self.until_eval = self.size - self.total

    def evaluate(self) -> WindowResult | None:
        if self.binning is None or self.counts is None or self.total == 0:
            return None
        n = min(self.size, self.total)
        psi = psi_from_counts(self.binning, self.counts, n)
        idx = self._indices(self.total - n, self.total)
        self.windows_evaluated += 1
        return WindowResult(
            feature_psi={name: float(v) for name, v in zip(self.columns, psi, strict=True)},
            size=n,
            start_ms=int(self.times[idx].min()),
            end_ms=int(self.times[idx].max()),
            rows_seen=self.total,
        )

    def window_values(self) -> np.ndarray:
        """Raw values of the current window (oldest first)."""
        n = min(self.size, self.total)
        return self.values[self._indices(self.total - n, self.total)].copy()

    def window_counts(self) -> np.ndarray | None:
        return None if self.counts is None else self.counts.copy()

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """The buffered rows (values, event times) and the schedule, as plain data.

        Bins and counts are not included: they follow from the reference's binning,
        which the owner sets again (:meth:`set_binning` re-bins the rows).
        """
        held = min(self.total, self.capacity)
        idx = self._indices(self.total - held, self.total)
        return {
            "columns": self.columns,
            "size": self.size,
            "step": self.step,
            "until_eval": self.until_eval,
            "total": self.total,
            "windows_evaluated": self.windows_evaluated,
            "values": pack_array(self.values[idx]),
            "times": pack_array(self.times[idx]),
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace rows and schedule by a :meth:`to_state` document (the current binning re-bins them)."""
        if list(state["columns"]) != self.columns:
            raise SnapshotError(f"window columns {state['columns']} differ from {self.columns}")
        values, times = unpack_array(state["values"]), unpack_array(state["times"])
        held = min(len(values), self.capacity)  # a smaller buffer than before keeps the newest rows
        values, times = values[len(values) - held :], times[len(times) - held :]
        total = int(state["total"])
        self.values[:] = np.nan
        self.times[:] = 0
        idx = self._indices(total - held, total)
        self.values[idx], self.times[idx] = values, times
        self.total = total
        self.size = min(int(state["size"]), self.capacity - self.chunk)
        self.step = int(state["step"])
        self.until_eval = int(state["until_eval"])
        self.windows_evaluated = int(state["windows_evaluated"])
        self.set_binning(self.binning)

    # ------------------------------------------------------------------ internals

    def _indices(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop) % self.capacity

    def _append(self, values: np.ndarray, times: np.ndarray) -> None:
        n = len(values)
        start = self.total
        idx = self._indices(start, start + n)
        self.values[idx] = values
        self.times[idx] = times
        if self.binning is not None and self.bins is not None and self.counts is not None:
            new_bins = self.binning.assign(values)
            self.bins[idx] = new_bins
            self.counts += self.binning.count_matrix(new_bins)
            # Rows [start - size, start + n - size) leave the window.
            leave_from, leave_to = max(start - self.size, 0), max(start + n - self.size, 0)
            if leave_to > leave_from:
                leaving = self.bins[self._indices(leave_from, leave_to)]
                self.counts -= self.binning.count_matrix(leaving)
        self.total += n

    def _recount(self) -> None:
        if self.binning is None or self.bins is None:
            self.counts = None
            return
        n = min(self.size, self.total)
        self.counts = self.binning.count_matrix(self.bins[self._indices(self.total - n, self.total)])
