"""Prometheus metrics of the ingest service (module-level, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Publishing waits for acks=all (and, by default, a transaction commit): a healthy local
# broker answers in a few milliseconds, a struggling one in seconds, and the request gives
# up at INGEST_PUBLISH_TIMEOUT_S (10 s by default), so the buckets span 1 ms to 10 s.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Batches hold 1 to INGEST_MAX_BATCH_SIZE (1000 by default) records.
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 5000)

REQUESTS = Counter(
    "ingest_requests_total", "HTTP requests to the ingest endpoints", ["endpoint", "method", "status"]
)
RECORDS_PUBLISHED = Counter(
    "ingest_records_published_total", "Records acknowledged by Kafka", ["record_type"]
)
RECORDS_REJECTED = Counter(
    "ingest_records_rejected_total",
    "Records refused: a data-quality reason (missing_field, out_of_range, invalid_value, rejected), "
    "batch_rejected (another record of the batch was invalid) or unavailable (Kafka/registry down)",
    ["record_type", "reason"],
)
QUALITY_ISSUES = Counter(
    "ingest_quality_issues_total",
    "Data-quality issues found (rejected=false: accepted with a warning)",
    ["record_type", "issue_type", "rejected"],
)
QUALITY_EVENTS_DROPPED = Counter(
    "ingest_quality_events_dropped_total",
    "data.quality.issues events not published (over the per-request cap, or Kafka/registry failure)",
    ["reason"],
)
PUBLISH_SECONDS = Histogram(
    "ingest_publish_latency_seconds",
    "Time from producing a request's events to Kafka's acknowledgement (commit included)",
    ["record_type"],
    buckets=PUBLISH_BUCKETS,
)
BATCH_RECORDS = Histogram(
    "ingest_request_records", "Records per accepted request", ["record_type"], buckets=BATCH_BUCKETS
)


def quality_event_dropped(reason: str, _detail: str) -> None:
    """Count a lost best-effort quality event (the publishers' ``on_emit_failure``).

    ``reason`` is ``kafka``, ``unavailable`` or ``encode``; the platform already logged the detail.
    """
    QUALITY_EVENTS_DROPPED.labels(reason).inc()
