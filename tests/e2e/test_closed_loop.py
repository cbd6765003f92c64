"""The closed loop, end to end: the constellation reacts to a drifted world without a human.

Real processes — predictor, drift-detector, auto-responder, alerter — run against the real
Kafka, schema registry and MLflow, with a registered model of their own (fresh name) whose
history is "v1 was promoted over v0 some time ago". The generator streams transactions
with delayed labels: first the baseline world, then a drifted one in which activity moves
into the night (feature drift: ``night_shift``) while a new fraud ring appears that the
champion misses (concept drift: ``new_fraud_pattern``), batches alternating. Then:

* the drift-detector publishes ``data.drift.detected``; the auto-responder retrains on the
  recent labelled data, registers a ``@challenger`` and tells people — the alert reaches a
  local webhook receiver and a local SMTP server through the alerter;
* the champion's live quality collapses (``model.performance.degraded``): it is rolled back
  to ``@previous_champion``;
* the predictor serves the challenger to half the traffic; the drift-detector's A/B
  evaluation finds it significantly cheaper; it is promoted, ``@champion`` moves, and the
  predictor serves the new version;
* the causal chain is followed by ids from the final ``model.deployed`` back to the drift.

Transactions, predictions, labels, alerts and heartbeats use private topics (other
traffic on a shared broker cannot disturb the arithmetic); the model lifecycle topics and
``system.actions`` are the catalogue's, told apart by the model name.

Test-only settings, chosen so the loop closes in minutes on a laptop rather than in hours:
small windows and minimum sample sizes, a 50 % challenger share, and the drift-detector
counting only quality drops above 15 % (so the degraded champion is rolled back at once
rather than first retrained for a smaller drop).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from mlflow import MlflowClient

from fraud_model.contract import feedback_label, transaction_payload
from fraud_model.generator import TransactionGenerator
from fraud_model.registry import ModelRegistry
from fraud_model.training import log_and_register, train
from mlops_platform.contracts import Topic, load_catalogue, make_event
from mlops_platform.kafka import EventProducer, ensure_topics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.alert_sinks import AlertSinks
from tests.support.processes import ServiceLauncher, ServiceProcess, connection_env
from tests.support.topics import TopicTail

pytestmark = pytest.mark.e2e

FRAUD_RATE = 0.1
LOOP_TIMEOUT_S = 1500.0
DRIFTED = ["night_shift", "new_fraud_pattern"]


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """Streams generator transactions, and their labels one batch later, until stopped."""

    producer: EventProducer
    request_topic: str
    feedback_topic: str
    scenarios: list[str] = field(default_factory=lambda: ["baseline"])
    batch: int = 100
    pause_s: float = 0.25
    sent: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.generator = TransactionGenerator(seed=31, fraud_rate=FRAUD_RATE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        index = 0
        try:
            while not self._stop.is_set():
                self.generator.scenario = self.scenarios[index % len(self.scenarios)]
                index += 1
                rows = self.generator.generate(self.batch)
                for row in rows:
                    txn = transaction_payload(row)
                    self.producer.produce(
                        self.request_topic,
                        make_event("loop-traffic", txn),
                        key=txn["transaction_id"],
                        schema_topic=Topic.PREDICTION_REQUEST,
                    )
                # Labels arrive late: those of the previous batch go out now.
                for row in pending:
                    label = feedback_label(row["transaction_id"], row["is_fraud"], "simulation")
                    self.producer.produce(
                        self.feedback_topic,
                        make_event("loop-traffic", label),
                        key=row["transaction_id"],
                        schema_topic=Topic.PREDICTION_FEEDBACK,
                    )
                pending = rows
                self.producer.flush()
                self.sent += len(rows)
                self._stop.wait(self.pause_s)
        except BaseException as exc:  # surfaced by the test's waits
            self.error = exc


# --------------------------------------------------------------------------- the constellation


@pytest.fixture(scope="module")
def provisioned(platform_settings: PlatformSettings, serde: AvroSerde, mlflow_uri: str) -> AvroSerde:
    ensure_topics(platform_settings, load_catalogue(platform_settings.schemas_dir))
    return serde


@pytest.fixture(scope="module")
def model(mlflow_uri: str) -> Iterator[tuple[str, str, str]]:
    """A fresh registered model: v0 (@previous_champion) and v1 (@champion), both trained on the baseline."""
    name = f"fraud_detector_loop_{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(mlflow_uri, name)
    versions = []
    for seed in (1, 2):
        frame = TransactionGenerator(seed=seed, fraud_rate=FRAUD_RATE).generate_frame(6000)
        info = log_and_register(
            train(frame, seed=seed), tracking_uri=mlflow_uri, model_name=name, reason="first champion"
        )
        registry.promote(info.version)
        versions.append(info.version)
    assert registry.aliases() == {"champion": versions[1], "previous_champion": versions[0]}
    yield name, versions[0], versions[1]
    try:
        MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).delete_registered_model(name)
    except Exception as exc:
        print(f"cleanup of {name}: {exc}")


def wait(
    what: str, predicate: Callable[[], Any], deadline: float, services: list[ServiceProcess], traffic: Traffic
) -> Any:
    """Poll until ``predicate`` is truthy; on timeout fail with the services' log tails."""
    while True:
        if traffic.error is not None:
            pytest.fail(f"traffic generator failed: {traffic.error!r}")
        for service in services:
            if not service.alive():
                pytest.fail(f"{service.module} exited:\n{service.log()}")
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {s.module}\n{s.log(4000)}" for s in services)
            pytest.fail(
                f"timed out waiting for {what} (sent {traffic.sent} transactions)\n{tails}", pytrace=False
            )
        time.sleep(0.5)


def test_drift_to_promotion_and_degradation_to_rollback_close_without_a_human(
    platform_settings: PlatformSettings,
    provisioned: AvroSerde,
    topic_factory: Callable[..., str],
    service_launcher: ServiceLauncher,
    model: tuple[str, str, str],
    mlflow_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    serde = provisioned
    model_name, v0, v1 = model
    topics = {
        "request": topic_factory("loop.request", partitions=3),
        "completed": topic_factory("loop.completed", partitions=3),
        "feedback": topic_factory("loop.feedback", partitions=3),
        "alerts": topic_factory("loop.alerts"),
        "health": topic_factory("loop.health"),
    }
    registry = ModelRegistry(mlflow_uri, model_name)
    bus = TopicTail(
        platform_settings,
        serde,
        {
            Topic.DATA_DRIFT_DETECTED: Topic.DATA_DRIFT_DETECTED,
            Topic.MODEL_PERFORMANCE_DEGRADED: Topic.MODEL_PERFORMANCE_DEGRADED,
            Topic.MODEL_EVALUATION_COMPLETED: Topic.MODEL_EVALUATION_COMPLETED,
            Topic.MODEL_DEPLOYED: Topic.MODEL_DEPLOYED,
            Topic.MODEL_TRAINING_COMPLETED: Topic.MODEL_TRAINING_COMPLETED,
            Topic.SYSTEM_ACTIONS: Topic.SYSTEM_ACTIONS,
            topics["alerts"]: Topic.SYSTEM_ALERTS,
        },
    )
    ours = lambda v: v.get("model_name") == model_name  # noqa: E731
    common = connection_env(platform_settings)
    sinks = AlertSinks().start()
    traffic = Traffic(
        EventProducer(platform_settings, "loop-traffic", serde), topics["request"], topics["feedback"]
    )
    try:
        alerter = service_launcher.start(
            "alerter",
            "ALERTER_",
            {
                **common,
                **sinks.alerter_env(),
                "ALERTER_ALERTS_TOPIC": topics["alerts"],
                "ALERTER_GROUP_ID": f"e2e-alerter-{uuid.uuid4().hex[:8]}",
                "ALERTER_INSTANCE_ID": f"e2e-{uuid.uuid4().hex[:6]}",
            },
            timeout_s=300,
        )
        predictor = service_launcher.start(
            "predictor",
            "PREDICTOR_",
            {
                **common,
                "PREDICTOR_MODEL_NAME": model_name,
                "PREDICTOR_REQUEST_TOPIC": topics["request"],
                "PREDICTOR_COMPLETED_TOPIC": topics["completed"],
                "PREDICTOR_GROUP_ID": f"e2e-predictor-{uuid.uuid4().hex[:8]}",
                "PREDICTOR_INSTANCE_ID": f"e2e-{uuid.uuid4().hex[:6]}",
                "PREDICTOR_CHALLENGER_SHARE": "0.5",
            },
            timeout_s=300,
        )
        detector = service_launcher.start(
            "drift_detector",
            "DRIFT_",
            {
                **common,
                "DRIFT_MODEL_NAME": model_name,
                "DRIFT_PREDICTIONS_TOPIC": topics["completed"],
                "DRIFT_FEEDBACK_TOPIC": topics["feedback"],
                "DRIFT_GROUP_ID": f"e2e-drift-{uuid.uuid4().hex[:8]}",
                "DRIFT_INSTANCE_ID": f"e2e-{uuid.uuid4().hex[:6]}",
                "DRIFT_REPORTS_DIR": str(tmp_path_factory.mktemp("reports")),
                "DRIFT_WINDOW_SIZE": "1000",
                "DRIFT_WINDOW_STEP": "500",
                "DRIFT_QUALITY_WINDOW": "1000",
                "DRIFT_QUALITY_EVAL_EVERY": "100",
                "DRIFT_MIN_LABELLED_SAMPLES": "600",
                "DRIFT_MIN_LABELLED_POSITIVES": "30",
                "DRIFT_DEGRADATION_MARGIN": "0.15",
                "DRIFT_AB_MIN_SAMPLES": "600",
                "DRIFT_AB_MIN_POSITIVES": "30",
            },
            timeout_s=300,
        )
        responder = service_launcher.start(
            "auto_responder",
            "RESPONDER_",
            {
                **common,
                "RESPONDER_MODEL_NAME": model_name,
                "RESPONDER_GROUP_ID": f"e2e-responder-{uuid.uuid4().hex[:8]}",
                "RESPONDER_INSTANCE_ID": f"e2e-{uuid.uuid4().hex[:6]}",
                "RESPONDER_ALERTS_TOPIC": topics["alerts"],
                "RESPONDER_HEALTH_TOPIC": topics["health"],
                "RESPONDER_REQUEST_TOPIC": topics["request"],
                "RESPONDER_FEEDBACK_TOPIC": topics["feedback"],
                "RESPONDER_SCALE_COMMAND": "[]",
            },
            timeout_s=300,
        )
        services = [alerter, predictor, detector, responder]
        deadline = time.monotonic() + LOOP_TIMEOUT_S

        def step(what: str, predicate: Callable[[], Any]) -> Any:
            def check() -> Any:
                bus.poll(0.3)
                return predicate()

            return wait(what, check, deadline, services, traffic)

        # -- the world as the champion knows it, then the drifted one
        traffic.start()
        step("2000 baseline transactions", lambda: traffic.sent >= 2000)
        traffic.scenarios = list(DRIFTED)

        # -- drift detected -> retrain -> @challenger, people told
        drifts = step(
            "a data drift the rules retrain on",
            lambda: bus.on(
                Topic.DATA_DRIFT_DETECTED,
                lambda v: ours(v) and v["state"] == "drift" and v["severity"] != "LOW",
            ),
        )
        first_drift = drifts[0]
        retrained = step(
            "the retrain to finish",
            lambda: [
                a
                for a in bus.on(Topic.SYSTEM_ACTIONS, ours_action(model_name))
                if a["action"] == "retrain" and a["status"] in ("succeeded", "failed")
            ],
        )
        assert retrained[0]["status"] == "succeeded", retrained[0]["outcome"]
        v2 = retrained[0]["details"]["version"]
        assert registry.version_for_alias("challenger") == v2
        step(
            "the predictor to serve the challenger",
            lambda: (predictor.get("/model").json().get("challenger") or {}).get("version") == v2,
        )
        step(
            "the drift alert at the webhook receiver and the SMTP server",
            lambda: (
                any(
                    isinstance(r.body, dict)
                    and r.body.get("related_event_id") == retrained[0]["trigger_event_id"]
                    and str(r.body.get("dedup_key")).startswith(f"data_drift_detected:{model_name}")
                    for r in sinks.requests("/webhook")
                )
                and any(f"data_drift_detected:{model_name}" in str(m.message) for m in sinks.mails())
            ),
        )

        # -- the champion degrades -> rollback to @previous_champion
        rollback = step(
            "the degraded champion to be rolled back",
            lambda: bus.on(Topic.MODEL_DEPLOYED, lambda v: ours(v) and v["action"] == "rollback"),
        )[0]
        assert (rollback["alias"], rollback["version"], rollback["previous_version"]) == ("champion", v0, v1)
        degraded = bus.by_id(Topic.MODEL_PERFORMANCE_DEGRADED, rollback["envelope"]["causation_id"])
        assert (degraded["model_version"], degraded["ab_arm"]) == (v1, "champion")

        # -- A/B evaluation -> promotion; the predictor serves the new champion
        promoted = step(
            "the challenger to be promoted",
            lambda: bus.on(Topic.MODEL_DEPLOYED, lambda v: ours(v) and v["action"] == "promote"),
        )[0]
        assert (promoted["alias"], promoted["version"]) == ("champion", v2)
        step(
            "the predictor to serve the new champion",
            lambda: (predictor.get("/model").json().get("champion") or {}).get("version") == v2,
        )
        traffic.stop()
        assert registry.aliases() == {"champion": v2, "previous_champion": promoted["previous_version"]}
        assert promoted["previous_version"] == v0

        # -- the causal chain, by ids, from the final model.deployed back to the drift
        evaluation = bus.by_id(Topic.MODEL_EVALUATION_COMPLETED, promoted["envelope"]["causation_id"])
        assert (evaluation["winner"], evaluation["challenger_version"], evaluation["significant"]) == (
            "challenger",
            v2,
            True,
        )
        [challenger_deployed] = bus.on(
            Topic.MODEL_DEPLOYED, lambda v: ours(v) and v["action"] == "challenger" and v["version"] == v2
        )
        # The evaluation names the challenger's deployment as its cause: causation ids alone
        # lead from the promotion back to the drift.
        assert evaluation["envelope"]["causation_id"] == challenger_deployed["envelope"]["event_id"]
        drift = bus.by_id(Topic.DATA_DRIFT_DETECTED, challenger_deployed["envelope"]["causation_id"])
        assert drift["envelope"]["event_id"] == first_drift["envelope"]["event_id"]
        assert challenger_deployed["envelope"]["correlation_id"] == drift["envelope"]["correlation_id"]
        [training] = bus.on(Topic.MODEL_TRAINING_COMPLETED, lambda v: ours(v) and v["model_version"] == v2)
        assert training["envelope"]["causation_id"] == drift["envelope"]["event_id"]
        # The decision log tells the same story.
        actions = bus.on(Topic.SYSTEM_ACTIONS, ours_action(model_name))
        [promote_done] = [a for a in actions if a["action"] == "promote" and a["status"] == "succeeded"]
        assert promote_done["trigger_event_id"] == evaluation["envelope"]["event_id"]
        assert promote_done["details"]["challenger_trigger_event_id"] == drift["envelope"]["event_id"]
        [rollback_done] = [a for a in actions if a["action"] == "rollback" and a["status"] == "succeeded"]
        assert rollback_done["trigger_event_id"] == degraded["envelope"]["event_id"]
        assert (
            responder.get("/actions", params={"action": "promote", "status": "succeeded"}).json()["count"]
            == 1
        )
    finally:
        traffic.stop()
        bus.close()
        sinks.stop()


def ours_action(model_name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda a: (
        a["envelope"]["source"] == "auto-responder" and a["details"].get("model_name") == model_name
    )
