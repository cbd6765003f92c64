"""Availability per service and instance from heartbeats, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from auto_responder.api import router
from auto_responder.watcher import Availability, HeartbeatWatcher
from mlops_platform.contracts import Topic
from tests.support.keys import KeyedClient, store
from tests.unit.test_responder_service import Clock, FakeRegistry, make
from tests.unit.test_responder_watcher import beat

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def beats(tracker: Availability, service: str, instance: str, times: range, healthy: bool = True) -> None:
    for second in times:
        tracker.observe(service, instance, at(second), healthy, 10.0)


def test_regular_healthy_beats_are_fully_available_even_when_a_little_late() -> None:
    tracker = Availability(period_s=600, default_interval_s=10)
    # Every 12 s instead of 10: within the slack of half an interval.
    beats(tracker, "predictor", "p1", range(0, 600, 12))
    assert tracker.service_ratio("predictor", at(600)) == pytest.approx(1.0)
    assert tracker.instance_ratio("predictor", "p1", at(600)) == pytest.approx(1.0)


def test_silence_and_degraded_beats_count_as_unavailable() -> None:
    tracker = Availability(period_s=1000, default_interval_s=10)
    beats(tracker, "predictor", "p1", range(0, 300, 10))  # healthy 0..300
    # Silent from 300 to 500, then degraded from 500 to 700, then healthy to 1000.
    beats(tracker, "predictor", "p1", range(500, 700, 10), healthy=False)
    beats(tracker, "predictor", "p1", range(700, 1000, 10))
    # Covered: [0, 305) (the beat at 290 covers its interval and slack) + [700, 1000).
    assert tracker.service_ratio("predictor", at(1000)) == pytest.approx(0.605)


def test_a_silent_tail_counts_once_the_expected_interval_and_its_slack_passed() -> None:
    tracker = Availability(period_s=3600, default_interval_s=10)
    beats(tracker, "alerter", "a1", range(0, 100, 10))
    # Last beat at 90 covers until 105; at 200 the share is 105 / 200.
    assert tracker.service_ratio("alerter", at(200)) == pytest.approx(105 / 200)


def test_the_period_slides() -> None:
    tracker = Availability(period_s=100, default_interval_s=10)
    beats(tracker, "ingest", "i1", range(0, 50, 10))  # healthy until 55, then silent
    beats(tracker, "ingest", "i1", range(200, 400, 10))
    tracker.prune(at(400))
    assert tracker.service_ratio("ingest", at(400)) == pytest.approx(1.0)  # [300, 400] only
    assert tracker.service_ratio("ingest", at(420)) == pytest.approx((405 - 320) / 100)


def test_one_healthy_instance_keeps_the_service_available_but_not_the_other_instance() -> None:
    tracker = Availability(period_s=400, default_interval_s=10)
    beats(tracker, "predictor", "p1", range(0, 400, 10))
    beats(tracker, "predictor", "p2", range(0, 200, 10))  # dies at 200
    assert tracker.service_ratio("predictor", at(400)) == pytest.approx(1.0)
    assert tracker.instance_ratio("predictor", "p2", at(400)) == pytest.approx(205 / 400)
    view = tracker.view("predictor", at(400))
    assert view["ratio"] == pytest.approx(1.0)
    assert view["instances"] == {"p1": pytest.approx(1.0), "p2": pytest.approx(205 / 400, abs=1e-6)}


def test_an_instance_counts_from_its_first_beat_a_watched_service_from_the_start() -> None:
    tracker = Availability(period_s=3600, default_interval_s=10)
    tracker.expect("drift-detector", T0)
    assert tracker.service_ratio("drift-detector", at(100)) == 0.0  # expected, never beat
    beats(tracker, "drift-detector", "d1", range(100, 200, 10))
    assert tracker.service_ratio("drift-detector", at(200)) == pytest.approx(0.5)
    assert tracker.instance_ratio("drift-detector", "d1", at(200)) == pytest.approx(1.0)
    assert tracker.service_ratio("never-seen", at(200)) is None


def test_the_declared_interval_sets_what_is_expected() -> None:
    tracker = Availability(period_s=3600, default_interval_s=10)
    for second in range(0, 600, 60):
        tracker.observe("slow", "s1", at(second), True, 60.0)  # declares a 60 s interval
    assert tracker.service_ratio("slow", at(600)) == pytest.approx(1.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Availability(period_s=0, default_interval_s=10)


def test_the_watcher_measures_beats_and_exports_the_gauge() -> None:
    w = HeartbeatWatcher(
        own_service="auto-responder",
        timeout_s=30,
        scale_service="predictor",
        overload_lag=1000,
        repeat_s=600,
        now=T0,
        watched=["recommender"],
        availability_period_s=300,
    )
    for second in range(0, 300, 10):
        value = beat("recommender", at(second), status="ok" if second < 150 else "degraded")
        value["details"]["interval_s"] = "10.0"
        w.observe(value, at(second))
    w.check(at(300))
    [row] = w.snapshot(at(300))
    assert row["availability"]["ratio"] == pytest.approx(0.5)
    assert list(row["availability"]["instances"]) == ["i1"]
    gauge = REGISTRY.get_sample_value("service_availability_ratio", {"service": "recommender"})
    assert gauge == pytest.approx(0.5)


def test_the_api_shows_availability_per_service_and_instance() -> None:
    clock = Clock(datetime.now(UTC))
    responder, _producer, _executors, _ = make(clock, FakeRegistry({"champion": "3"}))
    app = FastAPI()
    app.state.responder = responder
    app.include_router(router)
    app.state.key_store = store()
    start = clock()
    for second in range(0, 120, 10):
        clock.now = start + timedelta(seconds=second)
        value = beat("predictor", clock.now, instance="p1")
        value["details"]["interval_s"] = "10"
        responder.handle(Topic.SYSTEM_HEALTH, value)
    clock.now = start + timedelta(seconds=240)  # silent for the last 105 s
    with KeyedClient(app, "auto_responder") as client:
        body = client.get("/availability").json()
    assert body["period_s"] == responder.settings.availability_period_s
    predictor = body["services"]["predictor"]
    assert predictor["ratio"] == pytest.approx(125 / 240, abs=1e-6)
    assert predictor["instances"] == {"p1": pytest.approx(125 / 240, abs=1e-6)}
