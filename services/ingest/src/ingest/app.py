"""The ingest app: platform app factory + runtime + publisher + routes, wired in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.config import Settings
from ingest.metrics import REQUESTS
from ingest.publishing import AcknowledgedPublisher, Publisher, TransactionalPublisher
from ingest.quality import issues_from_validation, record_count
from ingest.routes import ENDPOINTS, router
from ingest.service import (
    PUBLISH_FAILURES,
    DependencyGate,
    IngestService,
    ServiceUnavailable,
    unavailable_reason,
)
from mlops_platform.http import create_app
from mlops_platform.service import ServiceRuntime

DESCRIPTION = """\
HTTP front door of the event bus. Every accepted record becomes an Avro event on its
topic (transactions on `prediction.request`, labels on `prediction.feedback`, interactions,
clicks and feedback on the `business.*` topics), followed by a `data.ingested` summary.

* **202** — Kafka acknowledged every record (`acks=all`, one Kafka transaction per request);
  the body lists the event ids (and transaction ids, including server-assigned ones).
* **422** — a record is invalid: field-level reasons, nothing published, one
  `data.quality.issues` event per problem. Suspicious but valid values are accepted and
  returned as `warnings` (also published, with `rejected=false`).
* **503** — Kafka or the schema registry is unavailable: nothing published; retry later.
"""

RETRY_AFTER_S = "5"


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    endpoint = ENDPOINTS.get(_route_path(request))
    if endpoint is not None:
        service: IngestService = request.app.state.ingest
        issues = issues_from_validation(
            endpoint.kind.name,
            exc.errors(),
            exc.body,
            batch_field=endpoint.batch_field,
            id_field=endpoint.kind.id_field,
        )
        await service.reject(endpoint.kind, issues, record_count(exc.body, endpoint.batch_field))
    return await request_validation_exception_handler(request, exc)


async def _on_service_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceUnavailable)
    return _unavailable(exc.reason)


async def _on_platform_error(_request: Request, exc: Exception) -> JSONResponse:
    # Safety net: the service maps these itself, but none of them may ever become a 500.
    return _unavailable(unavailable_reason(exc))


class RequestMetrics:
    """Counts requests to the ingest endpoints by route, method and status (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = str(getattr(scope.get("route"), "path", scope.get("path", "")))
            if path in ENDPOINTS:
                REQUESTS.labels(path, scope.get("method", ""), str(status["code"])).inc()


def build_publisher(settings: Settings, runtime: ServiceRuntime) -> Publisher:
    if settings.transactional:
        return TransactionalPublisher(settings, runtime.serde, runtime.producer)
    return AcknowledgedPublisher(runtime, settings.publish_timeout_s)


def build_app(settings: Settings | None = None, *, service: IngestService | None = None) -> FastAPI:
    """The ingest FastAPI app.

    Without ``service`` the real Kafka runtime is wired (and started by the app's lifespan);
    tests pass an :class:`IngestService` built with fakes instead.
    """
    settings = settings or Settings()
    lifespan: Any = None
    if service is None:
        runtime = ServiceRuntime(settings)
        publisher = build_publisher(settings, runtime)
        runtime.on_stop(publisher.close)
        service = IngestService(settings, publisher, DependencyGate(runtime.checks))
        lifespan = runtime.lifespan
    app = create_app(settings, title="ingest", description=DESCRIPTION, lifespan=lifespan)
    app.state.ingest = service
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ServiceUnavailable, _on_service_unavailable)
    for error in PUBLISH_FAILURES:
        app.add_exception_handler(error, _on_platform_error)
    app.add_middleware(RequestMetrics)
    app.include_router(router)
    return app
