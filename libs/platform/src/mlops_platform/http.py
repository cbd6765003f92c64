"""FastAPI app factory: lifespan, liveness, readiness and metrics for every service.

``/health`` answers while the process lives; ``/ready`` answers 200 only when every
readiness check passes (Kafka, schema registry and whatever the service adds, such
as "a model is loaded" or "the consumer loop is running"), 503 with the failing
checks otherwise; ``/metrics`` exposes the process's Prometheus registry.

Everything else a service adds is protected by API keys (:mod:`mlops_platform.auth`):
the app factory loads the configured keys (``API_KEYS`` / ``API_KEYS_FILE``) into
``app.state.key_store`` and routes declare the role they need (``Viewer``, ``Producer``,
``Operator``). ``/health``, ``/ready``, ``/metrics``, ``/docs`` and ``/openapi.json`` stay
open: probes, scrapers and readers of the API's description need no key. Request bodies
are limited (``max_body_size``, 1 MiB unless the service says otherwise): a larger one is
answered 413 before it is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlops_platform import __version__
from mlops_platform.auth import KeyStore
from mlops_platform.health import Check, kafka_check, registry_check, run_checks
from mlops_platform.logs import configure_logging, get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.settings import ServiceSettings

log = get_logger(__name__)

#: Largest request body a service accepts unless it says otherwise (413 above it).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def default_checks(settings: ServiceSettings) -> dict[str, Check]:
    """Kafka and schema registry reachability: every service needs both."""
    return {"kafka": kafka_check(settings), "schema_registry": registry_check(settings)}


def create_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str = "",
    lifespan: Lifespan | None = None,
    version: str = __version__,
    max_body_size: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """Build a service's FastAPI app with the platform endpoints.

    The service adds readiness checks with ``app.state.checks[name] = check`` (usually
    inside its lifespan) and its own routers with ``app.include_router``.
    """
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform_metrics().service_info.labels(settings.service_name, settings.instance_id, version).set(1)
        log.info("service_starting", http_port=settings.http_port, instance=settings.instance_id)
        if lifespan is None:
            yield
        else:
            async with lifespan(app):
                yield
        log.info("service_stopped")

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=app_lifespan,
        max_body_size=max_body_size,
    )
    app.state.settings = settings
    app.state.checks = default_checks(settings)
    app.state.key_store = KeyStore.load(settings.api_keys, settings.api_keys_file)
    if not app.state.key_store.entries:
        log.warning("no_api_keys", detail="no API key configured: every protected endpoint answers 401")

    @app.get("/health", tags=["platform"])
    async def health() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok", "service": settings.service_name, "instance": settings.instance_id}

    @app.get("/ready", tags=["platform"])
    async def ready() -> JSONResponse:
        """Readiness: every dependency and internal component is usable."""
        results = await run_in_threadpool(run_checks, settings.service_name, dict(app.state.checks))
        ok = all(r.ok for r in results.values())
        body: dict[str, Any] = {
            "ready": ok,
            "service": settings.service_name,
            "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["platform"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def invalid_query(name: str, value: Any, message: str, allowed: Any = None) -> RequestValidationError:
    """A 422 about query parameter ``name`` shaped like FastAPI's own (as the documented schema says)."""
    error: dict[str, Any] = {"type": "value_error", "loc": ("query", name), "msg": message, "input": value}
    if allowed is not None:
        error["ctx"] = {"allowed": allowed}
    return RequestValidationError([error])


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app with uvicorn; SIGTERM/SIGINT trigger the lifespan shutdown."""
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)
