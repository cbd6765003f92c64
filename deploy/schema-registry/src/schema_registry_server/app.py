"""FastAPI application: lifecycle, error format, health, readiness and metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from schema_registry_server import __version__
from schema_registry_server.api import COMPAT_PREFIX, MEDIA_TYPE, router
from schema_registry_server.auth import WriteAuth
from schema_registry_server.errors import RegistryError
from schema_registry_server.metrics import Metrics
from schema_registry_server.registry import RegistryCounts, SchemaRegistry
from schema_registry_server.settings import Settings
from schema_registry_server.store import KafkaSchemaLog, StorageError

log = structlog.get_logger(__name__)

# Probe and scrape endpoints are logged at debug level so they do not drown the request log.
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error_code": code, "message": message}, media_type=MEDIA_TYPE
    )


def bootstrap(schema_log: KafkaSchemaLog, registry: SchemaRegistry, timeout_seconds: float) -> None:
    """Create/verify the topic and replay it, retrying while Kafka is unreachable.

    Raises:
        StorageError: Kafka still unreachable after ``timeout_seconds``.
        TopicMisconfiguredError: immediately; retrying cannot fix a wrong topic.
    """
    deadline = time.monotonic() + timeout_seconds
    delay = 0.5
    while True:
        try:
            schema_log.ensure_topic()
            registry.load()
            return
        except StorageError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("kafka_unavailable_retrying", error=str(exc), retry_in_seconds=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def create_app(settings: Settings) -> FastAPI:
    """Build the ASGI app. Kafka is only contacted when the app starts (lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        schema_log = KafkaSchemaLog(
            settings.kafka_bootstrap_servers,
            settings.topic,
            replication_factor=settings.topic_replication_factor,
            timeout_seconds=settings.kafka_timeout_seconds,
            security=settings.kafka_security_config(),
        )
        registry = SchemaRegistry(schema_log, settings.default_compatibility)
        log.info(
            "schema_registry_starting",
            version=__version__,
            kafka=settings.kafka_bootstrap_servers,
            topic=settings.topic,
            default_compatibility=settings.default_compatibility.value,
            kafka_principal=settings.kafka_sasl_username,
            write_auth=settings.write_auth_enabled,
        )
        if not settings.write_auth_enabled:
            log.warning(
                "schema_registry_writes_unauthenticated",
                reason="SCHEMA_REGISTRY_AUTH_USERNAME/PASSWORD not set: anyone can register or delete",
            )
        try:
            await run_in_threadpool(bootstrap, schema_log, registry, settings.startup_timeout_seconds)
        except Exception as exc:
            # uvicorn logs the traceback itself ("Application startup failed").
            log.error("schema_registry_start_failed", topic=settings.topic, error=str(exc))
            await run_in_threadpool(schema_log.close)
            raise
        app.state.schema_log = schema_log
        app.state.registry = registry
        log.info("schema_registry_ready", host=settings.host, port=settings.port, topic=settings.topic)
        try:
            yield
        finally:
            # uvicorn runs this on SIGTERM/SIGINT after in-flight requests finish.
            app.state.registry = None
            await run_in_threadpool(schema_log.close)
            log.info("schema_registry_stopped")

    app = FastAPI(
        title="Local schema registry",
        version=__version__,
        description="Confluent-compatible schema registry for Avro, stored in a compacted Kafka topic.",
        lifespan=lifespan,
    )
    app.state.registry = None

    def counts() -> RegistryCounts | None:
        registry: SchemaRegistry | None = app.state.registry
        return registry.counts() if registry is not None and registry.loaded else None

    metrics = Metrics(counts)
    app.state.metrics = metrics

    app.include_router(router)
    # Same handlers under Apicurio's compatibility prefix; hidden from the OpenAPI document so each
    # operation is described once.
    app.include_router(router, prefix=COMPAT_PREFIX, include_in_schema=False)

    @app.exception_handler(RegistryError)
    async def registry_error(_request: Request, exc: RegistryError) -> JSONResponse:
        return _error(exc.http_status, exc.error_code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {message}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return _error(422, 422, f"Invalid request: {problems}")

    write_auth = WriteAuth(settings.auth_username, settings.auth_password)

    @app.middleware("http")
    async def authenticate_writes(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """State-changing requests need the registry's basic-auth credentials (401 otherwise)."""
        refusal = write_auth.refusal(request.method, request.url.path, request.headers.get("authorization"))
        if refusal is not None:
            log.warning("write_refused", method=request.method, path=request.url.path, reason=refusal)
            response = _error(401, 40101, refusal)
            response.headers["WWW-Authenticate"] = 'Basic realm="schema-registry"'
            return response
        return await call_next(request)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        except Exception:
            log.exception("request_failed", method=request.method, path=request.url.path)
            return _error(500, 500, "Internal server error")
        finally:
            elapsed = time.perf_counter() - started
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            metrics.requests.labels(request.method, endpoint, str(status)).inc()
            metrics.latency.labels(request.method, endpoint).observe(elapsed)
            emit = log.debug if request.url.path in _QUIET_PATHS else log.info
            emit(
                "http_request",
                method=request.method,
                path=request.url.path,
                endpoint=endpoint,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        """Liveness: the process answers HTTP."""
        return {"status": "UP"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        """Readiness: the log has been replayed, memory matches it and Kafka answers."""
        registry: SchemaRegistry | None = app.state.registry
        schema_log: KafkaSchemaLog | None = getattr(app.state, "schema_log", None)
        if registry is None or schema_log is None or not registry.loaded:
            return JSONResponse({"status": "DOWN", "reason": "schemas topic not loaded"}, status_code=503)
        if not registry.in_sync:
            return JSONResponse(
                {"status": "DOWN", "reason": "resynchronising with the schemas topic after a failed write"},
                status_code=503,
            )
        if not await run_in_threadpool(schema_log.ping):
            return JSONResponse({"status": "DOWN", "reason": "Kafka unreachable"}, status_code=503)
        return JSONResponse({"status": "UP", "topic": schema_log.topic, **asdict(registry.counts())})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """Prometheus exposition."""
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    return app
