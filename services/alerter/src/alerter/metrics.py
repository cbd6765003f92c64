"""Prometheus metrics of the alerter (module-level, registered once per process).

``alerter_delivery_failures_total{channel}`` is what the "alert delivery failures"
Prometheus rule watches: it counts deliveries given up on (retries exhausted or a
permanent error), not individual failed attempts (those are
``alerter_delivery_retries_total``), so one transient blip does not page anyone.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from alerter.models import Severity

ALERTS_RECEIVED = Counter(
    "alerter_alerts_received_total",
    "Alert records consumed from the alerts topic",
    ["severity", "status"],
)
ALERTMANAGER_ALERTS = Counter(
    "alerter_alertmanager_alerts_total",
    "Alerts received on the Alertmanager webhook, by how they entered the stream",
    ["outcome"],  # published | direct (Kafka refused them, routed in-process)
)
DELIVERIES = Counter(
    "alerter_deliveries_total",
    "Notifications delivered, per channel and reason",
    ["channel", "kind"],
)
DELIVERY_FAILURES = Counter(
    "alerter_delivery_failures_total",
    "Notifications given up on (all retries failed or a permanent error), per channel",
    ["channel"],
)
DELIVERY_RETRIES = Counter(
    "alerter_delivery_retries_total",
    "Failed delivery attempts that were scheduled for a retry, per channel",
    ["channel"],
)
DELIVERIES_SKIPPED = Counter(
    "alerter_deliveries_skipped_total",
    "Notifications not attempted, per channel and reason (e.g. the channel is not configured)",
    ["channel", "reason"],
)
DUPLICATES_SUPPRESSED = Counter(
    "alerter_duplicates_suppressed_total",
    "Alerts not sent again: same dedup key within the cooldown, already acknowledged, or redelivered",
    ["reason"],
)
UNROUTED = Counter("alerter_unrouted_alerts_total", "Alerts that matched no route with a channel")
ESCALATIONS = Counter(
    "alerter_escalations_total",
    "Escalations sent because an alert was not acknowledged in time, per level",
    ["level"],
)
OPEN_ALERTS = Gauge("alerter_open_alerts", "Alerts firing (acknowledged or not), per severity", ["severity"])
PENDING_DELIVERIES = Gauge(
    "alerter_pending_deliveries", "Deliveries queued, in flight or waiting for a retry"
)
JOURNAL_PENDING = Gauge(
    "alerter_journal_pending",
    "Deliveries recorded as pending in the delivery journal and not finished yet (resumed ones included)",
)
DELIVERIES_RESUMED = Counter(
    "alerter_deliveries_resumed_total",
    "Deliveries found pending in the journal at start (interrupted by a crash or a stop) and attempted again",
    ["channel"],
)
JOURNAL_WRITE_FAILURES = Counter(
    "alerter_journal_write_failures_total",
    "Journal records Kafka did not acknowledge (the delivery was attempted anyway)",
)
CHANNEL_ENABLED = Gauge("alerter_channel_enabled", "1 when the channel is configured", ["channel"])
# From the moment a notification is queued to its successful delivery, retries included:
# sub-second when the endpoint answers, up to minutes while backing off, hence the range.
DELIVERY_LATENCY = Histogram(
    "alerter_delivery_latency_seconds",
    "Time from queueing a notification to its successful delivery (retries included)",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)


def set_open_alerts(counts: dict[Severity, int]) -> None:
    for severity in Severity:
        OPEN_ALERTS.labels(severity.name).set(counts.get(severity, 0))
