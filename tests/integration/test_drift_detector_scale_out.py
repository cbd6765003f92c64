"""Two drift-detector processes in one group merge their histograms; one stops and the other carries on.

Both run ``python -m drift_detector`` with ``DRIFT_SCALE_OUT=true`` on private topics (six
partitions of predictions and labels, one of partials) against the real broker, registry and
MLflow. Drifted traffic spread over all six partitions must give exactly one
``data.drift.detected`` per drifted window, whose PSI is that of *all* the window's
predictions, recomputed here from what was sent; every prediction is counted once by the
merger. Then the merging instance is stopped (SIGTERM): the other takes every partition and
the merge over, continues from the committed merge state, and its events are as correct; and
SIGKILLed mid-stream and restarted, it resumes without losing or repeating anything.
Waiting is always "until the merger counted N predictions" with generous deadlines.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drift_detector.config import Settings
from drift_detector.models import RegistryClient
from drift_detector.psi import fit_binning, psi_from_counts
from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import TransactionGenerator, affected_features
from fraud_model.training import TrainingResult
from mlops_platform.contracts import Topic
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.integration.test_drift_detector_service import (
    Service,
    Topics,
    Traffic,
    baseline_model,
    model_name,
    register,
)
from tests.support.processes import ServiceLauncher
from tests.support.topics import TopicTail

__all__ = ["baseline_model", "model_name"]  # fixtures shared with test_drift_detector_service

pytestmark = pytest.mark.integration

PARTITIONS = 6
WINDOW, STEP = 3000, 1500
BUCKET_S = 10  # 500 predictions at the traffic's 20 ms apart: a window is six buckets


@dataclass
class ScaleTopics(Topics):
    partials: str = ""
    state: str = ""


@pytest.fixture
def topics(topic_factory: Callable[..., str], serde: AvroSerde) -> ScaleTopics:
    return ScaleTopics(
        predictions=topic_factory("predictions", partitions=PARTITIONS),
        feedback=topic_factory("feedback", partitions=PARTITIONS),
        deployments=topic_factory("deployed"),
        actions=topic_factory("actions"),
        drift=topic_factory("drift"),
        degraded=topic_factory("degraded"),
        evaluation=topic_factory("evaluation"),
        partials=topic_factory("partials"),
        state=f"test.drift-state.{uuid.uuid4().hex[:10]}",
    )


def ms(value: datetime | str) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return int(moment.timestamp() * 1000)


class Sent:
    """Every prediction sent: event time and the features the detector bins."""

    def __init__(self) -> None:
        self.times = np.empty(0, dtype=np.int64)
        self.values = np.empty((0, len(FEATURE_NAMES)), dtype=np.float32)

    def add(self, rows: Any, published: list[tuple[str, datetime]]) -> None:
        self.times = np.concatenate([self.times, [ms(at) for _, at in published]])
        self.values = np.concatenate([self.values, build_features(rows).astype(np.float32)])

    def psi(self, binning: Any, start_ms: int, end_ms: int) -> tuple[int, dict[str, float]]:
        inside = (self.times >= start_ms) & (self.times <= end_ms)
        counts = binning.count_matrix(binning.assign(self.values[inside]))
        psi = psi_from_counts(binning, counts, int(inside.sum()))
        return int(inside.sum()), dict(zip(FEATURE_NAMES, psi.tolist(), strict=True))


def merge_view(service: Service) -> dict[str, Any]:
    view: dict[str, Any] = service.get("/drift")["merge"]
    return view


def survivor_progress(service: Service) -> dict[str, Any]:
    """What a timeout message needs: the merge's counters and the instance's own partials."""
    drift = service.get("/drift")
    merge = {k: v for k, v in drift["merge"].items() if k != "tracks"}
    return {"merge": merge, "scale_out": drift["scale_out"], "window": drift["window"]}


def check_events(events: list[dict[str, Any]], merger: Service, sent: Sent, binning: Any) -> None:
    """One event per window the merger published for, none twice, each with the PSI of all its rows."""
    data = [e for e in events if e["drift_type"] == "data"]
    windows = [(ms(e["window_start"]), ms(e["window_end"])) for e in data]
    assert len(windows) == len(set(windows)), f"a window published twice: {windows}"
    assert windows == sorted(windows)
    # The merger's history of judged windows (the latest ones) against what reached the topic.
    history = merge_view(merger)["tracks"]["data"]["history"]
    assert history, "the merger judged windows"
    published = [ms(h["window_end"]) for h in history if h["event"] is not None]
    assert [end for _, end in windows if end >= ms(history[0]["window_end"])] == published
    assert all(h["event"] is not None for h in history if h["level"] == "drift")
    for event, (start, end) in zip(data, windows, strict=True):
        size, expected = sent.psi(binning, start, end)
        assert event["window_size"] == size
        assert event["feature_psi"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_two_instances_merge_their_histograms_and_the_survivor_carries_on(
    tmp_path: Path,
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    topics: ScaleTopics,
    launcher: ServiceLauncher,
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topic_tail: Callable[..., TopicTail],
) -> None:
    version = register(baseline_model, mlflow_uri, model_name, "champion")
    group = f"test-drift-{uuid.uuid4().hex[:10]}"
    env = {
        **{f"DRIFT_{name.upper()}_TOPIC": topic for name, topic in topics.__dict__.items()},
        "DRIFT_MODEL_NAME": model_name,
        "DRIFT_GROUP_ID": group,
        "DRIFT_SCALE_OUT": "true",
        "DRIFT_MERGE_BUCKET_S": str(BUCKET_S),
        "DRIFT_MERGE_LATENESS_S": "1",
        "DRIFT_WINDOW_SIZE": str(WINDOW),
        "DRIFT_WINDOW_STEP": str(STEP),
        "DRIFT_REPEAT_INTERVAL_S": "0.001",  # every drifted window is an event: countable
        "DRIFT_STATE_INTERVAL_S": "1",
        "DRIFT_REPORTS_DIR": str(tmp_path / "reports"),
    }
    services = [
        Service(
            launcher.start(
                "drift_detector",
                "DRIFT_",
                {**env, "DRIFT_INSTANCE_ID": f"test-{name}-{uuid.uuid4().hex[:6]}"},
                timeout_s=120,
                stop_timeout_s=60,
            )
        )
        for name in ("a", "b")
    ]
    drift = topic_tail({topics.drift: Topic.DATA_DRIFT_DETECTED.value})
    traffic = Traffic(platform_settings, serde, topics, model_name)
    serving = {"champion": (version, baseline_model)}
    sent = Sent()
    settings = Settings()
    reference = RegistryClient(mlflow_uri, model_name).reference(version)
    binning = fit_binning(
        reference,
        list(FEATURE_NAMES),
        settings.psi_bins,
        settings.psi_discrete_max_values,
        settings.psi_epsilon,
    )

    def merged_everywhere(count: int) -> Callable[[], bool]:
        return lambda: any(merge_view(s)["rows_added"].get("data", 0) == count for s in services)

    # Phase 1: both instances, stable then drifted traffic over all six partitions.
    gen = TransactionGenerator(seed=7)
    for scenario, count in (("baseline", 6000), ("night_shift", 9000)):
        gen.scenario = scenario
        rows = gen.generate_frame(count)
        sent.add(rows, traffic.predictions(rows, serving))
    total = len(sent.times)
    services[0].wait(f"{total} predictions merged", merged_everywhere(total), timeout_s=240)
    merger = max(services, key=lambda s: merge_view(s)["partials_handled_here"])
    other = next(s for s in services if s is not merger)
    assert all(s.get("/drift")["scale_out"]["rows_sent"] > 0 for s in services), "both instances counted"
    drift.drain(quiet_s=3, timeout_s=60)
    events = drift.on(topics.drift)
    assert any(e["state"] == "drift" for e in events), "the drifted windows are found"
    drifted = [e for e in events if e["state"] == "drift"]
    assert set(drifted[-1]["affected_features"]) == set(affected_features("night_shift"))
    assert all(e["model_version"] == version and e["report_url"] is None for e in events)
    check_events(events, merger, sent, binning)

    # Phase 2: the merger stops; the other instance takes every partition and the merge over.
    assert merger.process.stop(strict=True) in (0, -signal.SIGTERM)
    rows = gen.generate_frame(6000)
    sent.add(rows, traffic.predictions(rows, serving))
    total = len(sent.times)
    other.wait(
        # On a timeout: how far the survivor got, on both of its loops.
        lambda: f"{total} predictions merged by the survivor; /drift says {survivor_progress(other)}",
        lambda: merge_view(other)["rows_added"].get("data", 0) == total,
        timeout_s=240,
    )
    view = merge_view(other)
    assert view["partials_handled_here"] > 0 and view["state_reloads"] >= 1
    assert view["rows_dropped"] == 0
    drift.drain(quiet_s=3, timeout_s=60)
    after = drift.on(topics.drift)
    assert len(after) > len(events), "the survivor judges the new windows"
    check_events(after, other, sent, binning)

    # Phase 3: the survivor is SIGKILLed mid-stream and restarted with its instance id: its open
    # transactions are aborted, the merge resumes from the committed state, nothing is repeated.
    before = total
    rows = gen.generate_frame(6000)
    sent.add(rows, traffic.predictions(rows, serving))
    total = len(sent.times)
    other.wait("part of the new traffic merged", lambda: merge_view(other)["rows_added"]["data"] > before)
    other.process.kill()
    other.process.restart()
    other.process.wait_for("/ready", timeout_s=180)
    other.wait(
        f"{total} predictions merged after the restart",
        lambda: merge_view(other)["rows_added"].get("data", 0) == total,
        timeout_s=300,
    )
    drift.drain(quiet_s=3, timeout_s=60)
    final = drift.on(topics.drift)
    assert len(final) > len(after), "windows judged after the restart"
    check_events(final, other, sent, binning)


def test_a_second_instance_without_scale_out_makes_both_unready_with_the_reason(
    tmp_path: Path,
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    topics: ScaleTopics,
    launcher: ServiceLauncher,
) -> None:
    """Two single-instance detectors in one group would each judge part of the stream: refused."""
    register(baseline_model, mlflow_uri, model_name, "champion")
    env = {
        **{f"DRIFT_{name.upper()}_TOPIC": topic for name, topic in topics.__dict__.items()},
        "DRIFT_MODEL_NAME": model_name,
        "DRIFT_GROUP_ID": f"test-drift-{uuid.uuid4().hex[:10]}",
        "DRIFT_REPORTS_DIR": str(tmp_path / "reports"),
    }
    first = launcher.start(
        "drift_detector", "DRIFT_", {**env, "DRIFT_INSTANCE_ID": "test-sole-a"}, timeout_s=120
    )
    assert first.json("/ready")["checks"]["sole_instance"]["ok"] is True
    second = launcher.start(
        "drift_detector", "DRIFT_", {**env, "DRIFT_INSTANCE_ID": "test-sole-b"}, wait_for=None, timeout_s=120
    )

    def readiness(process: Any) -> dict[str, Any]:
        ready: dict[str, Any] = process.get("/ready").json()  # 503 while not ready: still a body
        return ready

    def refused(process: Any) -> bool:
        response = process.get("/ready")
        check = response.json().get("checks", {}).get("sole_instance", {})
        return (
            response.status_code == 503
            and check.get("ok") is False
            and "DRIFT_SCALE_OUT=true" in check.get("detail", "")
        )

    for process in (first, second):
        process.wait(
            "readiness refuses a second instance without scale-out", lambda p=process: refused(p), 120
        )
    second.stop()
    first.wait("the sole instance is ready again", lambda: readiness(first).get("ready") is True, 120)
