"""The alerter app: platform app factory + :class:`AlerterService` + routes."""

from __future__ import annotations

from fastapi import FastAPI

from alerter.api import router
from alerter.config import Settings
from alerter.service import AlerterService
from mlops_platform.http import create_app

DESCRIPTION = """\
Turns `system.alerts` records and Alertmanager notifications into messages for people.

* **Routing** by severity, source and labels (`GET /routing`) to a generic webhook,
  a Slack-compatible webhook and e-mail (`GET /channels` says which are configured).
* **Dedup**: records with the same `dedup_key` within the cooldown are one alert;
  a `resolved` record closes it.
* **Escalation** while an alert is not acknowledged (`POST /alerts/{id}/ack`).
* Deliveries are asynchronous with retries and exponential backoff; they never hold
  the stream. Every attempt's outcome is in `GET /alerts/{id}`.
"""


def build_app(settings: Settings | None = None, *, service: AlerterService | None = None) -> FastAPI:
    settings = settings or Settings()
    service = service or AlerterService(settings)
    app = create_app(settings, title="alerter", description=DESCRIPTION, lifespan=service.lifespan)
    app.state.alerter = service
    app.include_router(router)
    return app
