"""The auto-responder as a process against the real broker, registry and MLflow.

Each test runs ``python -m auto_responder`` on a free port with its own registered model
name (so it only acts on, and only replays, its own decisions) and consumer group. Trigger
events go to the real catalogue topics, and the decision log is the real
``system.actions``; both are shared, so the tests identify their records by the trigger
ids they publish and the model name. Heartbeats, alerts and the retraining data use private
topics carrying the same contracts, so other services' traffic never interferes.
Nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from fraud_model.contract import feedback_label, transaction_payload
from fraud_model.generator import TransactionGenerator
from fraud_model.registry import ModelRegistry
from fraud_model.training import TrainingResult, log_and_register, train
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.processes import ServiceLauncher, ServiceProcess
from tests.support.topics import TopicTail

pytestmark = pytest.mark.integration

WAIT_S = 180.0


# --------------------------------------------------------------------------- the process


@dataclass
class ResponderProcess:
    """The auto-responder's API, over a ``python -m auto_responder`` process started by the launcher."""

    service: ServiceProcess

    def get(self, path: str, **params: Any) -> Any:
        return self.service.json(path, **params)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        # Manual actions train or promote synchronously: generous.
        return self.service.post(path, json=body, timeout=300)

    def actions(self, **filters: Any) -> list[dict[str, Any]]:
        """Decision records, oldest first."""
        return list(reversed(self.get("/actions", limit=5000, **filters)["actions"]))

    def wait_actions(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = WAIT_S, **filters: Any
    ) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []

        def check() -> bool:
            records[:] = self.actions(**filters)
            return predicate(records)

        def what() -> str:
            got = [(r["action"], r["status"], r["outcome"]) for r in records]
            return f"expected records for {filters}; got {got}"

        self.service.wait(what, check, timeout_s, interval_s=0.3)
        return records

    def metric(self, name: str, **labels: str) -> float:
        return self.service.metric_sum(name, **labels)


@dataclass
class Stage:
    """One test's world: unique model and private topics."""

    model_name: str
    group_id: str
    topics: dict[str, str]

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "RESPONDER_MODEL_NAME": self.model_name,
            "RESPONDER_GROUP_ID": self.group_id,
            "RESPONDER_HEALTH_TOPIC": self.topics["health"],
            "RESPONDER_ALERTS_TOPIC": self.topics["alerts"],
            "RESPONDER_REQUEST_TOPIC": self.topics["request"],
            "RESPONDER_FEEDBACK_TOPIC": self.topics["feedback"],
            # Never touch the local stack's real instances from a test.
            "RESPONDER_SCALE_COMMAND": "[]",
            "RESPONDER_INSTANCE_ID": f"test-{uuid.uuid4().hex[:6]}",
            **overrides,
        }


@pytest.fixture
def stage(topic_factory: Callable[..., str], serde: AvroSerde, mlflow_uri: str) -> Iterator[Stage]:
    model_name = f"fraud_it_{uuid.uuid4().hex[:10]}"
    world = Stage(
        model_name=model_name,
        group_id=f"test-responder-{uuid.uuid4().hex[:8]}",
        topics={
            "health": topic_factory("health"),
            "alerts": topic_factory("alerts"),
            "request": topic_factory("request", partitions=3),
            "feedback": topic_factory("feedback", partitions=3),
        },
    )
    yield world
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        client.delete_registered_model(model_name)
    except Exception as exc:
        print(f"cleanup of {model_name}: {exc}")


@pytest.fixture
def start_responder(stage: Stage, launcher: ServiceLauncher) -> Callable[..., ResponderProcess]:
    # The launcher is set up after the stage, so the processes stop before the model is deleted.
    def start(**env: str) -> ResponderProcess:
        service = launcher.start(
            "auto_responder", "RESPONDER_", stage.env(**env), timeout_s=300, stop_timeout_s=60
        )
        return ResponderProcess(service)

    return start


# --------------------------------------------------------------------------- events and models


@pytest.fixture
def producer(platform_settings: PlatformSettings, serde: AvroSerde) -> EventProducer:
    return EventProducer(platform_settings, "responder-test", serde)


def publish(
    producer: EventProducer, topic: str, source: str, payload: dict[str, Any], schema_topic: str | None = None
) -> dict[str, Any]:
    event = make_event(source, payload)
    producer.publish(topic, event, key=payload.get("model_name") or source, schema_topic=schema_topic)
    return event


def drift_payload(model_name: str, severity: str = "HIGH", score: float = 0.7) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "severity": severity,
        "drift_type": "data",
        "state": "drift",
        "drift_score": score,
        "affected_features": ["amount", "log_amount"],
        "feature_psi": {"amount": 0.41, "log_amount": 0.38},
        "window_start": now - 60_000,
        "window_end": now,
        "window_size": 2000,
        "model_name": model_name,
        "model_version": "1",
        "report_url": None,
    }


def degraded_payload(model_name: str, version: str, drop: float, arm: str = "champion") -> dict[str, Any]:
    return {
        "model_name": model_name,
        "model_version": version,
        "ab_arm": arm,
        "severity": "MEDIUM",
        "metric": "auc_roc",
        "baseline_value": 0.95,
        "current_value": 0.95 * (1 - drop),
        "performance_drop": drop,
        "baseline_metrics": {"auc_roc": 0.95},
        "current_metrics": {"auc_roc": 0.95 * (1 - drop)},
        "samples": 900,
        "action_hint": "rollback",
    }


def evaluation_payload(model_name: str, champion: str, challenger: str) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "champion_version": champion,
        "challenger_version": challenger,
        "winner": "challenger",
        "metric": "auprc",
        "test_name": "bootstrap",
        "p_value": 0.003,
        "significant": True,
        "champion_metrics": {"auprc": 0.61},
        "challenger_metrics": {"auprc": 0.74},
        "champion_samples": 1800,
        "challenger_samples": 220,
    }


@pytest.fixture(scope="module")
def trained() -> TrainingResult:
    frame = TransactionGenerator(seed=11).generate_frame(6000)
    return train(frame, seed=11)


def register(
    result: TrainingResult, mlflow_uri: str, model_name: str, aliases: list[str | None]
) -> list[str]:
    """Register one version per entry; an entry names the alias to give it (champion via promote)."""
    registry = ModelRegistry(mlflow_uri, model_name)
    versions = []
    for alias in aliases:
        info = log_and_register(
            result,
            tracking_uri=mlflow_uri,
            model_name=model_name,
            reason="test",
            alias_requires_validation=False,
        )
        versions.append(info.version)
        if alias == "champion":
            registry.promote(info.version)
        elif alias:
            registry.set_alias(alias, info.version)
    return versions


def by_trigger(records: list[dict[str, Any]], trigger_id: str) -> list[tuple[str, str]]:
    return [(r["action"], r["status"]) for r in records if r["trigger_event_id"] == trigger_id]


# --------------------------------------------------------------------------- tests


def publish_labelled(producer: EventProducer, stage: Stage, rows: int, seed: int) -> None:
    frame = TransactionGenerator(seed=seed, scenario="amount_inflation").generate_frame(rows)
    for record in frame.to_dict("records"):
        txn = transaction_payload(record)
        producer.produce(
            stage.topics["request"],
            make_event("ingest", txn),
            key=txn["transaction_id"],
            schema_topic=Topic.PREDICTION_REQUEST,
        )
        producer.produce(
            stage.topics["feedback"],
            make_event("ingest", feedback_label(txn["transaction_id"], record["is_fraud"], "simulation")),
            key=txn["transaction_id"],
            schema_topic=Topic.PREDICTION_FEEDBACK,
        )
    assert producer.flush() == 0


def test_drift_retrains_a_challenger_and_announces_it(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
    trained: TrainingResult,
    mlflow_uri: str,
) -> None:
    [champion] = register(trained, mlflow_uri, stage.model_name, ["champion"])
    publish_labelled(producer, stage, rows=8000, seed=5)
    responder = start_responder(RESPONDER_RETRAIN_MIN_AUC="0.7")
    watch = topic_tail(
        {
            Topic.SYSTEM_ACTIONS: Topic.SYSTEM_ACTIONS,
            Topic.MODEL_TRAINING_STARTED: Topic.MODEL_TRAINING_STARTED,
            Topic.MODEL_TRAINING_COMPLETED: Topic.MODEL_TRAINING_COMPLETED,
            Topic.MODEL_DEPLOYED: Topic.MODEL_DEPLOYED,
            stage.topics["alerts"]: Topic.SYSTEM_ALERTS,
        }
    )

    drift = publish(producer, Topic.DATA_DRIFT_DETECTED, "drift-detector", drift_payload(stage.model_name))
    drift_id = drift["envelope"]["event_id"]
    records = responder.wait_actions(
        lambda rs: any(r["status"] in ("succeeded", "failed") for r in rs), trigger_event_id=drift_id
    )
    assert by_trigger(records, drift_id) == [("retrain", "started"), ("retrain", "succeeded")], records
    done = records[-1]
    assert done["rule_id"] == "data-drift"
    assert (done["trigger_event_type"], done["trigger_severity"], done["assessed_severity"]) == (
        "data.drift.detected",
        "HIGH",
        "HIGH",
    )
    version = done["details"]["version"]
    assert int(done["details"]["rows"]) == 8000
    assert done["duration_ms"] > 0

    # MLflow: a new version, @challenger on it, the champion untouched, the trigger in its tags.
    registry = ModelRegistry(mlflow_uri, stage.model_name)
    assert registry.version_for_alias("challenger") == version != champion
    assert registry.version_for_alias("champion") == champion
    assert registry.version_tags(version)["trigger_event_id"] == drift_id

    # The same decisions on system.actions, and every event of the action caused by the drift.
    actions = watch.wait(Topic.SYSTEM_ACTIONS, 2, trigger_event_id=drift_id)
    assert [a["status"] for a in actions] == ["started", "succeeded"]
    [started_training] = watch.wait(Topic.MODEL_TRAINING_STARTED, model_name=stage.model_name)
    [completed] = watch.wait(Topic.MODEL_TRAINING_COMPLETED, model_name=stage.model_name)
    [deployed] = watch.wait(Topic.MODEL_DEPLOYED, model_name=stage.model_name)
    assert started_training["trigger_event_id"] == drift_id and started_training["dataset_size"] == 8000
    assert (completed["status"], completed["model_version"], completed["alias"]) == (
        "succeeded",
        version,
        "challenger",
    )
    assert (deployed["alias"], deployed["version"], deployed["action"]) == (
        "challenger",
        version,
        "challenger",
    )
    for event in (*actions, started_training, completed, deployed):
        assert event["envelope"]["causation_id"] == drift_id
        assert event["envelope"]["correlation_id"] == drift["envelope"]["correlation_id"]
    # People were told when the retrain started (the rule asks to notify).
    [notice] = watch.wait(stage.topics["alerts"], related_event_id=drift_id)
    assert notice["dedup_key"] == f"data_drift_detected:{stage.model_name}:amount:retrain"
    assert responder.metric("responder_actions_total", action="retrain", status="succeeded") == 1


def test_retrain_without_enough_labelled_data_fails_clearly(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
) -> None:
    publish_labelled(producer, stage, rows=300, seed=6)
    responder = start_responder()
    watch = topic_tail(
        {
            stage.topics["alerts"]: Topic.SYSTEM_ALERTS,
            Topic.MODEL_TRAINING_STARTED: Topic.MODEL_TRAINING_STARTED,
        }
    )
    drift = publish(
        producer, Topic.DATA_DRIFT_DETECTED, "drift-detector", drift_payload(stage.model_name, "MEDIUM", 0.3)
    )
    drift_id = drift["envelope"]["event_id"]
    records = responder.wait_actions(
        lambda rs: any(r["status"] == "failed" for r in rs), trigger_event_id=drift_id
    )
    assert by_trigger(records, drift_id) == [("retrain", "started"), ("retrain", "failed")]
    outcome = records[-1]["outcome"]
    assert "too few labelled rows" in outcome and "300 rows" in outcome
    # A failed action pages people; no training run was announced.
    failure = watch.wait(stage.topics["alerts"], related_event_id=drift_id, severity="HIGH")
    assert any(a["dedup_key"].endswith("retrain-failed") for a in failure)
    watch.poll(1)
    assert watch.on(Topic.MODEL_TRAINING_STARTED, model_name=stage.model_name) == []
    assert responder.get("/actions")["success_ratio"] == 0.0


def test_won_evaluation_promotes_the_challenger(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
    trained: TrainingResult,
    mlflow_uri: str,
) -> None:
    champion, challenger = register(trained, mlflow_uri, stage.model_name, ["champion", "challenger"])
    responder = start_responder()
    watch = topic_tail({Topic.MODEL_DEPLOYED: Topic.MODEL_DEPLOYED})
    evaluation = publish(
        producer,
        Topic.MODEL_EVALUATION_COMPLETED,
        "drift-detector",
        evaluation_payload(stage.model_name, champion, challenger),
    )
    trigger = evaluation["envelope"]["event_id"]
    records = responder.wait_actions(lambda rs: len(rs) == 2, trigger_event_id=trigger)
    assert by_trigger(records, trigger) == [("promote", "started"), ("promote", "succeeded")], records
    assert records[-1]["rule_id"] == "challenger-won"
    registry = ModelRegistry(mlflow_uri, stage.model_name)
    assert registry.aliases() == {"champion": challenger, "previous_champion": champion}
    [deployed] = watch.wait(Topic.MODEL_DEPLOYED, model_name=stage.model_name)
    assert (deployed["alias"], deployed["version"], deployed["previous_version"], deployed["action"]) == (
        "champion",
        challenger,
        champion,
        "promote",
    )
    assert deployed["envelope"]["causation_id"] == trigger


def test_validation_gate_keeps_the_champion_when_a_worse_challenger_won_the_evaluation(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
    trained: TrainingResult,
    mlflow_uri: str,
) -> None:
    [champion] = register(trained, mlflow_uri, stage.model_name, ["champion"])
    # A deliberately worse challenger: trained on shuffled labels.
    frame = TransactionGenerator(seed=11).generate_frame(6000)
    frame["is_fraud"] = frame["is_fraud"].sample(frac=1.0, random_state=4).to_numpy()
    [challenger] = register(train(frame, seed=11), mlflow_uri, stage.model_name, ["challenger"])
    # Recent labelled traffic after the challenger was registered: the gate's holdout.
    publish_labelled(producer, stage, rows=3000, seed=8)
    responder = start_responder()
    watch = topic_tail(
        {stage.topics["alerts"]: Topic.SYSTEM_ALERTS, Topic.MODEL_DEPLOYED: Topic.MODEL_DEPLOYED}
    )
    evaluation = publish(
        producer,
        Topic.MODEL_EVALUATION_COMPLETED,
        "drift-detector",
        evaluation_payload(stage.model_name, champion, challenger),
    )
    trigger = evaluation["envelope"]["event_id"]
    records = responder.wait_actions(lambda rs: len(rs) == 2, trigger_event_id=trigger)
    assert by_trigger(records, trigger) == [("promote", "started"), ("promote", "suppressed")], records
    refused = records[-1]
    assert refused["suppressed_reason"] == "validation_gate"
    assert "promotion refused by validation gate" in refused["outcome"]
    assert refused["details"]["gate"] == "refused" and int(refused["details"]["gate_rows"]) == 3000
    registry = ModelRegistry(mlflow_uri, stage.model_name)
    assert registry.aliases() == {"champion": champion, "challenger": challenger}
    alerts = watch.wait(stage.topics["alerts"], 2, related_event_id=trigger)
    [alert] = [a for a in alerts if a["dedup_key"].endswith("validation-gate")]  # besides "promote started"
    assert alert["severity"] == "HIGH" and "refused by the validation gate" in alert["title"]
    assert watch.on(Topic.MODEL_DEPLOYED, model_name=stage.model_name) == []
    assert responder.metric("responder_actions_total", action="promote", status="failed") == 0


def test_high_degradation_rolls_back_to_the_previous_champion(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
    trained: TrainingResult,
    mlflow_uri: str,
) -> None:
    first, second = register(trained, mlflow_uri, stage.model_name, ["champion", "champion"])
    responder = start_responder()
    watch = topic_tail({Topic.MODEL_DEPLOYED: Topic.MODEL_DEPLOYED})
    # A 12 % drop reported as MEDIUM is re-assessed HIGH: rollback, not retrain.
    degraded = publish(
        producer,
        Topic.MODEL_PERFORMANCE_DEGRADED,
        "drift-detector",
        degraded_payload(stage.model_name, second, 0.12),
    )
    trigger = degraded["envelope"]["event_id"]
    records = responder.wait_actions(lambda rs: len(rs) == 2, trigger_event_id=trigger)
    assert by_trigger(records, trigger) == [("rollback", "started"), ("rollback", "succeeded")], records
    assert (records[-1]["trigger_severity"], records[-1]["assessed_severity"]) == ("MEDIUM", "HIGH")
    registry = ModelRegistry(mlflow_uri, stage.model_name)
    assert registry.aliases() == {"champion": first}
    [deployed] = watch.wait(Topic.MODEL_DEPLOYED, model_name=stage.model_name)
    assert (deployed["alias"], deployed["version"], deployed["previous_version"], deployed["action"]) == (
        "champion",
        first,
        second,
        "rollback",
    )
    assert deployed["envelope"]["causation_id"] == trigger


def test_cooldown_suppresses_a_repeated_action(
    stage: Stage, start_responder: Callable[..., ResponderProcess], producer: EventProducer
) -> None:
    responder = start_responder()  # default cooldowns: alert 5 min
    triggers = []
    for _ in range(2):
        event = publish(
            producer,
            Topic.MODEL_PERFORMANCE_DEGRADED,
            "drift-detector",
            degraded_payload(stage.model_name, "7", 0.3, arm="challenger"),
        )
        triggers.append(event["envelope"]["event_id"])
    responder.wait_actions(lambda rs: len(rs) >= 2, rule_id="challenger-degraded")
    records = responder.actions(rule_id="challenger-degraded")
    assert by_trigger(records, triggers[0]) == [("alert", "succeeded")]
    assert by_trigger(records, triggers[1]) == [("alert", "suppressed")]
    suppressed = records[-1]
    assert suppressed["suppressed_reason"] == "cooldown"
    assert "cooldown" in suppressed["outcome"]
    cooldowns = responder.get("/policies/cooldowns")
    [active] = [c for c in cooldowns["active"] if c["action"] == "alert"]
    assert active["event_type"] == "model_performance_degraded" and active["cooldown_s"] == 300
    assert responder.metric("responder_suppressed_total", action="alert", reason="cooldown") == 1


def test_dampening_turns_a_fifth_response_within_the_hour_into_monitoring(
    stage: Stage, start_responder: Callable[..., ResponderProcess], producer: EventProducer
) -> None:
    responder = start_responder(RESPONDER_COOLDOWNS_S=json.dumps({"alert": 0}))
    triggers = []
    for _ in range(5):
        event = publish(
            producer,
            Topic.MODEL_PERFORMANCE_DEGRADED,
            "drift-detector",
            degraded_payload(stage.model_name, "7", 0.3, arm="challenger"),
        )
        triggers.append(event["envelope"]["event_id"])
        # One at a time, so the order of decisions is the order of events.
        responder.wait_actions(
            lambda rs, t=event["envelope"]["event_id"]: any(r["trigger_event_id"] == t for r in rs),
            rule_id="challenger-degraded",
        )
    records = responder.actions(rule_id="challenger-degraded")
    for trigger in triggers[:4]:
        assert by_trigger(records, trigger) == [("alert", "succeeded")]
    assert by_trigger(records, triggers[4]) == [("alert", "suppressed"), ("monitor", "succeeded")]
    dampened, monitor = [r for r in records if r["trigger_event_id"] == triggers[4]]
    assert dampened["suppressed_reason"] == "dampening"
    assert monitor["details"]["replaces"] == "alert"
    # The monitor record is the contract the drift-detector honours.
    assert int(monitor["details"]["window_size"]) > 0 and float(monitor["details"]["duration_s"]) > 0


def test_restart_neither_repeats_an_action_nor_forgets_cooldowns(
    stage: Stage, start_responder: Callable[..., ResponderProcess], producer: EventProducer, tmp_path: Path
) -> None:
    marker = tmp_path / "scale-runs.txt"
    # A scale command that records its run and then hangs: the process dies mid-action.
    command = [
        sys.executable,
        "-c",
        "import os, sys, time\n"
        "open(sys.argv[1], 'a').write(f'{os.getpid()} {sys.argv[2]}\\n')\n"
        "time.sleep(600)",
        str(marker),
        "{instances}",
    ]
    first = start_responder(RESPONDER_SCALE_COMMAND=json.dumps(command))
    done = publish(
        producer,
        Topic.MODEL_PERFORMANCE_DEGRADED,
        "drift-detector",
        degraded_payload(stage.model_name, "7", 0.3, arm="challenger"),
    )
    done_id = done["envelope"]["event_id"]
    first.wait_actions(lambda rs: len(rs) == 1, trigger_event_id=done_id)
    latency = publish(
        producer,
        stage.topics["alerts"],
        "alerter",
        {
            "alert_id": str(uuid.uuid4()),
            "severity": "HIGH",
            "title": "p99 scoring latency above 200 ms",
            "message": "",
            "dedup_key": f"latency-{uuid.uuid4().hex[:6]}",
            "status": "firing",
            "labels": {
                "alertname": "PredictionLatencyP99High",
                "service": "predictor",
                "severity": "critical",
            },
            "related_event_id": None,
        },
        schema_topic=Topic.SYSTEM_ALERTS,
    )
    latency_id = latency["envelope"]["event_id"]
    records = first.wait_actions(lambda rs: len(rs) == 1, trigger_event_id=latency_id)
    assert by_trigger(records, latency_id) == [("scale", "started")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.2)
    runs = marker.read_text().splitlines()
    assert len(runs) == 1 and runs[0].endswith(" 2")
    first.service.kill()  # no chance to finish or record anything
    os.kill(int(runs[0].split()[0]), signal.SIGKILL)

    # A new consumer group: both triggers are delivered again, as after lost offsets.
    second = start_responder(
        RESPONDER_SCALE_COMMAND=json.dumps(command), RESPONDER_GROUP_ID=f"{stage.group_id}-again"
    )
    records = second.wait_actions(
        lambda rs: any(r["status"] == "failed" for r in rs), trigger_event_id=latency_id
    )
    assert by_trigger(records, latency_id) == [("scale", "started"), ("scale", "failed")]
    assert "interrupted" in records[-1]["outcome"]
    assert records[-1]["action_id"] == records[0]["action_id"]
    # Give the second process every chance to (wrongly) act on the redelivered triggers.
    again = publish(
        producer,
        Topic.MODEL_PERFORMANCE_DEGRADED,
        "drift-detector",
        degraded_payload(stage.model_name, "7", 0.3, arm="challenger"),
    )
    again_id = again["envelope"]["event_id"]
    records = second.wait_actions(lambda rs: any(r["trigger_event_id"] == again_id for r in rs))
    assert by_trigger(records, done_id) == [("alert", "succeeded")]  # not repeated
    assert by_trigger(records, latency_id) == [("scale", "started"), ("scale", "failed")]  # not rerun
    assert marker.read_text().splitlines() == runs
    # The cooldown of the alert taken before the restart still holds.
    assert by_trigger(records, again_id) == [("alert", "suppressed")]
    assert [r["suppressed_reason"] for r in records if r["trigger_event_id"] == again_id] == ["cooldown"]
    assert second.metric("responder_history_replayed_records") == 2


def test_a_retrain_killed_midway_is_reported_interrupted_exactly_once(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
) -> None:
    # The retrain waits for late labels before reading its data: long enough to be killed in.
    env = {"RESPONDER_RETRAIN_SETTLE_S": "600"}
    first = start_responder(**env)
    watch = topic_tail(
        {Topic.SYSTEM_ACTIONS: Topic.SYSTEM_ACTIONS, stage.topics["alerts"]: Topic.SYSTEM_ALERTS}
    )
    drift = publish(producer, Topic.DATA_DRIFT_DETECTED, "drift-detector", drift_payload(stage.model_name))
    drift_id = drift["envelope"]["event_id"]
    [started] = first.wait_actions(lambda rs: len(rs) == 1, trigger_event_id=drift_id)
    assert (started["action"], started["status"]) == ("retrain", "started")
    first.service.wait(
        "the retrain to be running", lambda: [r["action_id"] for r in first.get("/actions")["running"]], 60
    )
    first.service.kill()  # SIGKILL in the middle of the retrain: no terminal record

    second = start_responder(**env)  # same consumer group: the trigger's offset was committed
    records = second.wait_actions(lambda rs: len(rs) == 2, trigger_event_id=drift_id)
    assert by_trigger(records, drift_id) == [("retrain", "started"), ("retrain", "failed")]
    closed = records[-1]
    assert closed["action_id"] == started["action_id"]
    assert (
        closed["details"]["reason"] == "interrupted by restart" and closed["details"]["interrupted"] == "true"
    )
    assert second.get("/actions")["running"] == []  # not run again
    assert second.metric("responder_actions_interrupted_total", action="retrain") == 1
    assert second.get("/actions")["success_ratio"] == 0.0  # the failure counts
    failure = watch.wait(stage.topics["alerts"], related_event_id=drift_id, severity="HIGH")
    assert [a["dedup_key"] for a in failure if "interrupted by restart" in a["message"]] == [
        f"data_drift_detected:{stage.model_name}:amount:retrain-failed"
    ]

    # Another restart finds nothing to close: still exactly one terminal record.
    assert second.service.stop() in (0, -signal.SIGTERM)
    third = start_responder(**env)
    records = third.wait_actions(lambda rs: len(rs) >= 2, trigger_event_id=drift_id)
    assert by_trigger(records, drift_id) == [("retrain", "started"), ("retrain", "failed")]
    assert third.metric("responder_actions_interrupted_total", action="retrain") == 0
    watch.drain(quiet_s=3)
    on_topic = [a["status"] for a in watch.on(Topic.SYSTEM_ACTIONS, action_id=started["action_id"])]
    assert on_topic == ["started", "failed"]
    assert len([a for a in watch.on(stage.topics["alerts"]) if "interrupted by restart" in a["message"]]) == 1


def test_a_predictor_that_stops_beating_is_rolled_back_and_recovery_resolves_the_alert(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    producer: EventProducer,
    topic_tail: Callable[..., TopicTail],
    trained: TrainingResult,
    mlflow_uri: str,
) -> None:
    first, second = register(trained, mlflow_uri, stage.model_name, ["champion", "champion"])
    responder = start_responder(RESPONDER_HEARTBEAT_TIMEOUT_S="3", RESPONDER_HEALTH_CHECK_INTERVAL_S="0.5")
    watch = topic_tail({stage.topics["alerts"]: Topic.SYSTEM_ALERTS})

    def heartbeat() -> dict[str, Any]:
        return publish(
            producer,
            stage.topics["health"],
            "predictor",
            {
                "service": "predictor",
                "instance_id": "predictor-test",
                "status": "ok",
                "dependencies": {"kafka": "ok", "model": "ok"},
                "version": "0.1.0",
                "uptime_s": 5.0,
                "details": {"consumer_lag": "0"},
            },
            schema_topic=Topic.SYSTEM_HEALTH,
        )

    last = heartbeat()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not responder.get("/services")["services"]:
        last = heartbeat()
        time.sleep(0.5)
    assert [s["service"] for s in responder.get("/services")["services"]] == ["predictor"]
    # Silence: the watcher declares the predictor failed, and the rule rolls the model back.
    records = responder.wait_actions(
        lambda rs: any(r["status"] in ("succeeded", "failed") for r in rs),
        rule_id="predictor-health-check-failed",
    )
    assert [(r["action"], r["status"]) for r in records] == [
        ("rollback", "started"),
        ("rollback", "succeeded"),
    ]
    assert records[0]["assessed_severity"] == "HIGH" and records[0]["details"]["status"] == "silent"
    assert records[0]["trigger_event_id"] == last["envelope"]["event_id"]  # the last beat heard
    assert ModelRegistry(mlflow_uri, stage.model_name).aliases() == {"champion": first}
    assert responder.metric("responder_service_up", service="predictor") == 0

    heartbeat()
    recovered = responder.wait_actions(lambda rs: len(rs) == 1, rule_id="service-health-recovered")
    assert (recovered[0]["action"], recovered[0]["status"]) == ("alert", "succeeded")
    resolved = watch.wait(stage.topics["alerts"], status="resolved")
    assert resolved[0]["dedup_key"] == "service_health_check_failed:predictor"


def test_manual_promote_and_rollback_go_through_the_same_path(
    stage: Stage,
    start_responder: Callable[..., ResponderProcess],
    trained: TrainingResult,
    mlflow_uri: str,
) -> None:
    champion, challenger = register(trained, mlflow_uri, stage.model_name, ["champion", "challenger"])
    responder = start_responder()
    registry = ModelRegistry(mlflow_uri, stage.model_name)

    promoted = responder.post("/actions/promote", {})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["action"], body["status"], body["rule_id"], body["trigger_event_type"]) == (
        "promote",
        "succeeded",
        "manual-promote",
        "manual",
    )
    assert registry.aliases() == {"champion": challenger, "previous_champion": champion}
    rolled = responder.post("/actions/rollback")
    assert rolled.status_code == 200 and registry.aliases() == {"champion": champion}
    refused = responder.post("/actions/rollback")
    assert refused.status_code == 409 and refused.json()["status"] == "failed"
    assert "previous_champion" in refused.json()["outcome"]

    history = responder.actions(trigger_event_type="manual")
    assert [(r["action"], r["status"]) for r in history] == [
        ("promote", "started"),
        ("promote", "succeeded"),
        ("rollback", "started"),
        ("rollback", "succeeded"),
        ("rollback", "started"),
        ("rollback", "failed"),
    ]
    one = responder.get(f"/actions/{body['action_id']}")
    assert [r["status"] for r in one["records"]] == ["started", "succeeded"]
    rules = responder.get("/rules")
    assert {r["id"] for r in rules["rules"]} >= {"data-drift", "performance-degraded", "challenger-won"}
    assert responder.get("/policies/cooldowns")["cooldowns_s"]["retrain"] == 3600
    assert responder.metric("responder_actions_total", action="rollback", status="failed") == 1
    assert responder.metric("responder_action_success_ratio") == pytest.approx(2 / 3)
