"""The auto-responder's HTTP API over a responder with fakes (no Kafka, no MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI

from auto_responder.api import router
from mlops_platform.contracts import Topic
from tests.support.keys import KeyedClient, store
from tests.unit.test_responder_service import Clock, FakeRegistry, drift, make, wait_until


@pytest.fixture
def setup():
    clock = Clock(datetime.now(UTC))
    registry = FakeRegistry({"champion": "3", "challenger": "4"})
    responder, producer, executors, _ = make(clock, registry)
    executors.gate.set()
    app = FastAPI()
    app.state.responder = responder
    app.include_router(router)
    app.state.key_store = store()
    with KeyedClient(app, "auto_responder") as client:
        yield client, responder, clock, registry


def test_actions_history_with_filters(setup):
    client, responder, clock, _ = setup
    low = drift(clock, "LOW") | {"drift_score": 0.2}
    high = drift(clock, "HIGH")
    responder.handle(Topic.DATA_DRIFT_DETECTED, low)
    responder.handle(Topic.DATA_DRIFT_DETECTED, high)
    wait_until(lambda: not responder.in_progress())

    body = client.get("/actions").json()
    assert [(a["action"], a["status"]) for a in body["actions"]] == [
        ("retrain", "succeeded"),
        ("retrain", "started"),
        ("monitor", "succeeded"),
    ]
    assert body["success_ratio"] == 1.0 and body["running"] == []
    only = client.get("/actions", params={"trigger_event_id": low["envelope"]["event_id"]}).json()
    assert [a["action"] for a in only["actions"]] == ["monitor"]
    by_type = client.get(
        "/actions", params={"trigger_event_type": "data_drift_detected", "status": "started"}
    )
    assert by_type.json()["count"] == 1
    # A timestamp without zone is UTC.
    later = (clock.now + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert client.get("/actions", params={"since": later}).json()["count"] == 0
    action_id = body["actions"][0]["action_id"]
    records = client.get(f"/actions/{action_id}").json()["records"]
    assert [r["status"] for r in records] == ["started", "succeeded"]
    assert client.get("/actions/nope").status_code == 404


def test_rules_and_policies(setup):
    client, responder, clock, _ = setup
    responder.handle(Topic.DATA_DRIFT_DETECTED, drift(clock, "LOW") | {"drift_score": 0.2})
    rules = client.get("/rules").json()
    assert rules["rules"][0]["id"] == "data-drift"
    assert rules["severity"]["data_drift_detected"]["CRITICAL"] == {
        "drift_score": 0.8,
        "affected_features": 5,
    }
    policies = client.get("/policies/cooldowns").json()
    assert policies["cooldowns_s"]["rollback"] == 1800
    [active] = policies["active"]
    assert (active["event_type"], active["action"]) == ("data_drift_detected", "monitor")
    assert policies["dampening"] == {"max_responses": 3, "window_s": 3600.0, "responses": {}}
    assert policies["quiet_hours"]["enabled"] is False


def test_manual_promote_and_rollback(setup):
    client, _, _, registry = setup
    promoted = client.post("/actions/promote", json={"version": "4"})
    assert promoted.status_code == 200 and promoted.json()["status"] == "succeeded"
    assert registry.aliases == {"champion": "4", "previous_champion": "3"}
    again = client.post("/actions/promote", json={})  # no challenger left, nothing given
    assert again.status_code == 409 and again.json()["status"] == "failed"
    assert client.post("/actions/rollback").status_code == 200
    refused = client.post("/actions/rollback")
    assert refused.status_code == 409 and "previous_champion" in refused.json()["outcome"]
