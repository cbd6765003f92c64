"""HTTP API: alert history, acknowledgement, the Alertmanager webhook, channels and routing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from alerter.alertmanager import AlertmanagerWebhook
from alerter.engine import AlertAlreadyResolved, AlertNotFound
from alerter.models import Severity
from alerter.service import AlerterService
from mlops_platform.auth import Operator, Producer, Role, require
from mlops_platform.http import invalid_query

STATUSES = ("firing", "acknowledged", "resolved", "open")


def get_service(request: Request) -> AlerterService:
    service: AlerterService = request.app.state.alerter
    return service


ServiceDep = Annotated[AlerterService, Depends(get_service)]


class DeliveryPublic(BaseModel):
    id: int
    channel: str
    kind: str = Field(description="notify | reminder | escalation | resolved")
    escalation_level: int
    state: str = Field(description="pending | retrying | delivered | failed | skipped | replayed")
    attempts: int
    error: str | None
    queued_at: str
    finished_at: str | None


class AlertPublic(BaseModel):
    alert_id: str = Field(description="Id of the alert: the alert_id of the record that opened it.")
    dedup_key: str
    status: str = Field(description="firing | acknowledged | resolved")
    severity: str
    title: str
    message: str
    source: str
    labels: dict[str, str]
    opened_at: str
    last_seen_at: str
    resolved_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    ack_comment: str | None
    occurrences: int = Field(description="Records folded into this alert (the first one included).")
    duplicates: int = Field(description="Records not sent again (cooldown or already acknowledged).")
    routes: list[str]
    channels: list[str]
    escalation_policy: str | None
    escalation_level: int = Field(description="Escalation levels sent so far.")
    next_escalation_at: str | None
    alert_ids: list[str] = Field(description="alert_ids of every record folded in (lookups accept any).")
    event_id: str | None
    correlation_id: str | None
    related_event_id: str | None
    deliveries: list[DeliveryPublic]


class AckRequest(BaseModel):
    by: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A person taking the alert on behalf of the caller: recorded after the caller's "
        "identity (`<role>:<key name> (as <by>)`), never instead of it.",
    )
    comment: str | None = Field(None, max_length=2000)


class AckResponse(BaseModel):
    alert: AlertPublic
    changed: bool = Field(description="False when the alert was already acknowledged.")
    persisted: bool = Field(description="The acknowledgement was recorded on the alerts topic.")


class AlertmanagerResponse(BaseModel):
    received: int
    published: int = Field(description="Written to the alerts topic; delivered when consumed.")
    routed_directly: int = Field(description="Kafka refused them: routed in-process instead.")
    failed: int
    alert_ids: list[str]


# Reading needs a viewer key; acknowledging an operator key; Alertmanager's webhook a producer key.
router = APIRouter(tags=["alerts"], dependencies=[Depends(require(Role.VIEWER))])


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@router.get("/alerts", response_model=list[AlertPublic])
def list_alerts(
    service: ServiceDep,
    status_: Annotated[
        list[str] | None, Query(alias="status", description="firing, acknowledged, resolved, open")
    ] = None,
    severity: Annotated[list[str] | None, Query(description="INFO, LOW, MEDIUM, HIGH, CRITICAL")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Alert history, newest first, filtered by status and severity (repeat or comma-separate values)."""
    statuses = [s.lower() for s in _split(status_)]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise invalid_query(
            "status", unknown, f"unknown status {unknown}; use {list(STATUSES)}", list(STATUSES)
        )
    severities = [s.upper() for s in _split(severity)]
    bad = [s for s in severities if s not in Severity.__members__]
    if bad:
        allowed = list(Severity.__members__)
        raise invalid_query("severity", bad, f"unknown severity {bad}; use {allowed}", allowed)
    return service.engine.query(
        statuses=statuses or None, severities=[Severity[s] for s in severities] or None, limit=limit
    )


@router.get(
    "/alerts/{alert_id}", response_model=AlertPublic, responses={404: {"description": "Unknown alert"}}
)
def get_alert(alert_id: str, service: ServiceDep) -> dict[str, Any]:
    """One alert with its deliveries (any alert_id folded into it is accepted)."""
    alert = service.engine.get(alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id!r} in the history")
    return alert


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AckResponse,
    responses={404: {"description": "Unknown alert"}, 409: {"description": "Already resolved"}},
)
async def ack_alert(
    alert_id: str, service: ServiceDep, principal: Operator, body: AckRequest | None = None
) -> dict[str, Any]:
    """Acknowledge an alert: its escalation stops and repeats are no longer sent.

    `acknowledged_by` is the caller's identity (`<role>:<key name>`) from its API key.
    """
    body = body or AckRequest()
    by = principal.identity if body.by is None else f"{principal.identity} (as {body.by})"
    try:
        alert, changed, persisted = await service.acknowledge(alert_id, by, body.comment)
    except AlertNotFound:
        raise HTTPException(404, f"no alert {alert_id!r} in the history") from None
    except AlertAlreadyResolved:
        raise HTTPException(409, f"alert {alert_id!r} is already resolved") from None
    return {"alert": alert, "changed": changed, "persisted": persisted}


@router.post(
    "/alertmanager",
    response_model=AlertmanagerResponse,
    tags=["alertmanager"],
    responses={503: {"description": "Kafka refused the alerts and direct routing is disabled"}},
)
async def alertmanager_webhook(webhook: AlertmanagerWebhook, service: ServiceDep, _caller: Producer) -> Any:
    """Alertmanager webhook receiver (JSON version 4): every alert is routed like a system.alerts record.

    Alertmanager authenticates with a producer key (`http_config.authorization.credentials`).
    """
    outcome = await service.receive_alertmanager(webhook)
    body = {
        "received": outcome.received,
        "published": outcome.published,
        "routed_directly": outcome.routed_directly,
        "failed": outcome.failed,
        "alert_ids": outcome.alert_ids,
    }
    if outcome.failed:
        # Alertmanager retries a failed webhook: let it.
        return JSONResponse(
            body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "10"}
        )
    return body


@router.get("/channels", tags=["config"])
def channels(service: ServiceDep) -> dict[str, Any]:
    """Which channels are configured (disabled ones say which setting is missing)."""
    return {"channels": service.channels_view(), "pending_deliveries": service.dispatcher.pending}


@router.get("/routing", tags=["config"])
def routing(service: ServiceDep) -> dict[str, Any]:
    """The routing rules in force."""
    return service.routing.describe()
