"""The drift detector survives a SIGKILL: its checkpointed state (windows, alert state machines,
pending label joins) comes back, against the real broker, registry and MLflow.

The service is started as in ``test_drift_detector_service`` (a registered champion, fresh
topics and group), fed a baseline and the start of a shifted stream, killed with SIGKILL in
the middle of the window that will drift, restarted with the same instance id, and fed the
rest. The drift event must be published exactly once, and labels sent after the restart
must join the predictions made before it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fraud_model.generator import TransactionGenerator, affected_features
from fraud_model.training import TrainingResult
from tests.integration.test_drift_detector_service import (
    STEP,
    WINDOW,
    Service,
    Topics,
    Traffic,
    baseline_model,
    model_name,
    outputs,
    register,
    start_service,
    topics,
    traffic,
    wait_for_event,
)

pytestmark = pytest.mark.integration

__all__ = ["baseline_model", "model_name", "outputs", "start_service", "topics", "traffic"]  # fixtures

BASELINE = 8000
BEFORE_KILL = 600  # shifted predictions before the kill: fewer than a step, so no window saw them yet


def committed(service: Service, topic: str) -> float:
    """Records of ``topic`` whose transaction (outputs, offsets, state snapshot) committed."""
    return service.process.metric_sum("mlops_events_consumed_total", topic=topic)


def test_sigkill_in_a_drifting_window_keeps_windows_and_label_joins(
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    start_service: Callable[..., Service],
    topic_factory: Callable[..., str],
    traffic: Traffic,
    topics: Topics,
    outputs: Callable[..., list[dict[str, Any]]],
) -> None:
    # Single partitions: the stream is consumed in the order it happened, so the windows
    # of the interrupted run are the windows of an uninterrupted one.
    topics.predictions = topic_factory("predictions-ordered", partitions=1)
    topics.feedback = topic_factory("feedback-ordered", partitions=1)
    version = register(baseline_model, mlflow_uri, model_name, "champion")
    serving = {"champion": (version, baseline_model)}
    service = start_service(
        DRIFT_STATE_TOPIC=f"test.drift-detector-state.{uuid.uuid4().hex[:10]}",  # created by the service
        DRIFT_STATE_INTERVAL_S="1",
    )

    gen = TransactionGenerator(seed=8)
    baseline_rows = gen.generate_frame(BASELINE)
    baseline = traffic.predictions(baseline_rows, serving)
    gen.scenario = "night_shift"
    shifted_rows = gen.generate_frame(WINDOW + 2 * STEP)
    traffic.predictions(shifted_rows.iloc[:BEFORE_KILL], serving)
    before = BASELINE + BEFORE_KILL
    service.wait(
        f"{before} predictions committed",
        lambda: committed(service, topics.predictions) == before,
        timeout_s=180,
    )
    drift_before = service.get("/drift")
    quality_before = service.get("/quality")["labels"]
    assert drift_before["window"]["rows_seen"] == before
    assert quality_before["pending_predictions"] == before
    assert outputs(topics.drift) == [], "the shifted rows have not reached an evaluation yet"

    service.process.kill()
    service.process.restart()
    service.process.wait_for("/ready", timeout_s=180)

    # Restored, not replayed: the offsets were committed, yet the windows hold every row.
    drift_after = service.get("/drift")
    assert drift_after["window"]["rows_seen"] == before
    assert committed(service, topics.predictions) == 0  # nothing consumed again
    for kind in ("data", "prediction"):
        was, now = drift_before["tracks"][kind], drift_after["tracks"][kind]
        assert now["windows_processed"] == was["windows_processed"] > 0
        assert now["latest_window"] == was["latest_window"]
        assert now["history"] == was["history"]
    assert service.get("/quality")["labels"]["pending_predictions"] == before

    # The rest of the drifting window, and the labels of the predictions made before the kill.
    traffic.predictions(shifted_rows.iloc[BEFORE_KILL:], serving)
    sent = traffic.labels(baseline_rows, baseline, drop_rate=0.1, seed=5)
    expected = set(affected_features("night_shift"))
    wait_for_event(
        outputs,
        topics.drift,
        lambda e: e["state"] == "drift" and set(e["affected_features"]) == expected,
        service,
    )
    total = before + len(shifted_rows) - BEFORE_KILL
    service.wait("every prediction consumed", lambda: service.get("/drift")["window"]["rows_seen"] == total)

    def labelled_total() -> int:
        return sum(g["labelled_total"] for g in service.get("/quality")["groups"])

    service.wait("the labels joined their pre-kill predictions", lambda: labelled_total() == sent)
    labels = service.get("/quality")["labels"]
    assert labels["joined"] == sent and labels["orphan_labels"] == 0
    assert labels["pending_predictions"] == total - sent

    events = outputs(topics.drift)
    windows = [(e["drift_type"], e["state"], e["severity"], e["window_end"]) for e in events]
    assert len(set(windows)) == len(windows), f"an event published twice: {windows}"
    assert len({e["envelope"]["event_id"] for e in events}) == len(events)
    assert 1 <= len(events) <= 4  # the onset (watch, drift, escalation), not one per window
    drift = [e for e in events if e["state"] == "drift"]
    assert len([e for e in drift if set(e["affected_features"]) == expected]) >= 1
    assert all(e["model_version"] == version for e in events)
