"""Evidently reports (rendered for real, in a thread), the report store and the HTTP API."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from drift_detector.api import router
from drift_detector.config import Settings
from drift_detector.reports import ReportJob, ReportMeta, ReportStore, ReportWorker, new_report_id
from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import TransactionGenerator, affected_features
from tests.support.keys import KeyedClient
from tests.support.keys import store as keys_store


def evidently_columns(page: str) -> dict[str, str]:
    """Column -> "Detected" / "Not Detected" from the data Evidently embeds in its page."""
    found = re.findall(
        r'"column_name": "([^"]+)", "column_type": "\w+", "stattest_name": "PSI"(.*?)"data_drift": "([^"]+)"',
        page,
    )
    return {name: status for name, _, status in found}


def meta(report_id: str, **overrides: Any) -> ReportMeta:
    values: dict[str, Any] = {
        "id": report_id,
        "url": f"http://x/reports/{report_id}",
        "created_at": f"2025-01-01T00:00:{len(report_id) % 60:02d}+00:00",
        "status": "pending",
        "reason": "event",
        "model_name": "m",
        "model_version": "1",
        "drift_type": "data",
        "state": "drift",
        "severity": "CRITICAL",
        "drift_score": 1.0,
        "window_start_ms": 0,
        "window_end_ms": 1000,
        "window_size": 5000,
        "affected_features": ["hour_of_day", "is_night"],
        "feature_psi": {"hour_of_day": 1.6, "is_night": 0.8, "amount": 0.01},
        "psi_threshold": 0.25,
    }
    values.update(overrides)
    return ReportMeta(**values)


def wait_for(predicate: Any, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_report_of_a_drifted_window_shows_the_drifted_columns(tmp_path: Path) -> None:
    store = ReportStore(tmp_path, keep=5)
    seconds: list[tuple[float, str]] = []
    worker = ReportWorker(store, "thread", observe=lambda s, status: seconds.append((s, status)))
    worker.start()
    try:
        reference = build_features(TransactionGenerator(seed=1).generate_frame(3000))
        current = build_features(TransactionGenerator(seed=2, scenario="night_shift").generate_frame(3000))
        report_id = new_report_id()
        assert worker.submit(
            ReportJob(meta(report_id), list(FEATURE_NAMES), current, reference, store.html_path(report_id))
        )
        wait_for(lambda: store.get(report_id).status != "pending")  # type: ignore[union-attr]
    finally:
        worker.stop()
    done = store.get(report_id)
    assert done is not None and done.status == "ready", done.error if done else None
    assert set(affected_features("night_shift")) <= set(done.evidently_drifted_columns)
    assert done.generation_seconds and seconds == [(done.generation_seconds, "ready")]
    page = store.html_path(report_id).read_text()
    columns = evidently_columns(page)
    assert set(columns) == set(FEATURE_NAMES)
    assert {c for c, status in columns.items() if status == "Detected"} == set(done.evidently_drifted_columns)
    summary = re.search(r'<b id="drifted-features">([^<]*)</b>', page)
    assert summary is not None and summary.group(1) == "hour_of_day, is_night"
    # Sidecar metadata is what a restarted service lists.
    assert json.loads((tmp_path / f"{report_id}.json").read_text())["status"] == "ready"


def test_store_keeps_the_newest_and_survives_a_restart(tmp_path: Path) -> None:
    store = ReportStore(tmp_path, keep=3)
    ids = [f"2025-{i:02d}" for i in range(5)]
    for i, report_id in enumerate(ids):
        store.add(meta(report_id, created_at=f"2025-01-01T00:00:0{i}+00:00"))
        store.html_path(report_id).write_text("<html></html>")
    assert [m.id for m in store.list()] == ids[:1:-1]
    assert not (tmp_path / f"{ids[0]}.html").exists() and not (tmp_path / f"{ids[0]}.json").exists()
    reopened = ReportStore(tmp_path, keep=3)
    assert [m.id for m in reopened.list()] == ids[:1:-1]
    assert all(m.status == "failed" for m in reopened.list())  # were pending when the process stopped


def test_full_queue_drops_instead_of_piling_up(tmp_path: Path) -> None:
    store = ReportStore(tmp_path, keep=10)
    worker = ReportWorker(store, "thread", queue_size=1)  # not started: nothing drains the queue
    job = ReportJob(meta("a"), ["x"], np.zeros((1, 1)), np.zeros((1, 1)), store.html_path("a"))
    assert worker.submit(job)
    second = ReportJob(meta("b"), ["x"], np.zeros((1, 1)), np.zeros((1, 1)), store.html_path("b"))
    assert not worker.submit(second)
    assert store.get("b").status == "dropped"  # type: ignore[union-attr]


class StubDetector:
    def drift_view(self) -> dict[str, Any]:
        return {"tracks": {"data": {"state": "drift"}}}

    def quality_view(self) -> dict[str, Any]:
        return {"groups": []}

    def evaluations_view(self) -> dict[str, Any]:
        return {"evaluations": []}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = FastAPI()
    app.state.detector = StubDetector()
    app.state.reports = store = ReportStore(tmp_path, keep=10)
    app.include_router(router)
    store.add(meta("ready1", status="ready"))
    store.html_path("ready1").write_text("<html><body>hour_of_day</body></html>")
    store.add(meta("pending1"))
    store.add(meta("failed1", status="failed", error="boom"))
    app.state.key_store = keys_store()
    return KeyedClient(app, "drift_detector")


def test_api_views_and_report_statuses(client: TestClient) -> None:
    assert client.get("/drift").json()["tracks"]["data"]["state"] == "drift"
    assert client.get("/quality").json() == {"groups": []}
    assert client.get("/evaluations").json() == {"evaluations": []}
    listed = client.get("/reports").json()["reports"]
    assert [r["id"] for r in listed] == ["failed1", "pending1", "ready1"]
    ready = client.get("/reports/ready1")
    assert ready.status_code == 200 and ready.headers["content-type"].startswith("text/html")
    assert "hour_of_day" in ready.text
    pending = client.get("/reports/pending1")
    assert pending.status_code == 202 and pending.headers["retry-after"]
    assert client.get("/reports/failed1").json()["error"] == "boom"
    assert client.get("/reports/nope").status_code == 404


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFT_WINDOW_SIZE", "3000")
    monkeypatch.setenv("DRIFT_WINDOW_STEP", "300")
    monkeypatch.setenv("DRIFT_MODEL_NAME", "other")
    monkeypatch.setenv("DRIFT_DEGRADATION_METRICS", '["recall"]')
    monkeypatch.setenv("DRIFT_PREDICTIONS_TOPIC", "test.preds")
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    s = Settings()
    assert (s.service_name, s.http_port, s.window_size, s.window_step) == ("drift-detector", 8003, 3000, 300)
    assert s.model_name == "other" and s.degradation_metrics == ["recall"]
    assert (
        s.consumer_group == "drift-detector"
        and s.reports_dir == tmp_path / "reports" / "drift-detector-reports"
    )
    bindings = s.bindings()
    private = {b.topic: b.schema_topic for b in (*bindings.consumes, *bindings.produces) if b.schema_topic}
    assert private == {"test.preds": "prediction.completed"}
    assert s.base_url == "http://127.0.0.1:8003"


@pytest.mark.parametrize(
    "bad",
    [{"psi_watch": 0.3, "psi_drift": 0.2}, {"window_step": 6000}, {"degradation_metrics": ["auprc"]}],
)
def test_inconsistent_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Settings(**bad)


def test_small_window_is_its_own_monitor_floor() -> None:
    assert Settings(window_size=600, window_step=100).min_window_size == 600
