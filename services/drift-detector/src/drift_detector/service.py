"""The drift-detector process, wired once: runtime, registry lookups, report worker, detector, stream loop.

One exactly-once stream loop reads the four input bindings and hands every batch to
:meth:`DriftDetector.handle <drift_detector.detector.DriftDetector.handle>`, which
emits its events into the loop's outbox; the detector's state is checkpointed to
``settings.state_topic`` in the same transactions (the detector is the loop's
:class:`~mlops_platform.kafka.Stateful` owner), and restored before consuming.
MLflow lookups (champion, thresholds, baselines, reference samples) run in the
:class:`~drift_detector.models.ModelInfoCache` thread and Evidently reports in the
:class:`~drift_detector.reports.ReportWorker`, so the stream never waits for either.
Readiness adds the champion's reference being loaded and the report worker being
alive to the platform's checks.
"""

from __future__ import annotations

import logging

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.detector import DriftDetector
from drift_detector.models import ModelInfoCache, RegistryClient
from drift_detector.reports import ReportStore, ReportWorker
from mlops_platform.health import CheckResult
from mlops_platform.kafka import Guarantee, StreamLoop
from mlops_platform.service import ServiceRuntime


def _observe_report(seconds: float, status: str) -> None:
    m.REPORTS.labels(status).inc()
    if status == "ready":
        m.REPORT_SECONDS.observe(seconds)


class DriftDetectorService:
    """Composition root of the drift detector; ``runtime.lifespan`` starts and stops everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One line per readiness probe from the HTTP clients drowns the service's own logs.
        for noisy in ("httpx", "httpx2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.runtime = ServiceRuntime(settings)
        self.reports = ReportStore(settings.reports_dir, settings.reports_keep)
        self.worker = ReportWorker(
            self.reports, settings.report_executor, settings.report_queue, observe=_observe_report
        )
        self.registry = ModelInfoCache(
            lambda: RegistryClient(settings.mlflow_tracking_uri, settings.model_name),
            champion_refresh_s=settings.champion_refresh_s,
        )
        self.detector = DriftDetector(settings, registry=self.registry, reports=self.worker)
        self.registry.on_change = self.detector.sync
        self.loop: StreamLoop = self.runtime.stream(
            inputs=settings.bindings().consumes,
            handler=self.detector.handle,
            guarantee=Guarantee.EXACTLY_ONCE,
            batch_size=settings.batch_size,
            state=self.detector,
            state_topic=settings.state_topic,
            state_interval_s=settings.state_interval_s,
        )
        self.runtime.on_start(self.start)
        self.runtime.on_stop(self.stop)
        self.runtime.checks["reference"] = self.reference_check
        self.runtime.checks["report_worker"] = self.report_check

    def start(self) -> None:
        """Before the loop starts: registry lookups (the champion asked at once) and the report worker."""
        self.registry.start()
        self.registry.want_champion()
        self.worker.start()

    def stop(self) -> None:
        """After the loop stopped."""
        self.worker.stop()
        self.registry.stop()

    def reference_check(self) -> CheckResult:
        """Ready once the champion's reference is loaded (says why not: no champion, MLflow down, loading)."""
        settings, registry = self.settings, self.registry
        version = self.detector.reference_version
        if version is not None:
            return CheckResult(True, f"{settings.model_name} v{version}")
        if registry.champion_resolved and registry.champion is None:
            return CheckResult(False, f"{settings.model_name} has no @champion")
        return CheckResult(False, registry.last_error or "loading the champion's reference from MLflow")

    def report_check(self) -> CheckResult:
        return CheckResult(
            self.worker.alive, f"{self.settings.report_executor} worker, dir {self.settings.reports_dir}"
        )
