"""The predictor app: platform app factory + :class:`PredictorService` + routes."""

from __future__ import annotations

from fastapi import FastAPI

from mlops_platform.http import create_app
from predictor.api import router
from predictor.config import Settings
from predictor.service import PredictorService

DESCRIPTION = """\
Scores card transactions for fraud. Consumes `prediction.request`, scores micro-batches with
the XGBoost models the MLflow registry names by alias, and publishes one `prediction.completed`
per request — exactly once (outputs and consumed offsets commit in one Kafka transaction).

* **Models**: `@champion`, plus `@challenger` when it exists; a transaction's A/B arm is a pure
  function of its id (SHA-256 bucket, challenger share 10 % by default).
* **Risk levels**: approve < 0.18 <= verify < 0.40 <= hold < 0.65 <= block (configurable).
* **Hot reload**: a `model.deployed` event (or the periodic alias check) swaps models between two
  batches, without a restart. If the registry is unreachable the last good model keeps serving
  (`/ready` says *stale*; metric `fds_model_stale`).
* `GET /model` shows what serves; `POST /score` scores one transaction synchronously (not published).
"""


def build_app(settings: Settings | None = None, *, service: PredictorService | None = None) -> FastAPI:
    """The predictor FastAPI app (tests may pass a service built with a fake model source)."""
    settings = settings or Settings()
    service = service or PredictorService(settings)
    app = create_app(settings, title="predictor", description=DESCRIPTION, lifespan=service.runtime.lifespan)
    app.state.predictor = service
    app.include_router(router)
    return app
