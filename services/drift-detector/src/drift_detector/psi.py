"""Population stability index with bins fixed from the reference sample.

Bins are decided once per reference (the serving model's reference data) and every
live row is mapped to a bin index when it arrives, so a window's histogram is a sum
of integer counts that can be updated incrementally (see :mod:`drift_detector.windows`).

Binning, per feature:

* **discrete** (at most ``discrete_max_values`` distinct reference values: categorical
  codes, flags, hour of day, small counts): one bin per reference value, plus one bin
  for values the reference never had (a new category is drift, not noise);
* **continuous**: ``n_bins`` quantile bins of the reference (interior quantiles as
  edges; duplicate edges from point masses collapse);
* both get a last bin for missing values (NaN), so a feature that starts arriving
  empty moves the PSI too.

``PSI = sum((q - p) * ln(q / p))`` over the bins, with the reference share ``p`` and
the window share ``q`` floored at ``epsilon`` so empty bins stay finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pandas as pd

DEFAULT_BINS: Final[int] = 10
DEFAULT_DISCRETE_MAX: Final[int] = 30
DEFAULT_EPSILON: Final[float] = 1e-4


@dataclass(frozen=True)
class FeatureBins:
    """How one feature's values map to histogram bins, and the reference shares."""

    name: str
    kind: Literal["discrete", "continuous"]
    #: discrete: sorted reference values; continuous: sorted interior edges.
    points: np.ndarray
    #: share of the reference in each bin (length :attr:`n_bins`).
    reference_share: np.ndarray

    @property
    def n_bins(self) -> int:
        # discrete: one per value + unseen + missing; continuous: len(edges)+1 + missing.
        return len(self.points) + 2

    @property
    def missing_bin(self) -> int:
        return self.n_bins - 1

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (``int16``)."""
        x = np.asarray(values, dtype=np.float32)
        missing = np.isnan(x)
        if self.kind == "continuous":
            out = np.searchsorted(self.points, x, side="right")
        else:
            pos = np.searchsorted(self.points, x, side="left")
            clipped = np.minimum(pos, len(self.points) - 1)
            known = self.points[clipped] == x
            out = np.where(known, clipped, len(self.points))  # unseen value -> its own bin
        out = np.where(missing, self.missing_bin, out)
        return out.astype(np.int16)

    def counts(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.assign(values), minlength=self.n_bins)

    def label(self, index: int) -> str:
        """Human-readable name of a bin (for reports and the HTTP API)."""
        if index == self.missing_bin:
            return "missing"
        if self.kind == "discrete":
            return "unseen" if index == len(self.points) else f"{self.points[index]:g}"
        low = "-inf" if index == 0 else f"{self.points[index - 1]:.4g}"
        high = "+inf" if index == len(self.points) else f"{self.points[index]:.4g}"
        return f"[{low}, {high})"


def fit_feature_bins(
    name: str,
    reference: np.ndarray,
    n_bins: int = DEFAULT_BINS,
    discrete_max_values: int = DEFAULT_DISCRETE_MAX,
) -> FeatureBins:
    """Bins of one feature from its reference values (NaN allowed)."""
    ref = np.asarray(reference, dtype=np.float32)
    present = ref[~np.isnan(ref)]
    unique = np.unique(present)
    if unique.size == 0:
        kind: Literal["discrete", "continuous"] = "discrete"
        points = np.empty(0, dtype=np.float32)
    elif unique.size <= discrete_max_values:
        kind, points = "discrete", unique.astype(np.float32)
    else:
        kind = "continuous"
        quantiles = np.quantile(present, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
        points = np.unique(quantiles.astype(np.float32))
    bins = FeatureBins(name=name, kind=kind, points=points, reference_share=np.empty(0))
    counts = bins.counts(ref)
    share = counts / max(ref.size, 1)
    return FeatureBins(name=name, kind=kind, points=points, reference_share=share)


@dataclass(frozen=True)
class Binning:
    """Bins of every monitored column, fitted on one reference sample."""

    features: tuple[FeatureBins, ...]
    epsilon: float = DEFAULT_EPSILON
    reference_rows: int = 0

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def max_bins(self) -> int:
        return max((f.n_bins for f in self.features), default=1)

    def assign(self, matrix: np.ndarray) -> np.ndarray:
        """Bin indices ``[n, n_features]`` (``int16``) of a value matrix in :attr:`names` order."""
        values = np.asarray(matrix, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != len(self.features):
            raise ValueError(f"expected [n, {len(self.features)}] values, got shape {values.shape}")
        out = np.empty(values.shape, dtype=np.int16)
        for j, feature in enumerate(self.features):
            out[:, j] = feature.assign(values[:, j])
        return out

    def reference_matrix(self) -> np.ndarray:
        """Reference shares padded to ``[n_features, max_bins]`` (zeros past a feature's bins)."""
        out = np.zeros((len(self.features), self.max_bins), dtype=np.float64)
        for j, feature in enumerate(self.features):
            out[j, : feature.n_bins] = feature.reference_share
        return out

    def count_matrix(self, bins: np.ndarray) -> np.ndarray:
        """Histogram ``[n_features, max_bins]`` of bin indices ``[n, n_features]``."""
        n_features, width = len(self.features), self.max_bins
        if bins.size == 0:
            return np.zeros((n_features, width), dtype=np.int64)
        flat = bins.astype(np.int64) + np.arange(n_features, dtype=np.int64) * width
        return np.bincount(flat.ravel(), minlength=n_features * width).reshape(n_features, width)


def fit_binning(
    reference: pd.DataFrame | Mapping[str, np.ndarray],
    columns: Sequence[str],
    n_bins: int = DEFAULT_BINS,
    discrete_max_values: int = DEFAULT_DISCRETE_MAX,
    epsilon: float = DEFAULT_EPSILON,
) -> Binning:
    """Fit bins for ``columns`` of a reference sample."""
    features = []
    rows = 0
    for name in columns:
        values = np.asarray(reference[name], dtype=np.float32)
        rows = max(rows, values.size)
        features.append(fit_feature_bins(name, values, n_bins, discrete_max_values))
    return Binning(features=tuple(features), epsilon=epsilon, reference_rows=rows)


def psi_from_shares(
    reference: np.ndarray, current: np.ndarray, epsilon: float = DEFAULT_EPSILON
) -> np.ndarray:
    """PSI along the last axis of two share arrays of equal shape."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    q = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    return np.asarray(np.sum((q - p) * np.log(q / p), axis=-1))


def psi_from_counts(binning: Binning, counts: np.ndarray, total: int) -> np.ndarray:
    """PSI per feature of a window histogram ``[n_features, max_bins]`` holding ``total`` rows."""
    if total <= 0:
        return np.zeros(len(binning.features))
    # Padding bins are 0 in both arrays: floored to epsilon on both sides, they add 0.
    return psi_from_shares(binning.reference_matrix(), counts / total, binning.epsilon)


def psi(reference: np.ndarray, current: np.ndarray, **fit: int) -> float:
    """PSI of one feature between two samples (bins fitted on ``reference``)."""
    bins = fit_feature_bins("x", reference, **fit)
    cur = np.asarray(current, dtype=np.float32)
    share = bins.counts(cur) / max(cur.size, 1)
    return float(psi_from_shares(bins.reference_share, share))
