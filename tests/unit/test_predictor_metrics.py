"""Batched histogram observations give the same buckets and sum as one observe per value."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from predictor.metrics import observe_all


def samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_all_equals_one_observe_per_value() -> None:
    buckets = (0.01, 0.1, 0.18, 0.5, 1.0)
    one_by_one = Histogram("one", "d", buckets=buckets, registry=CollectorRegistry())
    batched = Histogram("one", "d", buckets=buckets, registry=CollectorRegistry())
    values = np.array([0.0, 0.01, 0.0100001, 0.18, 0.17, 0.5, 0.99, 1.0, 3.0, 0.1, 0.1])
    for value in values.tolist():
        one_by_one.observe(value)
    observe_all(batched, values)
    expected, got = samples(one_by_one), samples(batched)
    assert got.pop("one_sum") == pytest.approx(expected.pop("one_sum"))
    assert got == expected


def test_observe_all_skips_nan_and_empty_input() -> None:
    histogram = Histogram("h", "d", buckets=(1.0,), registry=CollectorRegistry())
    observe_all(histogram, np.array([np.nan, 0.5]))
    observe_all(histogram, np.array([]))
    assert samples(histogram)["h_count"] == 1 and samples(histogram)["h_sum"] == 0.5
