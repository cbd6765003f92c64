"""The predictor's ``data.processed`` windows: totals from the scoring handler, window boundaries,
and the event the reporter publishes (with in-memory models and a capturing producer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic, load_catalogue
from mlops_platform.metrics import platform_metrics
from predictor.ab import ABRouter
from predictor.config import Settings
from predictor.holder import ModelHolder
from predictor.processed import ProcessedReporter, ProcessedWindow, window_start
from predictor.risk import RiskThresholds
from predictor.scoring import InvalidRequest, PredictionHandler, ScoringEngine
from tests.support.predictor_fakes import FakeSource, emitted, fake_outbox
from tests.support.scoring import transactions
from tests.unit.test_predictor_scoring import record

T0 = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)


def scoring_handler(window: ProcessedWindow, share: float = 0.3) -> PredictionHandler:
    # FakeSource scores every row of version 1 at 0.1 (approve) and of version 2 at 0.5 (hold).
    holder = ModelHolder(FakeSource(aliases_={"champion": "1", "challenger": "2"}))
    holder.refresh()
    engine = ScoringEngine(holder, ABRouter(share), RiskThresholds())
    return PredictionHandler(engine, Settings().completed, window)


class CapturingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[Binding, dict[str, Any]]] = []

    def produce(self, target: Binding, value: dict[str, Any]) -> None:
        self.sent.append((target, value))


def test_the_window_counts_what_the_handler_scored_per_version_arm_and_level() -> None:
    window = ProcessedWindow(T0)
    handler = scoring_handler(window)
    sent_at = datetime.now(UTC) - timedelta(seconds=5)
    outputs = []
    for start in (0, 150):
        outbox = fake_outbox()
        handler(
            [record(t, event_time=sent_at) for t in transactions(150, seed=start, prefix=f"b{start}-")],
            outbox,
        )
        outputs += emitted(outbox)

    summary = window.close(T0 + timedelta(seconds=30))
    challenger = sum(o.value["ab_arm"] == "challenger" for o in outputs)
    assert 0 < challenger < 300
    assert summary["events"] == 300
    assert summary["by_model"] == [
        {
            "model_version": "1",
            "ab_arm": "champion",
            "events": 300 - challenger,
            "fraud_probability_mean": pytest.approx(0.1),
        },
        {
            "model_version": "2",
            "ab_arm": "challenger",
            "events": challenger,
            "fraud_probability_mean": pytest.approx(0.5),
        },
    ]
    assert summary["risk_levels"] == {
        "approve": 300 - challenger,
        "verify": 0,
        "hold": challenger,
        "block": 0,
    }
    assert summary["fraud_probability_mean"] == pytest.approx(
        (0.1 * (300 - challenger) + 0.5 * challenger) / 300
    )
    # Requests were sent 5 s before they were scored.
    assert 5000.0 <= summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    assert (summary["window_start"], summary["window_end"]) == (T0, T0 + timedelta(seconds=30))
    assert (summary["invalid"], summary["dead_letters"]) == (0, 0)


def test_an_invalid_request_counts_once_when_it_is_replayed_alone() -> None:
    window = ProcessedWindow(T0)
    handler = scoring_handler(window)
    good, bad = transactions(2)
    bad["transaction_id"] = " "
    # The loop first hands over the whole batch, then replays it record by record.
    with pytest.raises(InvalidRequest):
        handler([record(good), record(bad, 1)], fake_outbox())
    handler([record(good)], fake_outbox())
    with pytest.raises(InvalidRequest):
        handler([record(bad, 1)], fake_outbox())
    summary = window.close(T0 + timedelta(seconds=1))
    assert (summary["events"], summary["invalid"]) == (1, 1)


def test_closing_opens_an_empty_window_where_the_last_ended() -> None:
    window = ProcessedWindow(T0)
    handler = scoring_handler(window)
    handler([record(t) for t in transactions(10)], fake_outbox())
    first = window.close(T0 + timedelta(seconds=30))
    second = window.close(T0 + timedelta(seconds=90))
    assert first["events"] == 10
    assert second["window_start"] == first["window_end"]
    assert second["events"] == 0 and second["by_model"] == []
    assert second["fraud_probability_mean"] is None
    assert second["latency_p50_ms"] is None and second["latency_p99_ms"] is None


def test_windows_are_aligned_to_multiples_of_their_length() -> None:
    assert window_start(T0, 60) == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert window_start(T0, 7200) == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert window_start(T0, 30) == T0


def test_the_reporter_publishes_contract_events_with_the_dead_letters_of_its_window() -> None:
    settings = Settings(
        instance_id="p-1", model_name="fraud_x", processed_window_s=60, processed_topic="private.p"
    )
    producer = CapturingProducer()
    reporter = ProcessedReporter(settings, producer, clock=lambda: T0)  # type: ignore[arg-type,unused-ignore]
    assert reporter.next_boundary() == datetime(2026, 1, 5, 12, 1, tzinfo=UTC)  # the first window is partial

    platform_metrics().dead_letters.labels("predictor", "private.requests", "process").inc(2)
    reporter.window.add_invalid(2)
    first = reporter.publish(reporter.next_boundary())
    assert reporter.next_boundary() == datetime(2026, 1, 5, 12, 2, tzinfo=UTC)
    second = reporter.publish(reporter.next_boundary())

    schema = parse_schema(load_catalogue(settings.schemas_dir).value_schema(Topic.DATA_PROCESSED))
    for event in (first, second):
        assert validate(event, schema, raise_errors=True)
        assert (event["service"], event["instance_id"], event["model_name"]) == (
            "predictor",
            "p-1",
            "fraud_x",
        )
    assert (first["invalid"], first["dead_letters"]) == (2, 2)
    assert (second["invalid"], second["dead_letters"]) == (0, 0)
    assert (first["window_start"], first["window_end"]) == (T0, datetime(2026, 1, 5, 12, 1, tzinfo=UTC))
    assert [binding for binding, _ in producer.sent] == [settings.processed, settings.processed]
    assert settings.processed.topic == "private.p"
    assert settings.processed.key_of(first) == "p-1"
