"""Prometheus metrics: request counts and latencies, registry sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schema_registry_server.registry import RegistryCounts


class _RegistrySizeCollector(Collector):
    """Reads the sizes at scrape time, so they can never drift from the registry's state."""

    def __init__(self, counts: Callable[[], RegistryCounts | None]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        counts = self._counts()
        if counts is None:
            return []
        return [
            GaugeMetricFamily(
                "schema_registry_schemas", "Distinct schemas (global ids) stored", value=counts.schemas
            ),
            GaugeMetricFamily(
                "schema_registry_subjects", "Subjects with at least one live version", value=counts.subjects
            ),
            GaugeMetricFamily(
                "schema_registry_schema_versions",
                "Live (not deleted) subject versions",
                value=counts.versions,
            ),
        ]


class Metrics:
    """All metrics of one app instance, in their own registry (no global state between apps)."""

    def __init__(self, counts: Callable[[], RegistryCounts | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "schema_registry_http_requests",
            "HTTP requests by method, route template and status code",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "schema_registry_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "endpoint"],
            registry=self.registry,
        )
        self.incompatible = Counter(
            "schema_registry_incompatible_registrations",
            "Registrations rejected by the compatibility rules",
            registry=self.registry,
        )
        self.registry.register(_RegistrySizeCollector(counts))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
