"""Label join: late labels, early labels, missing labels, duplicates, bounded memory."""

from __future__ import annotations

from drift_detector.labels import LabelJoiner, PendingPrediction

MIN = 60_000


def prediction(t: int, version: str = "1", arm: str = "champion", p: float = 0.5) -> PendingPrediction:
    return PendingPrediction(version, arm, p, t)


def test_label_after_prediction_joins() -> None:
    j = LabelJoiner(ttl_ms=60 * MIN, max_pending=10, max_orphans=10)
    assert j.add_prediction("t1", prediction(0, p=0.9)) is None
    joined = j.add_label("t1", True, 5 * MIN)
    assert joined is not None
    assert (joined.transaction_id, joined.is_fraud, joined.prediction.probability) == ("t1", True, 0.9)
    assert not j.pending and j.stats.joined == 1


def test_label_before_prediction_waits_as_orphan() -> None:
    j = LabelJoiner(ttl_ms=60 * MIN, max_pending=10, max_orphans=10)
    assert j.add_label("t1", False, 0) is None
    assert "t1" in j.orphans
    joined = j.add_prediction("t1", prediction(MIN))
    assert joined is not None and joined.is_fraud is False
    assert not j.orphans and not j.pending


def test_labels_that_never_come_expire_on_event_time() -> None:
    j = LabelJoiner(ttl_ms=30 * MIN, max_pending=100, max_orphans=100)
    for i in range(10):
        j.add_prediction(f"t{i}", prediction(i * MIN))
    j.add_label("orphan", True, 0)
    assert j.expire() == 0  # the clock is at 9 min
    j.add_prediction("late", prediction(35 * MIN))  # the clock moves to 35 min
    assert j.expire() == 5  # t0..t4 are older than 30 min
    assert list(j.pending) == ["t5", "t6", "t7", "t8", "t9", "late"]
    assert "orphan" not in j.orphans and j.stats.orphans_expired == 1
    assert j.add_label("t0", True, 36 * MIN) is None  # too late: it waits as an orphan


def test_memory_is_bounded() -> None:
    j = LabelJoiner(ttl_ms=10**12, max_pending=100, max_orphans=5)
    for i in range(250):
        j.add_prediction(f"t{i}", prediction(i))
    for i in range(20):
        j.add_label(f"x{i}", True, 250 + i)
    assert len(j.pending) == 100 and j.stats.evicted == 150
    assert next(iter(j.pending)) == "t150"
    assert len(j.orphans) == 5 and j.stats.orphans_evicted == 15


def test_duplicates_are_recognised() -> None:
    j = LabelJoiner(ttl_ms=10**9, max_pending=10, max_orphans=10)
    j.add_prediction("t1", prediction(0))
    assert j.add_prediction("t1", prediction(1)) is None  # redelivered prediction
    assert j.stats.duplicate_predictions == 1 and len(j.pending) == 1
    assert j.add_label("t1", True, 2) is not None
    assert j.add_label("t1", True, 3) is None  # redelivered label
    assert j.stats.duplicate_labels == 1 and not j.orphans
    assert j.add_prediction("t1", prediction(4)) is None and not j.pending
