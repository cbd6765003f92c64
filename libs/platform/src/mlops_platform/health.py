"""Dependency checks for readiness, and the heartbeat every service publishes.

Checks are plain callables so they can run both from the ``/ready`` endpoint (in a
worker thread) and from the heartbeat thread. Results are cached for a moment so a
busy probe does not hammer Kafka or the registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from mlops_platform.contracts import make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.settings import PlatformSettings, ServiceSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""


Check = Callable[[], CheckResult]


def cached(check: Check, ttl_s: float = 2.0) -> Check:
    """Memoise a check's result for ``ttl_s`` seconds."""
    state: dict[str, Any] = {"at": 0.0, "result": None}
    lock = threading.Lock()

    def run() -> CheckResult:
        with lock:
            if state["result"] is None or time.monotonic() - state["at"] > ttl_s:
                state["result"], state["at"] = check(), time.monotonic()
            result: CheckResult = state["result"]
            return result

    return run


def kafka_check(settings: PlatformSettings) -> Check:
    # One long-lived admin client: a new client per probe would open (and, while Kafka
    # is down, log) a fresh set of connections every time.
    admin = AdminClient(settings.admin_config())

    def check() -> CheckResult:
        try:
            admin.list_topics(timeout=2.0)
        except KafkaException:
            return CheckResult(False, f"no metadata from {settings.kafka_bootstrap_servers}")
        return CheckResult(True, settings.kafka_bootstrap_servers)

    return cached(check)


def http_check(url: str) -> Check:
    """Healthy when ``url`` answers HTTP 200."""

    def check() -> CheckResult:
        try:
            response = httpx.get(url, timeout=2.0)
        except httpx.HTTPError as exc:
            return CheckResult(False, f"{url}: {exc}")
        if response.status_code != 200:
            return CheckResult(False, f"{url}: HTTP {response.status_code}")
        return CheckResult(True, url)

    return cached(check)


def registry_check(settings: PlatformSettings) -> Check:
    return http_check(settings.schema_registry_url.rstrip("/") + "/subjects")


def mlflow_check(settings: PlatformSettings) -> Check:
    return http_check(settings.mlflow_tracking_uri.rstrip("/") + "/health")


def run_checks(service: str, checks: dict[str, Check]) -> dict[str, CheckResult]:
    """Run every check, recording each outcome in ``mlops_dependency_up``."""
    gauge = platform_metrics().dependency_up
    results: dict[str, CheckResult] = {}
    for name, check in checks.items():
        try:
            result = check()
        except Exception as exc:  # a check must never take the endpoint down with it
            result = CheckResult(False, f"{type(exc).__name__}: {exc}")
        gauge.labels(service, name).set(1 if result.ok else 0)
        results[name] = result
    return results


#: The status of an instance's last heartbeat when it stops on purpose (SIGTERM, scale-down).
STOPPING = "stopping"


class Heartbeat:
    """Publishes a ``system.health`` event every ``settings.heartbeat_interval_s`` seconds."""

    def __init__(
        self,
        settings: ServiceSettings,
        producer: EventProducer,
        checks: dict[str, Check],
        version: str,
        details: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.checks = checks
        self.version = version
        self.details = details
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def farewell(self) -> None:
        """Stop beating and publish a last beat with status ``stopping``.

        A service shutting down fails its own checks (loops stopping, the stream processor
        stopping) while it finishes its batch: beats in that time would read as ``degraded``
        to the auto-responder, and a planned restart of the predictor would look like a
        broken model. Saying goodbye first tells a planned stop from a failure.
        """
        if self._stop.is_set():
            return
        self.stop()
        try:
            self.beat(status=STOPPING)
        except Exception as exc:
            log.warning("heartbeat_failed", error=str(exc))

    def beat(self, status: str | None = None) -> None:
        """Publish one heartbeat: ``ok`` or ``degraded`` from the checks, unless ``status`` is given.

        A given status is sent without running the checks (a goodbye must not wait on a
        dependency that is down).
        """
        results = run_checks(self.settings.service_name, self.checks) if status is None else {}
        if status is None:
            status = "ok" if all(r.ok for r in results.values()) else "degraded"
        event = make_event(
            self.settings.service_name,
            {
                "service": self.settings.service_name,
                "instance_id": self.settings.instance_id,
                "status": status,
                "dependencies": {name: "ok" if r.ok else "down" for name, r in results.items()},
                "version": self.version,
                "uptime_s": time.monotonic() - self.started,
                # The interval is declared so a watcher can tell a late beat from a slow schedule.
                "details": {
                    "interval_s": str(self.settings.heartbeat_interval_s),
                    **(self.details() if self.details else {}),
                },
            },
        )
        # Heartbeats are best effort: produce without waiting, the poll thread delivers.
        self.producer.produce(self.settings.heartbeats, event, key=self.settings.service_name)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                self.beat()
            except Exception as exc:
                log.warning("heartbeat_failed", error=str(exc))
