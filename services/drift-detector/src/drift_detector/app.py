"""The drift-detector's HTTP face: the platform app with the detector's routes."""

from __future__ import annotations

from fastapi import FastAPI

from drift_detector.api import router
from drift_detector.config import Settings
from drift_detector.service import DriftDetectorService
from mlops_platform.http import create_app

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


def build_app(settings: Settings | None = None, *, service: DriftDetectorService | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (built from ``settings`` when not given)."""
    service = service or DriftDetectorService(settings or Settings())
    app = create_app(
        service.settings, title="drift-detector", description=DESCRIPTION, lifespan=service.runtime.lifespan
    )
    app.state.detector = service.detector
    app.state.reports = service.reports
    app.include_router(router)
    return app
