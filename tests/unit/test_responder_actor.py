"""Manual actions carry who asked for them into system.actions and the history."""

from __future__ import annotations

from datetime import UTC, datetime

import fastavro
from fastapi import FastAPI

from auto_responder.api import router
from auto_responder.model import Action, ActionRecord
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, load_catalogue
from mlops_platform.settings import PlatformSettings as Settings
from tests.support.keys import KeyedClient, identity, store
from tests.unit.test_responder_service import Clock, FakeRegistry, make


def test_a_manual_action_records_its_actor_and_automated_ones_none() -> None:
    responder, producer, executors, _ = make(
        Clock(datetime.now(UTC)), FakeRegistry({"champion": "3", "previous_champion": "2"})
    )
    executors.gate.set()
    record = responder.manual(Action.ROLLBACK, actor="operator:ops-1")
    assert record.actor == "operator:ops-1"
    published = producer.on(responder.settings.actions.topic)
    assert [event["actor"] for event in published] == ["operator:ops-1", "operator:ops-1"]  # started, outcome
    assert "by operator:ops-1" in published[0]["outcome"]
    # Read back (the history replay) it keeps the actor.
    assert ActionRecord.from_value(published[-1]).actor == "operator:ops-1"
    assert ActionRecord.from_value({**published[-1], "actor": None}).actor is None


def test_the_actor_fits_the_system_actions_contract() -> None:
    responder, producer, executors, _ = make(
        Clock(datetime.now(UTC)), FakeRegistry({"champion": "3", "previous_champion": "2"})
    )
    executors.gate.set()
    responder.manual(Action.ROLLBACK, actor="operator:ops-1")
    catalogue = load_catalogue(Settings().schemas_dir)
    schema = fastavro.parse_schema(catalogue.value_schema(Topic.SYSTEM_ACTIONS))
    for event in producer.on(responder.settings.actions.topic):
        fastavro.validation.validate(dict(event), schema, raise_errors=True)


def test_the_api_records_the_callers_identity() -> None:
    responder, producer, executors, _ = make(
        Clock(datetime.now(UTC)), FakeRegistry({"champion": "3", "previous_champion": "2"})
    )
    executors.gate.set()
    app = FastAPI()
    app.state.responder = responder
    app.state.key_store = store()
    app.include_router(router)
    with KeyedClient(app, "auto_responder") as client:
        response = client.post("/actions/rollback")
        assert response.status_code == 200, response.text
        assert response.json()["actor"] == identity(Role.OPERATOR)
        listed = client.get("/actions").json()["actions"]
        assert {a["actor"] for a in listed} == {identity(Role.OPERATOR)}
    assert all(e["actor"] == identity(Role.OPERATOR) for e in producer.on(responder.settings.actions.topic))
