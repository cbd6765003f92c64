"""The auto-responder app: runtime, responder and routes, wired in one place."""

from __future__ import annotations

from fastapi import FastAPI

from auto_responder.api import router
from auto_responder.config import Settings
from auto_responder.responder import Responder
from mlops_platform.health import CheckResult, mlflow_check
from mlops_platform.http import create_app
from mlops_platform.service import ServiceRuntime

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


def build_app(settings: Settings | None = None, *, responder: Responder | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(settings)
    responder = responder or Responder(settings, runtime.producer, runtime.serde)
    runtime.on_start(responder.start)
    runtime.on_stop(responder.stop)
    runtime.consumer_loop(
        topics=list(settings.trigger_topics),
        handler=responder.handle_batch,
        group_id=settings.consumer_group,
        schema_topics=settings.trigger_topics,
        batch_size=100,
    )
    runtime.checks["mlflow"] = mlflow_check(settings)

    def history_check() -> CheckResult:
        if not responder.restored.is_set():
            return CheckResult(False, "replaying system.actions")
        return CheckResult(True, f"{len(responder.history.records())} decisions in memory")

    runtime.checks["history"] = history_check

    def heartbeat_details() -> dict[str, str]:
        return {
            "consumer_lag": str(runtime.lag()),
            "actions_in_progress": str(len(responder.running())),
            "model_name": settings.model_name,
        }

    runtime.heartbeat_details = heartbeat_details
    app = create_app(settings, title="auto-responder", description=DESCRIPTION, lifespan=runtime.lifespan)
    app.state.responder = responder
    app.include_router(router)
    return app
