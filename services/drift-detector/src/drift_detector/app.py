"""The drift-detector app: platform runtime + :class:`DriftDetector` + routes."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from drift_detector import metrics as m
from drift_detector.api import router
from drift_detector.config import Settings
from drift_detector.detector import DriftDetector
from drift_detector.models import ModelInfoCache, RegistryClient
from drift_detector.outbox import Outbox
from drift_detector.reports import ReportStore, ReportWorker
from mlops_platform.health import CheckResult
from mlops_platform.http import create_app
from mlops_platform.kafka import Record
from mlops_platform.service import ServiceRuntime

DESCRIPTION = """\
Watches the serving fraud model and the data it sees.

* **Data drift**: per-feature PSI of sliding windows of `prediction.completed` against the
  champion's reference sample (from its MLflow run); stable < 0.1 ≤ watch ≤ 0.25 < drift.
  `data.drift.detected` only when the state changes (or at a bounded repeat rate), with
  severity, drift score, affected features and the URL of an Evidently report.
* **Live quality**: predictions joined with delayed `prediction.feedback` labels; AUC,
  AUPRC, recall, precision, FPR and business cost per model version and A/B arm;
  `model.performance.degraded` when the champion falls below its training baseline.
* **A/B evaluation**: Welch's t-test on per-transaction business cost once both arms have
  enough labels; `model.evaluation.completed` with the winner and p-value.
"""


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # One line per readiness probe from the HTTP clients drowns the service's own logs.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runtime = ServiceRuntime(settings)
    store = ReportStore(settings.reports_dir, settings.reports_keep)

    def observe_report(seconds: float, status: str) -> None:
        m.REPORTS.labels(status).inc()
        if status == "ready":
            m.REPORT_SECONDS.observe(seconds)

    worker = ReportWorker(store, settings.report_executor, settings.report_queue, observe=observe_report)
    registry = ModelInfoCache(
        lambda: RegistryClient(settings.mlflow_tracking_uri, settings.model_name),
        champion_refresh_s=settings.champion_refresh_s,
    )
    outbox = Outbox(runtime.producer, settings.schema_topics())
    detector = DriftDetector(settings, registry=registry, publish=outbox.produce, reports=worker)
    registry.on_change = detector.sync

    def handle(records: list[Record]) -> None:
        outbox.resend_failed()
        detector.handle(records)
        outbox.settle()

    runtime.consumer_loop(
        topics=[
            settings.predictions_topic,
            settings.feedback_topic,
            settings.deployments_topic,
            settings.actions_topic,
        ],
        handler=handle,
        group_id=settings.consumer_group,
        schema_topics=settings.schema_topics(),
        batch_size=settings.batch_size,
    )

    def start() -> None:
        registry.start()
        registry.want_champion()
        worker.start()

    def stop() -> None:
        worker.stop()
        registry.stop()

    runtime.on_start(start)
    runtime.on_stop(stop)

    def reference_check() -> CheckResult:
        version = detector.reference_version
        if version is not None:
            return CheckResult(True, f"{settings.model_name} v{version}")
        if registry.champion_resolved and registry.champion is None:
            return CheckResult(False, f"{settings.model_name} has no @champion")
        detail = registry.last_error or "loading the champion's reference from MLflow"
        return CheckResult(False, detail)

    def report_check() -> CheckResult:
        return CheckResult(worker.alive, f"{settings.report_executor} worker, dir {settings.reports_dir}")

    runtime.checks["reference"] = reference_check
    runtime.checks["report_worker"] = report_check

    app = create_app(settings, title="drift-detector", description=DESCRIPTION, lifespan=runtime.lifespan)
    app.state.detector = detector
    app.state.reports = store
    app.include_router(router)
    return app
