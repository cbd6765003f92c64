"""The detector's state survives a snapshot: every component's to_state → from_state gives the same
views and, fed the same records afterwards, the same decisions; a restart waits for its reference."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from drift_detector import snapshot
from drift_detector.config import Settings
from drift_detector.labels import LabelJoiner, PendingPrediction
from drift_detector.models import VersionInfo
from drift_detector.psi import fit_binning
from drift_detector.quality import QualityTracker
from drift_detector.severity import Level
from drift_detector.state import AlertStateMachine
from drift_detector.windows import WindowManager
from fraud_model.generator import TransactionGenerator
from mlops_platform.kafka import RetryableError
from tests.unit.test_drift_detector import (
    FakeRegistry,
    Harness,
    drift_outcomes,
    reference_frame,
    registry,
    settings,
)

__all__ = ["registry", "settings"]  # fixtures shared with test_drift_detector


def outcomes(h: Harness) -> list[tuple[str, Any, ...]]:
    """What was published, without the ids and times each event is given when it is made."""
    out = []
    for topic, event in h.published:
        payload = {k: v for k, v in event.items() if k not in ("envelope", "report_url")}
        out.append((topic, json.dumps(payload, sort_keys=True, default=str)))
    return out


def busy_stream(h: Harness) -> tuple[list[Any], list[Any]]:
    """Drifting predictions on two A/B arms, and their labels (some never come)."""
    rng = np.random.default_rng(4)
    gen = TransactionGenerator(seed=2, fraud_rate=0.05)
    rows = gen.generate(3000)
    gen.scenario = "night_shift"
    rows += gen.generate(5000)
    arms = [("1", "champion"), ("2", "challenger")] * (len(rows) // 2)
    predictions = h.feed.predictions(rows, arms=arms)
    labels = [
        h.feed.label(r["transaction_id"], bool(r["is_fraud"] or rng.random() < 0.02))
        for r in rows
        if rng.random() < 0.9
    ]
    return predictions, labels


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ("event_id", "report_url")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def views(h: Harness) -> Any:
    """The HTTP views, without the ids events and reports are given when they are made."""
    d = h.detector
    return _without_ids([d.drift_view(), d.quality_view(), d.evaluations_view()])


def test_detector_snapshot_round_trip_gives_the_same_views_and_decisions(
    settings: Settings, registry: FakeRegistry
) -> None:
    registry.infos["2"] = registry.infos["1"]
    original = Harness(settings, registry)
    predictions, labels = busy_stream(original)
    half_p, half_l = len(predictions) // 2, len(labels) // 3
    original.run(predictions[:half_p])
    original.run(labels[:half_l])
    assert drift_outcomes(original), "the first half already drifts"

    restored = Harness(settings, registry)
    restored.detector.restore(original.detector.snapshot())
    assert views(restored) == views(original)

    harnesses = (original, restored)
    for h in harnesses:
        h.published.clear()
        h.run(predictions[half_p:])
        h.run(labels[half_l:])
    assert outcomes(original), "decisions after the snapshot"
    assert outcomes(restored) == outcomes(original)
    assert views(restored) == views(original)
    windows = [snapshot.loads(h.detector.snapshot())["drift"]["tracks"]["data"]["window"] for h in harnesses]
    assert windows[0] == windows[1]


def test_restore_none_is_the_initial_state(settings: Settings, registry: FakeRegistry) -> None:
    fresh = Harness(settings, registry)
    used = Harness(settings, registry)
    used.run(used.feed.predictions(TransactionGenerator(seed=2).generate(1500)))
    used.detector.restore(None)
    for h in (used, fresh):
        h.detector.sync()
    assert views(used) == views(fresh)
    assert views(used)[0]["window"]["rows_seen"] == 0


def test_restored_windows_wait_for_their_reference_and_keep_their_state(settings: Settings) -> None:
    registry = FakeRegistry()
    loaded = FakeRegistry()
    loaded.publish_version("1", reference_frame(), VersionInfo("1", 0.5, {}))
    loaded.champion, loaded.champion_resolved = "1", True
    before = Harness(settings, loaded)
    gen = TransactionGenerator(seed=2)
    before.run(before.feed.predictions(gen.generate(3000)))
    gen.scenario = "night_shift"
    before.run(before.feed.predictions(gen.generate(1200)))
    assert before.detector.drift_view()["tracks"]["data"]["state"] != "stable"

    # A restart: MLflow has not answered yet.
    after = Harness(settings, registry)
    after.feed = before.feed
    after.detector.restore(before.detector.snapshot())
    more = after.feed.predictions(gen.generate(10))
    with pytest.raises(RetryableError, match="reference v1"):
        after.handle(more)
    assert after.detector.drift_view()["reference_version"] is None
    registry.publish_version("1", loaded.references["1"].frame, loaded.infos["1"])
    registry.champion, registry.champion_resolved = "1", True
    after.detector.restore(after.committed or before.detector.snapshot())  # the loop's abort
    after.handle(more)
    data = after.detector.drift_view()["tracks"]["data"]
    assert data["state"] == before.detector.drift_view()["tracks"]["data"]["state"]  # not reset
    assert data["transitions"] == before.detector.drift_view()["tracks"]["data"]["transitions"]


def test_another_champion_after_the_restart_ends_the_wait(settings: Settings, registry: FakeRegistry) -> None:
    before = Harness(settings, registry)
    before.run(before.feed.predictions(TransactionGenerator(seed=2).generate(500)))
    state = before.detector.snapshot()
    other = FakeRegistry()
    other.champion, other.champion_resolved = "7", True  # loading, but not the restored version
    after = Harness(settings, other)
    after.detector.restore(state)
    after.handle(after.feed.predictions(TransactionGenerator(seed=3).generate(10)))
    assert after.detector.drift.tracks["data"].window.total == 510


# --------------------------------------------------------------------------- components


def test_window_round_trip_evaluates_the_same() -> None:
    rng = np.random.default_rng(1)
    columns = ["a", "b"]
    reference = {"a": rng.normal(size=2000), "b": rng.integers(0, 5, 2000).astype(float)}
    binning = fit_binning(reference, columns)
    window = WindowManager(columns, 600, 500, 100, chunk=64)
    window.set_binning(binning)
    values = np.column_stack([rng.normal(0.3, 1, 1700), rng.integers(0, 6, 1700)])
    list(window.feed(values, np.arange(1700)))
    copy = WindowManager(columns, 600, 500, 100, chunk=64)
    copy.from_state(json.loads(json.dumps(window.to_state())))
    copy.set_binning(binning)
    assert np.array_equal(copy.window_counts(), window.window_counts())
    assert copy.evaluate() == window.evaluate()
    more = np.column_stack([rng.normal(1, 1, 450), rng.integers(0, 6, 450)])
    assert list(copy.feed(more, np.arange(450))) == list(window.feed(more, np.arange(450)))
    with pytest.raises(snapshot.SnapshotError):
        WindowManager(["a"], 600, 500, 100).from_state(window.to_state())


def test_alert_state_machine_round_trip_decides_the_same() -> None:
    machine = AlertStateMachine(1000, clear_windows=2)
    machine.observe(Level.DRIFT, "HIGH", 10)
    machine.observe(Level.STABLE, None, 20)  # one calmer window of the two needed
    copy = AlertStateMachine(1000, clear_windows=2)
    copy.from_state(json.loads(json.dumps(machine.to_state())))
    assert copy == machine
    assert copy.observe(Level.STABLE, None, 30) == machine.observe(Level.STABLE, None, 30)
    assert copy.level is Level.STABLE


def test_label_joiner_round_trip_joins_the_same() -> None:
    joiner = LabelJoiner(ttl_ms=10_000, max_pending=100, max_orphans=100)
    for i in range(5):
        joiner.add_prediction(f"t{i}", PendingPrediction("1", "champion", i / 10, 1000 + i))
    joiner.add_label("t0", True, 2000)
    joiner.add_label("early", False, 2100)
    copy = LabelJoiner(ttl_ms=10_000, max_pending=100, max_orphans=100)
    copy.from_state(json.loads(json.dumps(joiner.to_state())))
    assert (copy.pending, copy.orphans, copy.recently_joined) == (
        joiner.pending,
        joiner.orphans,
        joiner.recently_joined,
    )
    assert copy.stats == joiner.stats and copy.clock_ms == joiner.clock_ms
    assert copy.add_label("t3", False, 2200) == joiner.add_label("t3", False, 2200)
    assert copy.add_label("t0", True, 2300) is None  # a duplicate label is still recognised
    assert copy.add_prediction("early", PendingPrediction("1", "champion", 0.5, 1500)) is not None


def test_quality_samples_round_trip() -> None:
    tracker = QualityTracker(quality_window=50, eval_every=10, max_per_group=1000)
    samples = tracker.group("1", "champion").samples
    for i in range(1500):  # past the limit: the oldest half was dropped once
        samples.append(i / 1500, i % 7 == 0, i)
    copy = QualityTracker(quality_window=50, eval_every=10, max_per_group=1000)
    copy.from_state(json.loads(json.dumps(tracker.to_state())))
    restored = copy.groups[("1", "champion")].samples
    assert restored.dropped == samples.dropped and restored.n == samples.n
    for a, b in zip(restored.latest(2000), samples.latest(2000), strict=True):
        assert np.array_equal(a, b)
    restored.append(0.5, True, 9999)
    assert restored.latest(1)[0].tolist() == [0.5]


def test_snapshot_format_is_checked_and_plain() -> None:
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert np.array_equal(snapshot.unpack_array(snapshot.pack_array(arr)), arr)
    payload = snapshot.dumps({"x": snapshot.pack_array(arr)})
    assert json.loads(payload)["format"] == snapshot.FORMAT  # plain JSON, no pickle
    with pytest.raises(snapshot.SnapshotError, match="format 99"):
        snapshot.loads(json.dumps({"format": 99, "state": {}}).encode())
    with pytest.raises(snapshot.SnapshotError, match="not JSON"):
        snapshot.loads(b"\x80\x04pickle")
