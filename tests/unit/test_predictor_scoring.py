"""Micro-batch scoring and the exactly-once stream handler, with in-memory models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from fraud_model.features import FEATURE_NAMES, build_features
from mlops_platform.contracts import make_event
from mlops_platform.kafka import Record, RetryableError
from predictor.ab import ABRouter
from predictor.config import Settings
from predictor.holder import ModelHolder
from predictor.risk import RiskThresholds
from predictor.scoring import InvalidRequest, NoModelLoaded, PredictionHandler, ScoringEngine, event_time_ms
from tests.support.predictor_fakes import Emitted, FakeSource, emitted, fake_outbox
from tests.support.scoring import transactions


def engine_with(aliases: dict[str, str], share: float = 0.1) -> tuple[ScoringEngine, FakeSource]:
    source = FakeSource(aliases_=aliases)
    holder = ModelHolder(source)
    holder.refresh()
    return ScoringEngine(holder, ABRouter(share), RiskThresholds()), source


def handler_to(engine: ScoringEngine, completed_topic: str) -> PredictionHandler:
    """The handler as the service wires it: emitting with the predictor's ``completed`` binding."""
    return PredictionHandler(engine, Settings(completed_topic=completed_topic).completed)


def handle(handler: PredictionHandler, records: list[Record]) -> list[Emitted]:
    outbox = fake_outbox()
    handler(records, outbox)
    return emitted(outbox)


def record(txn: dict[str, Any], offset: int = 0, event_time: datetime | None = None) -> Record:
    value = make_event("test", txn, event_time=event_time)
    return Record("prediction.request", 0, offset, txn["transaction_id"].encode(), value, 0)


def test_one_predict_call_per_arm_with_that_arms_rows() -> None:
    engine, source = engine_with({"champion": "1", "challenger": "2"}, share=0.3)
    txns = transactions(200)
    predictions = engine.score(txns, "stream")
    router = ABRouter(0.3)
    expected_arms = router.arms(t["transaction_id"] for t in txns)
    assert [p.arm for p in predictions] == expected_arms
    challenger_rows = expected_arms.count("challenger")
    assert source.scorers["1"].calls == [200 - challenger_rows]
    assert source.scorers["2"].calls == [challenger_rows]
    for p in predictions:
        expected = (
            (0.5, "2", "challenger", "hold") if p.arm == "challenger" else (0.1, "1", "champion", "approve")
        )
        assert (p.fraud_probability, p.model.version, p.model.alias, p.risk_level) == expected


def test_features_are_the_model_inputs_in_contract_order() -> None:
    engine, _ = engine_with({"champion": "1"})
    txns = transactions(3)
    predictions = engine.score(txns, "stream")
    matrix = build_features(txns).astype(np.float64)
    for prediction, row in zip(predictions, matrix, strict=True):
        assert list(prediction.features) == FEATURE_NAMES
        np.testing.assert_array_equal(list(prediction.features.values()), row)


def test_no_model_is_a_retryable_failure() -> None:
    holder = ModelHolder(FakeSource(aliases_={}))
    holder.refresh()
    engine = ScoringEngine(holder, ABRouter(), RiskThresholds())
    with pytest.raises(NoModelLoaded) as caught:
        engine.score(transactions(1), "stream")
    assert isinstance(caught.value, RetryableError)


def test_handler_emits_complete_prediction_events() -> None:
    engine, _ = engine_with({"champion": "1", "challenger": "2"})
    handler = handler_to(engine, "prediction.completed")
    txns = transactions(50)
    sent = datetime.now(UTC) - timedelta(seconds=2)
    records = [record(t, i, event_time=sent) for i, t in enumerate(txns)]
    outputs = handle(handler, records)
    assert len(outputs) == len(records)
    for output, rec, txn in zip(outputs, records, txns, strict=True):
        value = output.value
        assert output.topic == "prediction.completed" and output.key == txn["transaction_id"]
        assert value["transaction_id"] == txn["transaction_id"] and value["account_id"] == txn["account_id"]
        assert value["request_event_id"] == rec.envelope["event_id"]
        assert value["envelope"]["causation_id"] == rec.envelope["event_id"]
        assert value["envelope"]["correlation_id"] == rec.envelope["correlation_id"]
        assert value["envelope"]["source"] == "predictor"
        assert value["model_name"] == "fraud_detector"
        assert value["ab_arm"] in {"champion", "challenger"}
        assert value["model_version"] == {"champion": "1", "challenger": "2"}[value["ab_arm"]]
        assert value["model_alias"] == value["ab_arm"]
        assert 2000 <= value["latency_ms"] < 60_000
        assert set(value["features"]) == set(FEATURE_NAMES)


def test_handler_rejects_a_request_without_transaction_id() -> None:
    engine, source = engine_with({"champion": "1"})
    bad = {**transactions(1)[0], "transaction_id": " "}
    with pytest.raises(InvalidRequest):
        handle(handler_to(engine, "out"), [record(transactions(1)[0]), record(bad, 1)])
    assert source.scorers["1"].calls == [], "nothing scored before the batch was validated"


def test_a_swap_between_batches_never_splits_a_batch() -> None:
    engine, source = engine_with({"champion": "1"})
    handler = handler_to(engine, "out")
    first = handle(handler, [record(t) for t in transactions(10)])
    source.aliases_ = {"champion": "3"}
    engine.holder.refresh()
    second = handle(handler, [record(t) for t in transactions(10)])
    assert {o.value["model_version"] for o in first} == {"1"}
    assert {o.value["model_version"] for o in second} == {"3"}


def test_event_time_in_milliseconds() -> None:
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    assert event_time_ms({"event_time": moment}) == moment.timestamp() * 1000
    assert event_time_ms({"event_time": 1_700_000_000_000}) == 1_700_000_000_000.0
    assert event_time_ms({}) is None
