"""The predictor's Prometheus metrics (the seed's ``fds_*`` names), built once per process.

Latency buckets reach down to 1 ms (a micro-batch scores in a few ms) and include 0.2 s,
the p99 alert threshold, on top of the seed's buckets. Probability buckets add the
risk thresholds (0.18, 0.40, 0.65) to the seed's tenths so the risk tiers can be read
straight off the histogram.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBABILITY_BUCKETS: Final = (0.01, 0.05, 0.1, 0.18, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)
BATCH_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

#: ``endpoint`` label of requests scored from the ``prediction.request`` stream.
STREAM_ENDPOINT: Final = "stream"
#: ``endpoint`` label of synchronous ``POST /score`` calls.
HTTP_ENDPOINT: Final = "/score"

# --- tier 1: requests
REQUESTS: Final = Counter(
    "fds_requests_total",
    "Scoring requests by endpoint (stream or /score), outcome and serving model version",
    ["endpoint", "status", "model_version"],
)
LATENCY: Final = Histogram(
    "fds_latency_seconds",
    "Latency from the request's event_time to its score (stream) or of the HTTP call (/score)",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)

# --- tier 2: business
PREDICTIONS: Final = Counter(
    "fds_predictions_total",
    "Predictions by risk level (approve, verify, hold, block) and model version",
    ["risk_level", "model_version"],
)
FRAUD_PROBABILITY: Final = Histogram(
    "fds_fraud_probability", "Distribution of fraud probabilities", buckets=PROBABILITY_BUCKETS
)
AB_ASSIGNMENTS: Final = Counter("fds_ab_assignments_total", "Transactions routed to each A/B arm", ["arm"])

# --- tier 3: system
MODEL_LOAD_TIME: Final = Gauge(
    "fds_model_load_time_seconds", "Time the last load of a model version took", ["model_name"]
)
ACTIVE_REQUESTS: Final = Gauge("fds_active_requests", "Requests being scored right now")
MODEL_INFO: Final = Gauge(
    "fds_model_info",
    "Constant 1 per serving alias, labelled with the version it serves",
    ["alias", "version"],
)
MODEL_STALE: Final = Gauge(
    "fds_model_stale",
    "1 while the last alias check failed (registry unreachable or load failed): serving the last good model",
)
MODEL_RELOADS: Final = Counter(
    "fds_model_reloads_total",
    "Alias checks by trigger and outcome (changed, unchanged, failed)",
    ["trigger", "outcome"],
)
BATCH_SIZE: Final = Histogram("fds_batch_size", "Requests scored per micro-batch", buckets=BATCH_BUCKETS)
SCORING_SECONDS: Final = Histogram(
    "fds_scoring_seconds",
    "Time to build features and score one micro-batch (all arms)",
    buckets=LATENCY_BUCKETS,
)


def observe_all(histogram: Any, values: np.ndarray) -> None:
    """Observe many values at once: one increment per bucket, not one ``observe`` per value.

    Same result as ``observe`` for each value (a value lands in the first bucket whose
    upper bound is >= it); NaN is skipped. ``histogram`` is a Histogram without labels
    or a labelled child. Falls back to ``observe`` if the client's internals differ.
    """
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in array.tolist():
            histogram.observe(value)
        return
    counts = np.bincount(np.searchsorted(bounds, array, side="left"), minlength=len(bounds))
    for index, count in enumerate(counts.tolist()):
        if count:
            buckets[index].inc(count)
    total.inc(float(array.sum()))
