"""Every service's real FastAPI app, built in-process with fakes instead of Kafka and MLflow.

Each app comes from the service's own ``build_app`` (so through the platform's app factory
and with every router the service installs); what would talk to Kafka, the registry or
MLflow is a fake: ingest's publisher, the predictor's model source and runtime, the
alerter's publishing, the auto-responder's producer and model registry, the drift
detector's views and the recommender's tables. No lifespan runs. The API-key walk and
the OpenAPI fuzzing tier use them, with an example request that should succeed for each
state-changing operation.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI

from fraud_model.contract import transaction_payload
from fraud_model.generator import TransactionGenerator
from mlops_platform.health import CheckResult

#: The six services by the name their module has (``python -m <name>``).
SERVICES = ("ingest", "predictor", "drift_detector", "auto_responder", "recommender", "alerter")

#: Paths without any key, on every service.
OPEN_PATHS = {"/health", "/ready"}


def transaction(index: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid transaction for ingest (and the predictor's /score)."""
    record = transaction_payload(TransactionGenerator(seed=31).generate(index + 1)[index])
    record.update({"country": "US", "home_country": "US", "currency": "USD", "amount": 25.0})
    record.update({"amount_avg_30d": 30.0, "credit_limit": 1000.0, **changes})
    record.pop("is_fraud", None)
    return record


@dataclass
class ServiceApp:
    """One service's app and the example body of each of its writes (``(method, path)``)."""

    name: str
    app: FastAPI
    examples: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: Values for path parameters (default ``x``).
    path_values: dict[str, str] = field(default_factory=dict)
    #: Run before the request with the right role (e.g. create the alert to acknowledge).
    prepare: Callable[[], None] | None = None

    def url(self, path: str) -> str:
        for name, value in self.path_values.items():
            path = path.replace(f"{{{name}}}", value)
        return path.replace("{", "").replace("}", "")


def ingest_app() -> ServiceApp:
    from ingest.app import build_app
    from ingest.config import Settings
    from ingest.service import IngestService
    from tests.unit.test_ingest_api import FakePublisher

    health = {"kafka": CheckResult(True, "ok"), "schema_registry": CheckResult(True, "ok")}
    settings = Settings(max_batch_size=50, log_format="console")
    checks = {name: (lambda name=name: health[name]) for name in health}
    service = IngestService(settings, publisher=FakePublisher(), checks=checks)  # type: ignore[arg-type]
    now = datetime.now(UTC).isoformat()
    examples = {
        ("post", "/transactions"): transaction(),
        ("post", "/transactions/batch"): {"transactions": [transaction(0), transaction(1)]},
        ("post", "/interactions"): {"user_id": "u1", "item_id": "i1", "interaction_type": "view"},
        ("post", "/clicks"): {
            "user_id": "u1",
            "item_id": "i1",
            "recommendation_id": "r1",
            "strategy": "hybrid",
            "position": 0,
        },
        ("post", "/feedback/labels"): {
            "transaction_id": "t-1",
            "is_fraud": False,
            "label_source": "chargeback",
            "event_time": now,
        },
        ("post", "/feedback"): {"user_id": "u1", "feedback_type": "thumbs_up"},
    }
    return ServiceApp("ingest", build_app(settings, service=service), examples)


def predictor_app() -> ServiceApp:
    from predictor.app import build_app
    from predictor.config import Settings
    from predictor.service import PredictorService
    from tests.support.predictor_fakes import FakeRuntime, FakeSource

    settings = Settings(instance_id="unit", model_name="fraud_detector")
    source = FakeSource(aliases_={"champion": "1", "challenger": "2"})
    service = PredictorService(settings, source=source, runtime=FakeRuntime(settings))  # type: ignore[arg-type]
    service.holder.refresh("startup")
    score = transaction(transaction_id="t-score")
    return ServiceApp(
        "predictor",
        build_app(settings, service=service),
        {("post", "/model/refresh"): None, ("post", "/score"): score},
    )


def drift_detector_app(tmp_path: Path) -> ServiceApp:
    from drift_detector.app import build_app
    from drift_detector.config import Settings
    from drift_detector.reports import ReportStore
    from tests.unit.test_drift_reports import StubDetector, meta

    settings = Settings(reports_dir=tmp_path / "reports")
    reports = ReportStore(tmp_path / "reports", keep=10)
    reports.add(meta("ready1", status="ready"))
    reports.html_path("ready1").write_text("<html><body>report</body></html>")
    service = SimpleNamespace(
        settings=settings, runtime=SimpleNamespace(lifespan=None), detector=StubDetector(), reports=reports
    )
    app = build_app(settings, service=service)  # type: ignore[arg-type]
    return ServiceApp("drift_detector", app, path_values={"report_id": "ready1"})


def auto_responder_app() -> ServiceApp:
    from auto_responder.app import build_app
    from tests.unit.test_responder_service import Clock, FakeRegistry, make

    registry = FakeRegistry({"champion": "3", "previous_champion": "2", "challenger": "4"})
    responder, _producer, executors, _ = make(Clock(datetime.now(UTC)), registry)
    executors.gate.set()
    service = SimpleNamespace(
        settings=responder.settings, runtime=SimpleNamespace(lifespan=None), responder=responder
    )
    app = build_app(responder.settings, service=service)  # type: ignore[arg-type]
    return ServiceApp(
        "auto_responder",
        app,
        {("post", "/actions/promote"): {}, ("post", "/actions/rollback"): None},
    )


def recommender_app(tmp_path: Path) -> ServiceApp:
    from recommender.app import build_app
    from recommender.config import Settings
    from tests.unit.test_recommender_api import FakeBackend

    settings = Settings(data_dir=tmp_path / "recommender")
    app = build_app(settings, service=SimpleNamespace(settings=settings, lifespan=None))  # type: ignore[arg-type]
    app.state.recommender = FakeBackend()
    return ServiceApp("recommender", app, path_values={"item_id": "item-00000", "user_id": "u1"})


def alerter_app() -> ServiceApp:
    from alerter.app import build_app
    from alerter.config import Settings
    from tests.unit.test_alerter_api import AM_PAYLOAD, RecordingService, fire

    service = RecordingService(Settings(restore_lookback_s=0))

    fire(service, "A", f"k-{uuid.uuid4()}")
    return ServiceApp(
        "alerter",
        build_app(service.settings, service=service),
        {("post", "/alerts/{alert_id}/ack"): {"comment": "on it"}, ("post", "/alertmanager"): AM_PAYLOAD},
        path_values={"alert_id": "A"},
    )


@asynccontextmanager
async def _no_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield


def build_all(tmp_path: Path) -> dict[str, ServiceApp]:
    """Every service's app, by module name; none runs its lifespan (no Kafka loop, no heartbeat)."""
    apps = [
        ingest_app(),
        predictor_app(),
        drift_detector_app(tmp_path),
        auto_responder_app(),
        recommender_app(tmp_path),
        alerter_app(),
    ]
    for service in apps:
        # A client that runs lifespans (schemathesis' ASGI transport does) must not start the
        # services' Kafka loops: the fakes answer every request.
        service.app.router.lifespan_context = _no_lifespan
    return {service.name: service for service in apps}
