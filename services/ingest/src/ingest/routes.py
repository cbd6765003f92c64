"""HTTP endpoints: validate, prepare, hand over to :class:`~ingest.service.IngestService`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, status
from fastapi.exceptions import RequestValidationError

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
from ingest.quality import event_time_warnings, transaction_warnings
from ingest.service import (
    CLICK,
    FEEDBACK,
    INTERACTION,
    LABEL,
    TRANSACTION,
    IngestService,
    Prepared,
    RecordKind,
)

#: Error type of a batch over INGEST_MAX_BATCH_SIZE (reported like pydantic's own errors).
BATCH_TOO_LARGE: Final = "batch_too_large"


def get_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


ServiceDep = Annotated[IngestService, Depends(get_service)]

_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "description": "Invalid record (field-level reasons); nothing was published, "
        "each problem was reported on data.quality.issues.",
    },
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "model": ErrorResponse,
        "description": "Kafka or the schema registry is unavailable; nothing was published.",
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


def _prepare_transaction(service: IngestService, txn: TransactionCreate, index: int) -> Prepared:
    # A client-supplied id is kept (labels refer to it later); otherwise we assign one.
    transaction_id = txn.transaction_id or str(uuid.uuid4())
    payload = _event_payload(txn)
    payload["transaction_id"] = transaction_id
    warnings = transaction_warnings(txn, transaction_id, index, service.settings, service.now())
    return Prepared(payload=payload, event_time=txn.event_time, warnings=warnings)


def _prepare(service: IngestService, kind: RecordKind, body: Any) -> Prepared:
    event_time = body.event_time
    record_id = getattr(body, kind.id_field) if kind.id_field else None
    warnings = event_time_warnings(
        kind.name, event_time, 0, service.settings, service.now(), record_id=record_id
    )
    return Prepared(payload=_event_payload(body), event_time=event_time, warnings=warnings)


@router.post(
    "/transactions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["fraud scoring"],
)
async def post_transaction(body: TransactionCreate, service: ServiceDep) -> IngestAccepted:
    """Submit one card transaction for fraud scoring (published to prediction.request)."""
    return await service.ingest(TRANSACTION, [_prepare_transaction(service, body, 0)])


@router.post(
    "/transactions/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["fraud scoring"],
)
async def post_transaction_batch(body: TransactionBatchCreate, service: ServiceDep) -> IngestAccepted:
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
    prepared = [_prepare_transaction(service, txn, index) for index, txn in enumerate(body.transactions)]
    return await service.ingest(TRANSACTION, prepared)


@router.post(
    "/interactions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["recommendations"],
)
async def post_interaction(body: InteractionCreate, service: ServiceDep) -> IngestAccepted:
    """Record a user's interaction with an item (published to business.user.interaction)."""
    return await service.ingest(INTERACTION, [_prepare(service, INTERACTION, body)])


@router.post(
    "/clicks",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["recommendations"],
)
async def post_click(body: ClickCreate, service: ServiceDep) -> IngestAccepted:
    """Record a click on a recommended item (published to business.recommendation.clicked)."""
    return await service.ingest(CLICK, [_prepare(service, CLICK, body)])


@router.post(
    "/feedback/labels",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["fraud scoring"],
)
async def post_label(body: LabelFeedbackCreate, service: ServiceDep) -> IngestAccepted:
    """Report the ground truth of a scored transaction (published to prediction.feedback)."""
    return await service.ingest(LABEL, [_prepare(service, LABEL, body)])


@router.post(
    "/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    tags=["recommendations"],
)
async def post_feedback(body: FeedbackCreate, service: ServiceDep) -> IngestAccepted:
    """Record a user's explicit feedback (published to business.feedback.received)."""
    return await service.ingest(FEEDBACK, [_prepare(service, FEEDBACK, body)])
