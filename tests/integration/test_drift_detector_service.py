"""The drift detector as a process against the real broker, schema registry and MLflow.

Each test trains small XGBoost models with ``fraud_model.training``, registers them under a
unique model name, starts ``python -m drift_detector`` on fresh topics (``DRIFT_*_TOPIC``)
with its own consumer group, publishes ``prediction.completed`` / ``prediction.feedback``
events built from the generator's transactions scored by those models, and reads what the
service publishes. Waiting is always "until the service says it consumed N records" or
"until an event arrives", with generous deadlines; nothing asserts on elapsed time.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fraud_model.contract import feedback_label
from fraud_model.features import build_features, feature_dict
from fraud_model.generator import TransactionGenerator, affected_features
from fraud_model.registry import ModelRegistry
from fraud_model.training import TrainingResult, log_and_register, train
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.keys import headers
from tests.support.processes import ServiceLauncher, ServiceProcess, Text
from tests.support.topics import TopicTail

pytestmark = pytest.mark.integration

EXPERIMENT = "drift-detector-tests"
WINDOW, STEP = 5000, 1000


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def baseline_model() -> TrainingResult:
    """The first champion: trained on the baseline world."""
    return train(TransactionGenerator(seed=101).generate_frame(20_000), seed=1)


@pytest.fixture(scope="module")
def retrained_model() -> TrainingResult:
    """A challenger retrained after fraud changed its modus operandi (new_fraud_pattern)."""
    return train(TransactionGenerator(seed=102, scenario="new_fraud_pattern").generate_frame(20_000), seed=2)


@pytest.fixture
def model_name(mlflow_uri: str) -> Iterator[str]:
    name = f"drift_it_{uuid.uuid4().hex[:10]}"
    yield name
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        client.delete_registered_model(name)
    except Exception:  # noqa: S110 - best-effort cleanup of a test model
        pass


def register(result: TrainingResult, mlflow_uri: str, name: str, alias: str | None) -> str:
    info = log_and_register(
        result,
        tracking_uri=mlflow_uri,
        model_name=name,
        set_alias=alias,
        experiment_name=EXPERIMENT,
        alias_requires_validation=False,
        reason="drift-detector integration test",
    )
    return info.version


# --------------------------------------------------------------------------- service


@dataclass
class Topics:
    predictions: str
    feedback: str
    deployments: str
    actions: str
    drift: str
    degraded: str
    evaluation: str

    def env(self) -> dict[str, str]:
        return {f"DRIFT_{name.upper()}_TOPIC": topic for name, topic in self.__dict__.items()}

    def contract(self, topic: str) -> str:
        names = {
            self.predictions: Topic.PREDICTION_COMPLETED,
            self.feedback: Topic.PREDICTION_FEEDBACK,
            self.deployments: Topic.MODEL_DEPLOYED,
            self.actions: Topic.SYSTEM_ACTIONS,
            self.drift: Topic.DATA_DRIFT_DETECTED,
            self.degraded: Topic.MODEL_PERFORMANCE_DEGRADED,
            self.evaluation: Topic.MODEL_EVALUATION_COMPLETED,
        }
        return names[topic].value


@dataclass
class Service:
    """The drift detector's API, over a ``python -m drift_detector`` process started by the launcher."""

    process: ServiceProcess

    @property
    def url(self) -> str:
        return self.process.url

    def get(self, path: str) -> Any:
        return self.process.json(path)

    def wait(self, what: Text, predicate: Callable[[], bool], timeout_s: float = 180) -> None:
        self.process.wait(what, predicate, timeout_s, interval_s=0.25)

    def rows_seen(self) -> int:
        return int(self.get("/drift")["window"]["rows_seen"])


@pytest.fixture
def topics(topic_factory: Callable[..., str], serde: AvroSerde) -> Topics:
    return Topics(
        predictions=topic_factory("predictions", partitions=3),
        feedback=topic_factory("feedback", partitions=3),
        deployments=topic_factory("deployed"),
        actions=topic_factory("actions"),
        drift=topic_factory("drift"),
        degraded=topic_factory("degraded"),
        evaluation=topic_factory("evaluation"),
    )


@pytest.fixture
def start_service(
    tmp_path: Path, topics: Topics, model_name: str, launcher: ServiceLauncher
) -> Callable[..., Service]:
    def start(**env: str) -> Service:
        full_env = {
            **topics.env(),
            "DRIFT_MODEL_NAME": model_name,
            "DRIFT_GROUP_ID": f"test-drift-{uuid.uuid4().hex[:10]}",
            "DRIFT_INSTANCE_ID": f"test-{uuid.uuid4().hex[:6]}",
            "DRIFT_REPORTS_DIR": str(tmp_path / "reports"),
            "DRIFT_REPORT_MIN_INTERVAL_S": "0",
            "DRIFT_WINDOW_SIZE": str(WINDOW),
            "DRIFT_WINDOW_STEP": str(STEP),
            **env,
        }
        return Service(launcher.start("drift_detector", "DRIFT_", full_env, timeout_s=120, stop_timeout_s=60))

    return start


# --------------------------------------------------------------------------- traffic


class Traffic:
    """Builds and publishes prediction and label events the way the predictor and ingest would."""

    def __init__(self, settings: PlatformSettings, serde: AvroSerde, topics: Topics, model_name: str) -> None:
        self.producer = EventProducer(settings, "drift-detector-test", serde)
        self.topics = topics
        self.model_name = model_name
        self.clock = datetime.now(UTC)

    def predictions(
        self,
        rows: pd.DataFrame,
        serving: dict[str, tuple[str, TrainingResult]],
        split: Callable[[str], str] = lambda _txn: "champion",
    ) -> list[tuple[str, datetime]]:
        """Score ``rows`` with the arm's model and publish; returns (transaction id, event time)."""
        features = build_features(rows)
        txns = rows["transaction_id"].tolist()
        arms = np.array([split(t) for t in txns])
        probs = np.zeros(len(rows))
        for arm, (_, model) in serving.items():
            mask = arms == arm
            if mask.any():
                probs[mask] = model.predict_proba(features[mask])
        published = []
        for i, txn in enumerate(txns):
            self.clock += timedelta(milliseconds=20)
            version = serving[arms[i]][0]
            payload = {
                "transaction_id": txn,
                "account_id": str(rows["account_id"].iloc[i]),
                "request_event_id": str(uuid.uuid4()),
                "fraud_probability": float(probs[i]),
                "risk_level": "approve",
                "model_name": self.model_name,
                "model_version": version,
                "model_alias": str(arms[i]),
                "ab_arm": str(arms[i]),
                "features": feature_dict(features[i]),
                "latency_ms": 3.0,
            }
            event = make_event("predictor", payload, event_time=self.clock)
            self.producer.produce(
                self.topics.predictions, event, key=txn, schema_topic=Topic.PREDICTION_COMPLETED
            )
            published.append((txn, self.clock))
        assert self.producer.flush() == 0
        return published

    def labels(
        self, rows: pd.DataFrame, published: list[tuple[str, datetime]], drop_rate: float, seed: int
    ) -> int:
        """Publish labels 1-10 minutes after their prediction, in arrival order; ``drop_rate`` never come."""
        rng = np.random.default_rng(seed)
        when = dict(published)
        arrivals = []
        for txn, is_fraud in zip(rows["transaction_id"], rows["is_fraud"], strict=True):
            if rng.random() < drop_rate:
                continue
            source = "chargeback" if is_fraud else "no_dispute"
            arrivals.append(
                (when[txn] + timedelta(seconds=rng.uniform(60, 600)), txn, bool(is_fraud), source)
            )
        for at, txn, is_fraud, source in sorted(arrivals):
            event = make_event("ingest", feedback_label(txn, is_fraud, source), event_time=at)
            self.producer.produce(
                self.topics.feedback, event, key=txn, schema_topic=Topic.PREDICTION_FEEDBACK
            )
        assert self.producer.flush() == 0
        return len(arrivals)

    def publish(self, topic: str, contract: Topic, payload: dict[str, Any]) -> dict[str, Any]:
        event = make_event("test", payload)
        self.producer.publish(topic, event, key=self.model_name, schema_topic=contract)
        return event


@pytest.fixture
def traffic(
    platform_settings: PlatformSettings, serde: AvroSerde, topics: Topics, model_name: str
) -> Traffic:
    return Traffic(platform_settings, serde, topics, model_name)


@pytest.fixture
def outputs(topic_tail: Callable[..., TopicTail], topics: Topics) -> Callable[..., list[dict]]:
    names = (topics.drift, topics.degraded, topics.evaluation)
    # The topics are fresh, so reading from their end now reads everything the service publishes.
    tail = topic_tail({name: topics.contract(name) for name in names})

    def read(topic: str | None = None, quiet_s: float = 3.0) -> list[dict[str, Any]]:
        tail.drain(quiet_s=quiet_s, timeout_s=60)
        return tail.on(topic)

    return read


def wait_for_event(
    read: Callable[..., list[dict[str, Any]]],
    topic: str,
    predicate: Callable[[dict[str, Any]], bool],
    service: Service,
    timeout_s: float = 180,
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def check() -> bool:
        found[:] = [e for e in read(topic, quiet_s=0.5) if predicate(e)]
        return bool(found)

    service.wait(f"an event on {topic}", check, timeout_s)
    return found[0]


def evidently_columns(page: str) -> dict[str, str]:
    """Column -> "Detected" / "Not Detected" from the data Evidently embeds in its page."""
    pattern = (
        r'"column_name": "([^"]+)", "column_type": "\w+", "stattest_name": "PSI".*?"data_drift": "([^"]+)"'
    )
    return dict(re.findall(pattern, page))


# --------------------------------------------------------------------------- tests


def test_stable_stream_of_50k_predictions_publishes_no_drift(
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    start_service: Callable[..., Service],
    traffic: Traffic,
    topics: Topics,
    outputs: Callable[..., list[dict[str, Any]]],
) -> None:
    version = register(baseline_model, mlflow_uri, model_name, "champion")
    service = start_service()
    assert service.get("/drift")["reference_version"] == version

    gen = TransactionGenerator(seed=7)  # another seed: other accounts, same world
    total = 0
    for _ in range(5):
        rows = gen.generate_frame(10_000)
        traffic.predictions(rows, {"champion": (version, baseline_model)})
        total += len(rows)
    service.wait(f"{total} predictions consumed", lambda: service.rows_seen() == total)

    assert outputs(topics.drift) == []
    drift = service.get("/drift")
    data = drift["tracks"]["data"]
    assert data["state"] == "stable" and data["last_event"] is None
    assert data["windows_processed"] == (total - WINDOW) // STEP + 1
    assert max(f["psi"] for f in data["features"].values()) < 0.1
    assert drift["tracks"]["prediction"]["state"] == "stable"

    metrics = service.process.metrics_text()
    assert f'drift_windows_processed_total{{drift_type="data"}} {float(data["windows_processed"])}' in metrics
    assert 'drift_feature_psi{drift_type="data",feature="hour_of_day"}' in metrics

    # The auto-responder's "monitor" action tightens the window for a while.
    traffic.publish(
        topics.actions,
        Topic.SYSTEM_ACTIONS,
        {
            "action_id": "act-1",
            "trigger_event_id": "e",
            "trigger_event_type": "data.drift.detected",
            "trigger_severity": "LOW",
            "assessed_severity": "LOW",
            "rule_id": "data_drift_low",
            "action": "monitor",
            "status": "succeeded",
            "suppressed_reason": None,
            "outcome": "monitoring",
            "duration_ms": 1.0,
            "details": {"window_size": "250", "duration_s": "1800"},
        },
    )
    service.wait("the monitor window", lambda: service.get("/drift")["window"]["size"] == 1000)
    assert service.get("/drift")["window"]["monitor"]["action_id"] == "act-1"


def test_shift_is_detected_naming_the_features_with_a_report(
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    start_service: Callable[..., Service],
    topic_factory: Callable[..., str],
    traffic: Traffic,
    topics: Topics,
    outputs: Callable[..., list[dict[str, Any]]],
) -> None:
    # One partition, so the stream is consumed in the order it happened.
    topics.predictions = topic_factory("predictions-ordered", partitions=1)
    version = register(baseline_model, mlflow_uri, model_name, "champion")
    service = start_service()
    gen = TransactionGenerator(seed=8)
    traffic.predictions(gen.generate_frame(8000), {"champion": (version, baseline_model)})
    service.wait("baseline consumed", lambda: service.rows_seen() == 8000)
    assert outputs(topics.drift) == []

    gen.scenario = "night_shift"
    shifted = traffic.predictions(
        gen.generate_frame(WINDOW + 2 * STEP), {"champion": (version, baseline_model)}
    )
    expected = set(affected_features("night_shift"))
    event = wait_for_event(
        outputs,
        topics.drift,
        lambda e: e["state"] == "drift" and set(e["affected_features"]) == expected,
        service,
    )
    events = outputs(topics.drift)
    # Bounded: a few events for the onset (watch, drift, escalation), never one per window.
    assert 1 <= len(events) <= 4
    assert all(set(e["affected_features"]) <= expected for e in events)
    first_drift = next(e for e in events if e["state"] == "drift")
    # Detected before a whole window of shifted traffic had passed.
    assert first_drift["window_end"] <= shifted[WINDOW - 1][1]
    assert event["severity"] in ("HIGH", "CRITICAL") and event["drift_score"] > 0.6
    assert event["model_name"] == model_name and event["model_version"] == version
    assert event["drift_type"] == "data" and event["window_size"] == WINDOW
    assert all(event["feature_psi"][f] > 0.25 for f in expected)
    assert event["envelope"]["source"] == "drift-detector" and event["envelope"]["causation_id"]

    # The report of the drifted window: generated off the hot path, then served as HTML.
    url = event["report_url"]
    assert url and url.startswith(service.url + "/reports/")
    viewer = headers(Role.VIEWER)
    service.wait(
        "the report", lambda: httpx.get(url, timeout=10, headers=viewer).status_code == 200, timeout_s=240
    )
    page = httpx.get(url, timeout=30, headers=viewer).text
    columns = evidently_columns(page)
    assert expected <= {c for c, status in columns.items() if status == "Detected"}
    assert columns.get("amount") == "Not Detected"
    drifted = re.search(r'<b id="drifted-features">([^<]*)</b>', page)
    assert drifted is not None and set(drifted.group(1).split(", ")) == expected
    listed = service.get("/reports")["reports"]
    assert any(r["url"] == url and r["status"] == "ready" for r in listed)
    assert "drift_report_generation_seconds_count 0.0" not in service.process.metrics_text()


def test_degraded_labels_publish_performance_degraded(
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    start_service: Callable[..., Service],
    traffic: Traffic,
    topics: Topics,
    outputs: Callable[..., list[dict[str, Any]]],
) -> None:
    version = register(baseline_model, mlflow_uri, model_name, "champion")
    service = start_service(
        DRIFT_QUALITY_WINDOW="3000", DRIFT_MIN_LABELLED_SAMPLES="2000", DRIFT_QUALITY_EVAL_EVERY="250"
    )
    serving = {"champion": (version, baseline_model)}

    def labelled_total() -> int:
        groups = service.get("/quality")["groups"]
        return sum(g["labelled_total"] for g in groups)

    # Healthy period: live quality matches the training baseline, no event.
    gen = TransactionGenerator(seed=9)
    rows = gen.generate_frame(5000)
    sent = traffic.labels(rows, traffic.predictions(rows, serving), drop_rate=0.1, seed=1)
    service.wait("healthy labels joined", lambda: labelled_total() == sent)
    assert outputs(topics.degraded) == []
    quality = service.get("/quality")
    group = quality["groups"][0]
    assert (group["model_version"], group["ab_arm"], group["threshold_source"]) == (
        version,
        "champion",
        "registry",
    )
    assert group["metrics"]["auc_roc"] > 0.9 and group["baseline"]["auc_roc"] > 0.9
    assert quality["labels"]["pending_predictions"] == 5000 - sent  # the dropped labels never come

    # Fraud changes its modus operandi: the champion misses most of it.
    gen.scenario = "new_fraud_pattern"
    rows = gen.generate_frame(6000)
    traffic.labels(rows, traffic.predictions(rows, serving), drop_rate=0.1, seed=2)
    event = wait_for_event(outputs, topics.degraded, lambda e: e["severity"] == "CRITICAL", service)
    baseline = ModelRegistry(mlflow_uri, model_name=model_name).training_metrics(version)
    assert event["model_name"] == model_name and event["model_version"] == version
    assert event["ab_arm"] == "champion" and event["metric"] in ("auc_roc", "recall")
    assert event["baseline_value"] == pytest.approx(baseline[f"val_{event['metric']}"])
    assert event["performance_drop"] > 0.15 and event["action_hint"] == "rollback"
    assert event["current_metrics"][event["metric"]] == pytest.approx(event["current_value"])
    assert event["samples"] >= 2000 and event["envelope"]["causation_id"]
    service.wait("all labels consumed", lambda: labelled_total() >= sent + 5000)
    # One episode: the first event as the rolling window turns, then only escalations.
    events = outputs(topics.degraded)
    ranks = [["LOW", "MEDIUM", "HIGH", "CRITICAL"].index(e["severity"]) for e in events]
    assert ranks == sorted(set(ranks)) and len(events) <= 4
    assert all(e["performance_drop"] > 0.05 for e in events)


def split_half(txn: str) -> str:
    """Deterministic arm by transaction-id hash (the predictor's rule, 50/50 for a short test)."""
    return "challenger" if int(uuid.UUID(txn).hex[-4:], 16) % 2 else "champion"


def test_better_challenger_wins_and_an_equal_one_does_not(
    mlflow_uri: str,
    model_name: str,
    baseline_model: TrainingResult,
    retrained_model: TrainingResult,
    start_service: Callable[..., Service],
    topic_factory: Callable[..., str],
    traffic: Traffic,
    topics: Topics,
    outputs: Callable[..., list[dict[str, Any]]],
) -> None:
    # Single partitions and labels after their predictions: the evaluated samples, and so the
    # p-values, are the same on every run.
    topics.predictions = topic_factory("predictions-ordered", partitions=1)
    topics.feedback = topic_factory("feedback-ordered", partitions=1)
    champion = register(baseline_model, mlflow_uri, model_name, "champion")
    better = register(retrained_model, mlflow_uri, model_name, "challenger")
    service = start_service(DRIFT_AB_MIN_SAMPLES="3000", DRIFT_AB_MIN_POSITIVES="30")
    gen = TransactionGenerator(seed=10, scenario="new_fraud_pattern")

    rows = gen.generate_frame(8000)
    serving = {"champion": (champion, baseline_model), "challenger": (better, retrained_model)}
    published = traffic.predictions(rows, serving, split_half)
    service.wait("predictions consumed", lambda: service.rows_seen() == 8000)
    traffic.labels(rows, published, drop_rate=0.05, seed=3)
    won = wait_for_event(outputs, topics.evaluation, lambda e: e["challenger_version"] == better, service)
    assert (won["champion_version"], won["winner"]) == (champion, "challenger")
    assert won["significant"] and won["p_value"] < 0.05
    assert won["metric"] == "business_cost_per_txn" and won["test_name"] == "welch_t_test"
    assert won["champion_samples"] >= 3000 and won["challenger_samples"] >= 3000
    assert (
        won["challenger_metrics"]["business_cost_per_txn"] < won["champion_metrics"]["business_cost_per_txn"]
    )

    # A challenger that is the same model again: no winner.
    equal = register(baseline_model, mlflow_uri, model_name, "challenger")
    rows = gen.generate_frame(8000)
    serving = {"champion": (champion, baseline_model), "challenger": (equal, baseline_model)}
    published = traffic.predictions(rows, serving, split_half)
    service.wait("predictions consumed", lambda: service.rows_seen() == 16_000)
    traffic.labels(rows, published, drop_rate=0.05, seed=4)
    tie = wait_for_event(outputs, topics.evaluation, lambda e: e["challenger_version"] == equal, service)
    assert tie["winner"] == "none" and not tie["significant"] and tie["p_value"] >= 0.05
    evaluations = [e for e in outputs(topics.evaluation)]
    assert [e["challenger_version"] for e in evaluations] == [better, equal]  # once per pair
    view = service.get("/evaluations")
    assert [e["winner"] for e in view["evaluations"]] == ["none", "challenger"]

    # Promotion: the new champion's reference replaces the old one.
    ModelRegistry(mlflow_uri, model_name=model_name).promote(better)
    traffic.publish(
        topics.deployments,
        Topic.MODEL_DEPLOYED,
        {
            "model_name": model_name,
            "alias": "champion",
            "version": better,
            "previous_version": champion,
            "action": "promote",
            "reason": "challenger won",
        },
    )
    traffic.predictions(gen.generate_frame(100), {"champion": (better, retrained_model)})
    service.wait("the new reference", lambda: service.get("/drift")["reference_version"] == better)
