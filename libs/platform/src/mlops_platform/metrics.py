"""Prometheus metrics every service exports, built once per process.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` units). The
latency buckets span 1 ms to 10 s because event handling ranges from sub-millisecond
lookups to model scoring of a batch; finer service-specific histograms live in the
services themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

PROCESSING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class PlatformMetrics:
    """Event-bus metrics shared by all services (labelled by service and topic)."""

    events_consumed: Counter
    events_produced: Counter
    events_failed: Counter
    dead_letters: Counter
    processing_seconds: Histogram
    consumer_lag: Gauge
    dependency_up: Gauge
    service_info: Gauge
    process_threads: Gauge
    data_dir_free_bytes: Gauge


@lru_cache(maxsize=4)
def platform_metrics(registry: CollectorRegistry = REGISTRY) -> PlatformMetrics:
    """The process-wide :class:`PlatformMetrics` (registered once in ``registry``)."""
    return PlatformMetrics(
        events_consumed=Counter(
            "mlops_events_consumed_total", "Events consumed", ["service", "topic"], registry=registry
        ),
        events_produced=Counter(
            "mlops_events_produced_total",
            "Events produced and acknowledged",
            ["service", "topic"],
            registry=registry,
        ),
        events_failed=Counter(
            "mlops_events_failed_total",
            "Events that failed processing",
            ["service", "topic", "reason"],
            registry=registry,
        ),
        dead_letters=Counter(
            "mlops_dead_letters_total",
            "Events sent to a dead-letter topic",
            ["service", "topic", "reason"],
            registry=registry,
        ),
        processing_seconds=Histogram(
            "mlops_event_processing_seconds",
            "Time to process one batch of events",
            ["service", "topic"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        ),
        consumer_lag=Gauge(
            "mlops_consumer_lag_messages",
            "Messages behind the end of the partition",
            ["service", "group", "topic", "partition"],
            registry=registry,
        ),
        dependency_up=Gauge(
            "mlops_dependency_up",
            "1 when a dependency answered the last readiness check",
            ["service", "dependency"],
            registry=registry,
        ),
        service_info=Gauge(
            "mlops_service_info",
            "Constant 1, labelled with the service's identity",
            ["service", "instance", "version"],
            registry=registry,
        ),
        # prometheus-client's process collector exports CPU seconds, memory and open fds
        # already; threads and the free space where a service keeps its data it does not.
        process_threads=Gauge(
            "mlops_process_threads",
            "Threads of the service process (native librdkafka threads included), last system sample",
            ["service"],
            registry=registry,
        ),
        data_dir_free_bytes=Gauge(
            "mlops_data_dir_free_bytes",
            "Free bytes on the file system of the service's data directory, last system sample",
            ["service", "path"],
            registry=registry,
        ),
    )
