"""HTTP endpoints (/model, /model/refresh, /score) and readiness, with an in-memory registry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mlops_platform.kafka import Guarantee
from predictor.app import build_app
from predictor.config import Settings
from predictor.service import PredictorService
from tests.support.keys import KeyedClient
from tests.support.predictor_fakes import FakeRuntime, FakeSource
from tests.support.scoring import transactions


@pytest.fixture
def source() -> FakeSource:
    return FakeSource(aliases_={"champion": "1", "challenger": "2"})


@pytest.fixture
def service(source: FakeSource) -> PredictorService:
    settings = Settings(instance_id="unit", model_name="fraud_detector")
    return PredictorService(settings, source=source, runtime=FakeRuntime(settings))  # type: ignore[arg-type]


@pytest.fixture
def client(service: PredictorService) -> Iterator[TestClient]:
    yield KeyedClient(build_app(service.settings, service=service), "predictor")


def test_model_shows_what_serves(client: TestClient, service: PredictorService) -> None:
    assert client.get("/model").json()["serving"] is False
    service.holder.refresh("startup")
    body = client.get("/model").json()
    assert body["serving"] is True and body["ab_active"] is True
    assert body["champion"]["version"] == "1" and body["champion"]["run_id"] == "run-1"
    assert body["challenger"]["version"] == "2" and body["challenger"]["alias"] == "challenger"
    assert body["challenger_share"] == 0.1
    assert body["risk_thresholds"] == {"verify": 0.18, "hold": 0.4, "block": 0.65}
    assert body["registry"]["registry_aliases"] == {"champion": "1", "challenger": "2"}
    assert body["model_events"]["group_id"].startswith("predictor-model-events-unit-")


def test_refresh_follows_the_aliases(
    client: TestClient, service: PredictorService, source: FakeSource
) -> None:
    service.holder.refresh()
    source.aliases_ = {"champion": "3"}
    body = client.post("/model/refresh").json()
    assert body["champion"]["version"] == "3" and body["challenger"] is None
    assert body["registry"]["last_trigger"] == "http"


def test_score_uses_the_stream_code_path(client: TestClient, service: PredictorService) -> None:
    (txn,) = transactions(1)
    assert client.post("/score", json=txn).status_code == 503, "no model loaded yet"
    service.holder.refresh()
    response = client.post("/score", json=txn)
    assert response.status_code == 200, response.text
    body = response.json()
    arm = service.router.arm(txn["transaction_id"])
    assert body["ab_arm"] == arm
    assert body["model_version"] == {"champion": "1", "challenger": "2"}[arm]
    assert body["risk_level"] == {"champion": "approve", "challenger": "hold"}[arm]
    assert len(body["features"]) == 31


def test_score_validates_types(client: TestClient, service: PredictorService) -> None:
    service.holder.refresh()
    (txn,) = transactions(1)
    response = client.post("/score", json={**txn, "amount": "a lot", "transaction_id": ""})
    assert response.status_code == 422
    fields = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert {("body", "amount"), ("body", "transaction_id")} <= fields


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("amount", 1e308, "less than or equal"),
        ("ip_risk_score", 7.5, "less than or equal"),
        ("customer_age", 3, "greater than or equal"),
        ("channel", "carrier-pigeon", "unknown channel"),
        ("country", "usa", "ISO 3166-1"),
        ("txn_count_1h", 50, "at least txn_count_1h"),
    ],
)
def test_score_refuses_what_ingest_refuses(
    client: TestClient, service: PredictorService, field: str, value: object, reason: str
) -> None:
    # The same bounds and vocabularies as ingest's door: an out-of-contract value is a 422
    # naming the field, never a score computed on a feature the model never saw.
    service.holder.refresh()
    (txn,) = transactions(1)
    body = {**txn, field: value}
    if field == "txn_count_1h":
        body["txn_count_24h"] = 10
    response = client.post("/score", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert reason in error["msg"]
    assert error["loc"][-1] in {field, "txn_count_24h"}


def test_readiness_needs_a_model_but_tolerates_a_stale_one(
    service: PredictorService, source: FakeSource
) -> None:
    check = service.model_check()
    assert not check.ok and "no model" in check.detail
    service.holder.refresh()
    assert service.model_check().ok
    source.down = True
    service.holder.refresh()
    check = service.model_check()
    assert check.ok and "stale since" in check.detail and "connection refused" in check.detail


def test_each_process_listens_to_deployments_in_its_own_group(source: FakeSource) -> None:
    settings = Settings(instance_id="same")
    first, second = (
        PredictorService(settings, source=source, runtime=FakeRuntime(settings))  # type: ignore[arg-type]
        for _ in range(2)
    )
    assert first.events_group_id != second.events_group_id
    scoring, events = first.runtime.loops  # type: ignore[attr-defined]
    assert (scoring.group_id, scoring.topics) == ("predictor", ["prediction.request"])
    assert scoring.guarantee is Guarantee.EXACTLY_ONCE
    assert scoring.options["transactional_id"] == "predictor-same", "stable per instance"
    assert scoring.options["dead_letter_topic"] == "dlq.predictor"
    assert [b.schema_topic for b in scoring.inputs] == [None], "catalogue topics need no contract mapping"
    assert (events.group_id, events.topics) == (first.events_group_id, ["model.deployed"])
    assert events.guarantee is Guarantee.AT_LEAST_ONCE
    assert events.options["consumer_overrides"]["auto.offset.reset"] == "latest"


def test_private_topics_carry_the_catalogue_contracts(source: FakeSource) -> None:
    settings = Settings(request_topic="test.req", completed_topic="test.out", group_id="g")
    service = PredictorService(settings, source=source, runtime=FakeRuntime(settings))  # type: ignore[arg-type]
    scoring = service.runtime.loops[0]  # type: ignore[attr-defined]
    assert scoring.group_id == "g"
    assert {b.topic: b.schema_topic for b in scoring.inputs} == {"test.req": "prediction.request"}
    completed = scoring.handler.completed
    assert {completed.topic: completed.schema_topic} == {"test.out": "prediction.completed"}


def test_the_refresher_retries_at_the_short_interval_once_stale(source: FakeSource) -> None:
    settings = Settings(model_refresh_interval_s=3600, model_retry_interval_s=0.2)
    service = PredictorService(settings, source=source, runtime=FakeRuntime(settings))  # type: ignore[arg-type]
    service.holder.refresh("startup")
    service._start_refresher()
    try:
        source.down = True
        source.aliases_ = {"champion": "3"}
        service.holder.refresh("model.deployed")  # fails: stale, still serving v1
        assert service.holder.status.stale
        source.down = False
        deadline = time.monotonic() + 30
        while service.holder.serving is not None and service.holder.serving.versions != {"champion": "3"}:
            assert time.monotonic() < deadline, "the refresher never retried"
            time.sleep(0.05)
        assert service.holder.status.last_trigger == "periodic" and not service.holder.status.stale
    finally:
        service._stop_refresher()
