"""HTTP API: the decision history, the rule table, the policies, and manual actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from auto_responder.model import Action, Status
from auto_responder.responder import Responder
from mlops_platform.auth import Operator, Role, require

# Reading needs a viewer key; the manual actions an operator key.
router = APIRouter(tags=["auto-responder"], dependencies=[Depends(require(Role.VIEWER))])


def get_responder(request: Request) -> Responder:
    responder: Responder = request.app.state.responder
    return responder


ResponderDep = Annotated[Responder, Depends(get_responder)]


class PromoteRequest(BaseModel):
    version: str | None = Field(None, description="Version to promote (default: the current @challenger).")


@router.get("/actions")
def list_actions(
    responder: ResponderDep,
    action: Annotated[
        str | None, Query(description="retrain | promote | rollback | scale | alert | monitor")
    ] = None,
    status: Annotated[str | None, Query(description="started | succeeded | failed | suppressed")] = None,
    trigger_event_type: Annotated[
        str | None,
        Query(description="Topic (data.drift.detected, ...) or event type (data_drift_detected, ...)"),
    ] = None,
    trigger_event_id: str | None = None,
    rule_id: str | None = None,
    action_id: str | None = None,
    since: Annotated[datetime | None, Query(description="ISO timestamp: records at or after it")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> dict[str, Any]:
    """Decision history, newest first (replayed from system.actions at start, capped)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a timestamp without zone is read as UTC
    records = responder.history.query(
        action=action,
        status=status,
        trigger_event_type=trigger_event_type,
        trigger_event_id=trigger_event_id,
        rule_id=rule_id,
        action_id=action_id,
        since=since,
        limit=limit,
    )
    return {
        "count": len(records),
        "success_ratio": responder.history.success_ratio(responder.clock()),
        "running": responder.running(),
        "actions": [record.public() for record in records],
    }


@router.get("/actions/{action_id}")
def get_action(action_id: str, responder: ResponderDep) -> dict[str, Any]:
    """Every record of one action (started, then its outcome), oldest first."""
    records = responder.history.query(action_id=action_id, limit=100)
    if not records:
        raise HTTPException(404, f"no action {action_id} in the history")
    return {"action_id": action_id, "records": [r.public() for r in reversed(records)]}


@router.get("/rules")
def get_rules(responder: ResponderDep) -> dict[str, Any]:
    """The rule table in force (event type x severity -> action, re-assessment thresholds)."""
    return responder.rules.public()


@router.get("/policies/cooldowns")
def get_cooldowns(responder: ResponderDep) -> dict[str, Any]:
    """Configured cooldowns, the ones running now, dampening and quiet hours."""
    return responder.policy_view()


@router.get("/services")
def get_services(responder: ResponderDep) -> dict[str, Any]:
    """Services seen on system.health: live instances, silence, failed state."""
    return {"heartbeat_timeout_s": responder.settings.heartbeat_timeout_s, "services": responder.services()}


@router.get("/availability")
def get_availability(responder: ResponderDep) -> dict[str, Any]:
    """Availability per service and instance over the sliding period, measured from heartbeats.

    The share of the expected heartbeat intervals in which a healthy heartbeat arrived
    (``ratio`` is null for a service nothing was expected from yet).
    """
    return {
        "period_s": responder.settings.availability_period_s,
        "services": {str(row["service"]): row["availability"] for row in responder.services()},
    }


def _manual_response(record: Any) -> JSONResponse:
    code = 200 if record.status == Status.SUCCEEDED.value else 409
    return JSONResponse(record.public(), status_code=code)


@router.post(
    "/actions/promote",
    responses={409: {"description": "The promotion failed or was not needed (see outcome)."}},
)
async def promote(
    responder: ResponderDep, principal: Operator, body: PromoteRequest | None = None
) -> JSONResponse:
    """Promote a version (default @challenger) to @champion, as an automated promote would.

    The caller's identity is recorded as the action's ``actor`` on system.actions.
    """
    version = body.version if body else None
    record = await run_in_threadpool(responder.manual, Action.PROMOTE, version, actor=principal.identity)
    return _manual_response(record)


@router.post(
    "/actions/rollback",
    responses={409: {"description": "The rollback failed (e.g. no @previous_champion)."}},
)
async def rollback(responder: ResponderDep, principal: Operator) -> JSONResponse:
    """Point @champion back at @previous_champion, as an automated rollback would.

    The caller's identity is recorded as the action's ``actor`` on system.actions.
    """
    record = await run_in_threadpool(responder.manual, Action.ROLLBACK, actor=principal.identity)
    return _manual_response(record)
