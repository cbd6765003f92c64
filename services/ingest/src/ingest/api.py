"""HTTP endpoints: validate, prepare, hand over to :class:`~ingest.ingestion.Ingestor`.

Besides the router: the 422 handler (which reports the refused request's quality
issues), the 503 handlers and the per-endpoint request counter, installed on the app by
:func:`install`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.ingestion import (
    CLICK,
    FEEDBACK,
    INTERACTION,
    LABEL,
    PUBLISH_FAILURES,
    TRANSACTION,
    Ingestor,
    Prepared,
    RecordKind,
    ServiceUnavailable,
    unavailable_reason,
)
from ingest.limits import IdempotencyConflict, RateLimiter, fingerprint
from ingest.metrics import RECORDS_REJECTED, REQUESTS
from ingest.models import (
    ClickCreate,
    ErrorResponse,
    FeedbackCreate,
    IngestAccepted,
    InteractionCreate,
    LabelFeedbackCreate,
    TransactionBatchCreate,
    TransactionCreate,
)
from ingest.quality import event_time_warnings, issues_from_validation, record_count, transaction_warnings
from ingest.service import IngestService
from mlops_platform.auth import Principal, Producer
from mlops_platform.logs import get_logger

log = get_logger(__name__)

#: Error type of a batch over INGEST_MAX_BATCH_SIZE (reported like pydantic's own errors).
BATCH_TOO_LARGE: Final = "batch_too_large"


RETRY_AFTER_S: Final = "5"


def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = request.app.state.ingest.ingestor
    return ingestor


ServiceDep = Annotated[Ingestor, Depends(get_ingestor)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes the request safe to retry: the same key and body answer the first 202 "
        "again without publishing; another body with the same key is refused (422).",
    ),
]

_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "description": "Invalid record (field-level reasons); nothing was published, "
        "each problem was reported on data.quality.issues.",
    },
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "model": ErrorResponse,
        "description": "Kafka or the schema registry is unavailable; nothing was published.",
    },
    status.HTTP_413_CONTENT_TOO_LARGE: {"description": "The body is over INGEST_MAX_BODY_BYTES."},
    status.HTTP_429_TOO_MANY_REQUESTS: {
        "model": ErrorResponse,
        "description": "The API key's quota is spent; nothing was published. "
        "Retry after Retry-After seconds.",
    },
}


class Endpoint:
    """An ingest endpoint: its path and record kind (used by the 422 handler)."""

    def __init__(self, path: str, kind: RecordKind, batch_field: str | None = None) -> None:
        self.path = path
        self.kind = kind
        self.batch_field = batch_field


ENDPOINTS: Final[dict[str, Endpoint]] = {
    e.path: e
    for e in (
        Endpoint("/transactions", TRANSACTION),
        Endpoint("/transactions/batch", TRANSACTION, batch_field="transactions"),
        Endpoint("/interactions", INTERACTION),
        Endpoint("/clicks", CLICK),
        Endpoint("/feedback/labels", LABEL),
        Endpoint("/feedback", FEEDBACK),
    )
}

router = APIRouter(responses=_RESPONSES)


def _event_payload(body: Any, *, exclude: set[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = body.model_dump(exclude={"event_time", *(exclude or set())})
    return payload


def _prepare_transaction(service: Ingestor, txn: TransactionCreate, index: int) -> Prepared:
    # A client-supplied id is kept (labels refer to it later); otherwise we assign one.
    transaction_id = txn.transaction_id or str(uuid.uuid4())
    payload = _event_payload(txn)
    payload["transaction_id"] = transaction_id
    warnings = transaction_warnings(txn, transaction_id, index, service.settings, service.now())
    return Prepared(payload=payload, event_time=txn.event_time, warnings=warnings)


def _prepare(service: Ingestor, kind: RecordKind, body: Any) -> Prepared:
    event_time = body.event_time
    record_id = getattr(body, kind.id_field) if kind.id_field else None
    warnings = event_time_warnings(
        kind.name, event_time, 0, service.settings, service.now(), record_id=record_id
    )
    return Prepared(payload=_event_payload(body), event_time=event_time, warnings=warnings)


async def _admit(
    request: Request,
    principal: Principal,
    kind: RecordKind,
    body: Any,
    idempotency_key: str | None,
    prepare: Callable[[], list[Prepared]],
    count: int = 1,
) -> Any:
    """Quota and idempotency around one request of ``count`` records, which ``prepare`` makes."""
    service: IngestService = request.app.state.ingest
    owner = principal.name
    if idempotency_key is not None:
        print_ = fingerprint(_route_path(request), body.model_dump(mode="json"))
        try:
            stored = await service.idempotency.begin(owner, idempotency_key, print_)
        except IdempotencyConflict:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "this Idempotency-Key was already used with a different request; use a new key",
            ) from None
        if stored is not None:
            log.info("ingest_replayed", record_type=kind.name, records=count, caller=principal.identity)
            return JSONResponse(stored, status_code=202, headers={"Idempotent-Replayed": "true"})
    try:
        wait_s = service.quota.take(owner, count)
        if wait_s > 0:
            RECORDS_REJECTED.labels(kind.name, "rate_limited").inc(count)
            log.info("ingest_rate_limited", record_type=kind.name, records=count, caller=principal.identity)
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"quota of key {owner!r} spent: {service.settings.rate_limit_per_s:g} records/s, "
                f"bursts of {service.settings.rate_limit_burst:g}; nothing was published",
                headers={"Retry-After": RateLimiter.retry_after(wait_s)},
            )
        accepted = await service.ingestor.ingest(kind, prepare(), principal.name)
    except BaseException:
        if idempotency_key is not None:
            service.idempotency.abandon(owner, idempotency_key)
        raise
    if idempotency_key is not None:
        service.idempotency.finish(owner, idempotency_key, accepted.model_dump(mode="json"))
    return accepted


@router.post(
    "/transactions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["fraud scoring"],
)
async def post_transaction(
    body: TransactionCreate,
    service: ServiceDep,
    principal: Producer,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Submit one card transaction for fraud scoring (published to prediction.request)."""
    return await _admit(
        request,
        principal,
        TRANSACTION,
        body,
        idempotency_key,
        lambda: [_prepare_transaction(service, body, 0)],
    )


@router.post(
    "/transactions/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["fraud scoring"],
)
async def post_transaction_batch(
    body: TransactionBatchCreate,
    service: ServiceDep,
    principal: Producer,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Submit a batch of transactions, published all together or not at all."""
    limit = service.settings.max_batch_size
    if len(body.transactions) > limit:
        raise RequestValidationError(
            [
                {
                    "type": BATCH_TOO_LARGE,
                    "loc": ("body", "transactions"),
                    "msg": f"a batch holds at most {limit} transactions, got {len(body.transactions)}",
                    "input": None,
                    "ctx": {"max_batch_size": limit},
                }
            ],
            body={"transactions": [t.model_dump(include={"transaction_id"}) for t in body.transactions]},
        )

    def prepare() -> list[Prepared]:
        return [_prepare_transaction(service, txn, index) for index, txn in enumerate(body.transactions)]

    return await _admit(
        request, principal, TRANSACTION, body, idempotency_key, prepare, len(body.transactions)
    )


@router.post(
    "/interactions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["recommendations"],
)
async def post_interaction(
    body: InteractionCreate,
    service: ServiceDep,
    principal: Producer,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Record a user's interaction with an item (published to business.user.interaction)."""
    return await _admit(
        request, principal, INTERACTION, body, idempotency_key, lambda: [_prepare(service, INTERACTION, body)]
    )


@router.post(
    "/clicks",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["recommendations"],
)
async def post_click(
    body: ClickCreate,
    service: ServiceDep,
    principal: Producer,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Record a click on a recommended item (published to business.recommendation.clicked)."""
    return await _admit(
        request, principal, CLICK, body, idempotency_key, lambda: [_prepare(service, CLICK, body)]
    )


@router.post(
    "/feedback/labels",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["fraud scoring"],
)
async def post_label(
    body: LabelFeedbackCreate,
    service: ServiceDep,
    principal: Producer,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Report the ground truth of a scored transaction (published to prediction.feedback)."""
    return await _admit(
        request, principal, LABEL, body, idempotency_key, lambda: [_prepare(service, LABEL, body)]
    )


@router.post(
    "/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["recommendations"],
)
async def post_feedback(
    body: FeedbackCreate,
    service: ServiceDep,
    principal: Producer,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Record a user's explicit feedback (published to business.feedback.received)."""
    return await _admit(
        request, principal, FEEDBACK, body, idempotency_key, lambda: [_prepare(service, FEEDBACK, body)]
    )


# --------------------------------------------------------------------------- errors and metrics


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    endpoint = ENDPOINTS.get(_route_path(request))
    if endpoint is not None:
        issues = issues_from_validation(
            endpoint.kind.name,
            exc.errors(),
            exc.body,
            batch_field=endpoint.batch_field,
            id_field=endpoint.kind.id_field,
        )
        count = record_count(exc.body, endpoint.batch_field)
        await get_ingestor(request).reject(endpoint.kind, issues, count)
    return await request_validation_exception_handler(request, exc)


async def _on_service_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceUnavailable)
    return _unavailable(exc.reason)


async def _on_platform_error(_request: Request, exc: Exception) -> JSONResponse:
    # Safety net: the ingestor maps these itself, but none of them may ever become a 500.
    return _unavailable(unavailable_reason(exc))


class RequestMetrics:
    """Counts requests to the ingest endpoints by route, method and status (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = str(getattr(scope.get("route"), "path", scope.get("path", "")))
            if path in ENDPOINTS:
                REQUESTS.labels(path, scope.get("method", ""), str(response["status"])).inc()


def install(app: FastAPI) -> None:
    """Add the routes, the 422/503 handlers and the request counter to ``app``."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ServiceUnavailable, _on_service_unavailable)
    for error in PUBLISH_FAILURES:
        app.add_exception_handler(error, _on_platform_error)
    app.add_middleware(RequestMetrics)
    app.include_router(router)
