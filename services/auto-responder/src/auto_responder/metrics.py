"""Prometheus metrics of the auto-responder (module-level, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Actions range from publishing one event (milliseconds) through alias moves on the
# registry (sub-second) and scale-outs that wait for a new instance to be ready (tens of
# seconds) to retraining on a data window (minutes): the buckets span 5 ms to 15 min.
ACTION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)

ACTIONS = Counter(
    "responder_actions_total",
    "Decision records published to system.actions, by action and status "
    "(started, succeeded, failed, suppressed)",
    ["action", "status"],
)
SUPPRESSED = Counter(
    "responder_suppressed_total",
    "Suppressed decisions by action and reason (cooldown, dampening, quiet_hours, in_progress, ...)",
    ["action", "reason"],
)
SUCCESS_RATIO = Gauge(
    "responder_action_success_ratio",
    "Succeeded / (succeeded + failed) actions over the last 24 h, replayed history included",
)
ACTION_SECONDS = Histogram(
    "responder_action_duration_seconds",
    "Time an executed action took, by action and final status",
    ["action", "status"],
    buckets=ACTION_BUCKETS,
)
INTERRUPTED = Counter(
    "responder_actions_interrupted_total",
    "Actions found started but never finished at start (the process died meanwhile), closed as failed",
    ["action"],
)
IN_PROGRESS = Gauge("responder_actions_in_progress", "Actions running now", ["action"])
TRIGGERS = Counter(
    "responder_trigger_events_total",
    "Trigger events consumed, by event type and what became of them "
    "(decided, ignored reasons: other_model, stale, no_rule, duplicate, ...)",
    ["topic", "result"],
)
REPLAYED = Gauge(
    "responder_history_replayed_records", "Decision records restored from system.actions at start"
)
HEARTBEAT_AGE = Gauge(
    "responder_service_heartbeat_age_seconds",
    "Seconds since each watched service's last heartbeat on system.health",
    ["service"],
)
SERVICE_UP = Gauge(
    "responder_service_up",
    "1 while a watched service beats healthy, 0 once it failed its health check or went silent",
    ["service"],
)
SERVICE_INSTANCES = Gauge(
    "responder_service_live_instances", "Instances of each watched service beating in time", ["service"]
)
AVAILABILITY = Gauge(
    "service_availability_ratio",
    "Share of the expected heartbeat intervals of the availability period (RESPONDER_AVAILABILITY_PERIOD_S) "
    "in which some instance of the service beat healthy",
    ["service"],
)
