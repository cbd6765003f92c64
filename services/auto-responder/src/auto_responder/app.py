"""The auto-responder's HTTP face: the platform app with the service's routes."""

from __future__ import annotations

from fastapi import FastAPI

from auto_responder.api import router
from auto_responder.config import Settings
from auto_responder.service import AutoResponderService
from mlops_platform.http import create_app

DESCRIPTION = """\
Reacts to the platform's own events without a human: drift, quality degradation, won
A/B evaluations, overload and failing services become **retrain**, **promote**,
**rollback**, **scale**, **alert** or **monitor** actions.

* The rule table (`GET /rules`) maps event type x re-assessed severity to an action.
* Policies (`GET /policies/cooldowns`): cooldown per (event type, action), dampening,
  quiet hours, one retrain at a time.
* Every decision and its outcome is an event on `system.actions` (`GET /actions`), with
  the triggering event's id; events an action publishes carry it as their cause.
* Operators can promote or roll back by hand (`POST /actions/promote`,
  `POST /actions/rollback`): same executors, same records.
"""


def build_app(settings: Settings | None = None, *, service: AutoResponderService | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (built from ``settings`` when not given)."""
    service = service or AutoResponderService(settings or Settings())
    app = create_app(
        service.settings, title="auto-responder", description=DESCRIPTION, lifespan=service.runtime.lifespan
    )
    app.state.responder = service.responder
    app.include_router(router)
    return app
