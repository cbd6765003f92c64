"""SIGKILL of each service in turn, with traffic through ingest, then restarted: nothing lost or repeated.

The services run as processes on the shared stack. Ingest publishes onto the catalogue's
``prediction.request`` (its topics are not configurable), so the predictor gets its own
consumer group pinned to the current end of that topic and writes to a fresh
``prediction.completed`` topic; the drift detector reads that topic and a fresh feedback
topic. Every scenario's transactions carry a fresh id prefix, and the ledger
(:mod:`tests.support.chaos`) counts them by id on the outputs, read with
``isolation.level=read_committed``. The other services' inputs are fresh topics fed directly
by the test; their state is compared before and after the kill.

The driver posts batches of transactions to ``POST /transactions/batch``, each with its own
``Idempotency-Key``; a batch that got no answer (the kill cut the connection, or ingest was
still starting) is posted again with the same key until it gets a 202.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Message, TopicPartition
from mlflow import MlflowClient

from fraud_model.contract import feedback_label, transaction_payload
from fraud_model.generator import TransactionGenerator
from fraud_model.training import TrainingResult, log_and_register, train
from mlops_platform.contracts import Topic, load_catalogue, make_event
from mlops_platform.kafka import EventProducer, create_topic, ensure_topics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from recsys_data import load_catalogue as load_items
from tests.support.alert_sinks import AlertSinks
from tests.support.chaos import Ledger, committed_ids, positions
from tests.support.processes import ServiceLauncher, ServiceProcess, connection_env, wait_until
from tests.support.recommender import create_topics, new_run, recommender_env
from tests.support.scoring import REQUEST, pin_group_to_end

pytestmark = pytest.mark.chaos

TRANSACTIONS = 1500  # per scenario: enough batches before and after the kill, small enough for CI
BATCH = 50
KILL_AT = 0.4  # the share of the stream sent before the SIGKILL


# --------------------------------------------------------------------------- the pipeline


def fresh_topic(settings: PlatformSettings, name: str, partitions: int = 3) -> str:
    topic = f"test.chaos.{name}.{uuid.uuid4().hex[:10]}"
    create_topic(settings, topic, partitions)
    return topic


@dataclass(frozen=True)
class Topics:
    completed: str
    deployed: str
    predictor_dlq: str
    feedback: str
    actions: str
    drift: str
    degraded: str
    evaluation: str


@pytest.fixture(scope="module")
def topics(platform_settings: PlatformSettings, serde: AvroSerde) -> Topics:
    ensure_topics(platform_settings, load_catalogue(platform_settings.schemas_dir))
    return Topics(
        completed=fresh_topic(platform_settings, "completed"),
        deployed=fresh_topic(platform_settings, "deployed", 1),
        predictor_dlq=fresh_topic(platform_settings, "dlq-predictor", 1),
        feedback=fresh_topic(platform_settings, "feedback"),
        actions=fresh_topic(platform_settings, "actions", 1),
        drift=fresh_topic(platform_settings, "drift", 1),
        degraded=fresh_topic(platform_settings, "degraded", 1),
        evaluation=fresh_topic(platform_settings, "evaluation", 1),
    )


@pytest.fixture(scope="module")
def champion(mlflow_uri: str) -> Iterator[str]:
    """A small model registered under a fresh name as @champion (with its drift reference sample)."""
    name = f"chaos_fraud_{uuid.uuid4().hex[:8]}"
    result: TrainingResult = train(TransactionGenerator(seed=31).generate_frame(5000), seed=3)
    log_and_register(
        result,
        tracking_uri=mlflow_uri,
        model_name=name,
        set_alias="champion",
        experiment_name="chaos-tests",
        alias_requires_validation=False,
        reason="chaos test",
    )
    yield name
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        client.delete_registered_model(name)
    except Exception:  # noqa: S110 - best-effort cleanup of a test model
        pass


@dataclass
class Pipeline:
    """Ingest -> predictor, as processes, and where their outputs go."""

    settings: PlatformSettings
    topics: Topics
    model_name: str
    ingest: ServiceProcess
    predictor: ServiceProcess
    predictor_group: str

    def running(self) -> None:
        """Restart whatever an earlier (failed) scenario left dead, and wait until all are ready."""
        for service in (self.ingest, self.predictor):
            if not service.alive():
                service.restart()
            service.wait_for("/ready", timeout_s=180)


@pytest.fixture(scope="module")
def pipeline(
    platform_settings: PlatformSettings,
    topics: Topics,
    champion: str,
    service_launcher: ServiceLauncher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Pipeline:
    base = connection_env(platform_settings)
    ingest = service_launcher.start(
        "ingest",
        "INGEST_",
        {
            **base,
            # The same instance id after a restart: its transactional ids fence the killed process.
            "INGEST_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:8]}",
            "INGEST_RATE_LIMIT_PER_S": "100000",
            "INGEST_RATE_LIMIT_BURST": "100000",
        },
    )
    group = f"chaos-predictor-{uuid.uuid4().hex[:8]}"
    pin_group_to_end(platform_settings, group, REQUEST)
    predictor = service_launcher.start(
        "predictor",
        "PREDICTOR_",
        {
            **base,
            "PREDICTOR_MODEL_NAME": champion,
            "PREDICTOR_GROUP_ID": group,
            "PREDICTOR_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:8]}",
            "PREDICTOR_COMPLETED_TOPIC": topics.completed,
            "PREDICTOR_MODEL_EVENTS_TOPIC": topics.deployed,
            "PREDICTOR_DEAD_LETTER_TOPIC": topics.predictor_dlq,
            "PREDICTOR_SESSION_TIMEOUT_MS": "6000",
        },
    )
    return Pipeline(platform_settings, topics, champion, ingest, predictor, group)


@dataclass(frozen=True)
class DriftDetector:
    """The drift detector's process and where its group began on the predictions topic."""

    process: ServiceProcess
    start: list[TopicPartition]


@pytest.fixture(scope="module")
def drift(
    pipeline: Pipeline, service_launcher: ServiceLauncher, tmp_path_factory: pytest.TempPathFactory
) -> DriftDetector:
    """The drift detector behind the pipeline's predictor (fresh topics, its own group).

    Its group is pinned to the end of the predictions topic: the earlier scenarios' predictions
    are not its window's, so what its window must hold is exactly what is written from there.
    """
    topics, champion = pipeline.topics, pipeline.model_name
    base = connection_env(pipeline.settings)
    group = f"chaos-drift-{uuid.uuid4().hex[:8]}"
    start = pin_group_to_end(pipeline.settings, group, topics.completed)
    process = service_launcher.start(
        "drift_detector",
        "DRIFT_",
        {
            **base,
            "DRIFT_MODEL_NAME": champion,
            "DRIFT_GROUP_ID": group,
            "DRIFT_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:6]}",
            "DRIFT_PREDICTIONS_TOPIC": topics.completed,
            "DRIFT_FEEDBACK_TOPIC": topics.feedback,
            "DRIFT_DEPLOYMENTS_TOPIC": topics.deployed,
            "DRIFT_ACTIONS_TOPIC": topics.actions,
            "DRIFT_DRIFT_TOPIC": topics.drift,
            "DRIFT_DEGRADED_TOPIC": topics.degraded,
            "DRIFT_EVALUATION_TOPIC": topics.evaluation,
            "DRIFT_REPORTS_DIR": str(tmp_path_factory.mktemp("drift-reports")),
            "DRIFT_SESSION_TIMEOUT_MS": "6000",
        },
        timeout_s=180,
        stop_timeout_s=60,
    )
    return DriftDetector(process, start)


# --------------------------------------------------------------------------- traffic


@dataclass(eq=False)  # a thread must stay hashable
class Driver(threading.Thread):
    """Posts ``count`` generator transactions to ingest in batches, each batch retried until a 202.

    Every accepted transaction id goes into the ledger; ``retried`` holds the ids of batches
    that needed another attempt (their first attempt may or may not have been published).
    ``pause_at`` stops the driver after that many accepted transactions until :meth:`go`.
    """

    ingest: ServiceProcess
    ledger: Ledger
    prefix: str
    count: int = TRANSACTIONS
    pause_at: int | None = None
    labels: dict[str, bool] = field(default_factory=dict)
    retried: set[str] = field(default_factory=set)
    attempts: int = 0
    error: BaseException | None = None
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(name=f"driver-{self.prefix}", daemon=True)

    def run(self) -> None:
        try:
            rows = TransactionGenerator(seed=hash(self.prefix) % 10_000).generate(self.count)
            for start in range(0, self.count, BATCH):
                if self.pause_at is not None and start >= self.pause_at and not self.resume.is_set():
                    self.paused.set()
                    self.resume.wait()
                chunk = rows[start : start + BATCH]
                txns = [
                    {**transaction_payload(row), "transaction_id": f"{self.prefix}-{start + i}"}
                    for i, row in enumerate(chunk)
                ]
                self.post(txns)
                self.labels.update(
                    {
                        txn["transaction_id"]: bool(row["is_fraud"])
                        for txn, row in zip(txns, chunk, strict=True)
                    }
                )
        except BaseException as exc:  # the test thread reports it
            self.error = exc

    def post(self, txns: list[dict[str, Any]]) -> None:
        key = f"{self.prefix}-{uuid.uuid4().hex}"
        ids = [txn["transaction_id"] for txn in txns]
        deadline = time.monotonic() + 240
        tries = 0
        while True:
            tries += 1
            self.attempts += 1
            try:
                response = self.ingest.post(
                    "/transactions/batch",
                    {"transactions": txns},
                    headers={"Idempotency-Key": key},
                    timeout=30,
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 202:
                assert response.json()["transaction_ids"] == ids, response.text
                self.ledger.sent(ids)
                if tries > 1:
                    self.retried.update(ids)
                return
            if response is not None and response.status_code not in (429, 503):
                raise AssertionError(f"ingest refused a batch: {response.status_code} {response.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {key} not accepted within 240s")
            time.sleep(0.2)

    def go(self) -> None:
        self.resume.set()

    def finish(self, timeout_s: float = 300) -> None:
        self.go()
        self.join(timeout_s)
        assert not self.is_alive(), "the traffic driver did not finish"
        if self.error is not None:
            raise self.error


def ours(prefix: str) -> Callable[[Message], str | None]:
    """Records keyed by one of the scenario's transaction ids count under that id; others are skipped."""
    mark = f"{prefix}-".encode()

    def id_of(msg: Message) -> str | None:
        key = msg.key()
        return key.decode() if key and key.startswith(mark) else None

    return id_of


# --------------------------------------------------------------------------- helpers


def start_traffic(pipeline: Pipeline, ledger: Ledger, prefix: str) -> Driver:
    driver = Driver(pipeline.ingest, ledger, prefix, pause_at=int(TRANSACTIONS * KILL_AT))
    driver.start()
    wait_until(lambda: driver.paused.is_set() or driver.error, 240, f"{prefix}: first part of the stream")
    return driver


def settle(
    settings: PlatformSettings,
    ledger: Ledger,
    start: list[TopicPartition],
    prefix: str,
    timeout_s: float = 240,
) -> None:
    """Wait until every sent id is on the output (counted from ``start``, committed records only).

    No extra wait for late duplicates: the outputs of a partition are in input order, so a
    record scored twice after a restart would come before the last inputs' outputs.
    """
    id_of = ours(prefix)

    def complete() -> bool:
        stamps: list[float] = []
        ledger.recount(committed_ids(settings, start, id_of, timestamps=stamps))
        ledger.output_times(stamps)
        return ledger.complete()

    wait_until(complete, timeout_s, ledger.summary, interval_s=2)


def kill_and_restart(service: ServiceProcess, ledger: Ledger, name: str) -> None:
    """SIGKILL ``service``, start it again at once and wait until it is ready (timed in the ledger)."""
    recovery = ledger.fault(name)
    service.kill()
    service.restart()
    recovery.restarted()
    service.wait_for("/ready", timeout_s=180)
    recovery.ready()


def drift_totals(drift: ServiceProcess) -> tuple[int, dict[str, int]]:
    """The drift detector's rows seen by its window and its label-join statistics."""
    rows = int(drift.json("/drift")["window"]["rows_seen"])
    labels = drift.json("/quality")["labels"]
    return rows, {k: int(v) for k, v in labels.items()}


# --------------------------------------------------------------------------- scenarios


def test_predictor_sigkill_mid_stream_loses_and_repeats_no_prediction(
    pipeline: Pipeline, chaos_ledger: Callable[..., Ledger]
) -> None:
    pipeline.running()
    settings, ledger = pipeline.settings, chaos_ledger()
    prefix = f"chaos-pred-{uuid.uuid4().hex[:6]}"
    start = positions(settings, pipeline.topics.completed)
    driver = start_traffic(pipeline, ledger, prefix)
    # The first part is still being scored: the kill lands mid-batch, traffic goes on meanwhile.
    driver.go()
    kill_and_restart(pipeline.predictor, ledger, "predictor")
    driver.finish()
    settle(settings, ledger, start, prefix)
    ledger.note(f"{driver.attempts} ingest requests")
    ledger.assert_exactly_once()


def test_ingest_sigkill_mid_request_loses_nothing_and_repeats_only_unanswered_retries(
    pipeline: Pipeline, chaos_ledger: Callable[..., Ledger]
) -> None:
    """Every 202-accepted transaction lands; a batch that got no answer is retried with its key.

    Ingest publishes each request in one Kafka transaction and answers 202 only once it is
    committed, so an answered batch is on ``prediction.request`` exactly once. Its idempotency
    store lives in the process (documented in the README): after a SIGKILL a retry of a batch
    whose transaction had committed just before the kill is published again. So only retried
    batches may land twice, never more, and nothing is lost.
    """
    pipeline.running()
    settings = pipeline.settings
    requests, completed = chaos_ledger("prediction.request"), chaos_ledger("prediction.completed")
    prefix = f"chaos-ingest-{uuid.uuid4().hex[:6]}"
    request_start = positions(settings, REQUEST)
    completed_start = positions(settings, pipeline.topics.completed)
    driver = Driver(pipeline.ingest, requests, prefix)
    driver.start()
    pipeline.ingest.wait(
        "the first part of the stream", lambda: requests.sent_count >= TRANSACTIONS * KILL_AT, 240
    )
    kill_and_restart(pipeline.ingest, requests, "ingest")
    driver.finish()
    completed.sent(requests.sent_ids)
    settle(settings, requests, request_start, prefix)
    settle(settings, completed, completed_start, prefix)
    for ledger in (requests, completed):
        ledger.note(f"{len(driver.retried)} ids retried after no answer")
        assert not ledger.lost, ledger.summary()
        assert not ledger.unexpected, ledger.summary()
        unanswered_twice = set(ledger.duplicated) - driver.retried
        assert not unanswered_twice, f"answered batches landed twice: {sorted(unanswered_twice)[:5]}"
        assert all(ledger.times(one) <= 2 for one in ledger.duplicated), ledger.summary()


def test_drift_detector_sigkill_mid_window_keeps_its_window_and_joins(
    pipeline: Pipeline, drift: DriftDetector, chaos_ledger: Callable[..., Ledger], serde: AvroSerde
) -> None:
    """After the restart the window holds every prediction once, and labels join predictions from before.

    Needs the drift detector's durable state (windows and pending joins snapshotted with its
    offsets); without it the restart forgets the first part and replays what was not committed.
    """
    pipeline.running()
    detector = drift.process
    if not detector.alive():
        detector.restart()
    detector.wait_for("/ready", timeout_s=180)
    settings, ledger = pipeline.settings, chaos_ledger()
    prefix = f"chaos-drift-{uuid.uuid4().hex[:6]}"
    start = positions(settings, pipeline.topics.completed)

    def written_since_group_start() -> int:
        # Every prediction on the topic counts: the predictor also scores others' catalogue traffic.
        # Counted from where the group began, not from this scenario's start: the detector may
        # still be reading what came before ``start`` when its totals are first read.
        return len(committed_ids(settings, drift.start, lambda msg: "x"))

    rows_before, labels_before = drift_totals(detector)
    driver = start_traffic(pipeline, ledger, prefix)
    detector.wait(
        "the drift detector to see the first part",
        lambda: drift_totals(detector)[0] >= rows_before + int(TRANSACTIONS * KILL_AT),
        240,
    )
    driver.go()
    kill_and_restart(detector, ledger, "drift-detector")
    driver.finish()
    settle(settings, ledger, start, prefix)

    # Labels after the restart, for predictions made before and after it.
    producer = EventProducer(settings, "chaos-labels", serde)
    try:
        for txn, is_fraud in driver.labels.items():
            event = make_event(
                "ingest", feedback_label(txn, is_fraud, "chargeback" if is_fraud else "no_dispute")
            )
            producer.produce(pipeline.topics.feedback, event, key=txn, schema_topic=Topic.PREDICTION_FEEDBACK)
        assert producer.flush(60) == 0
    finally:
        producer.close()

    expected_joined = labels_before["joined"] + len(driver.labels)
    seen: dict[str, Any] = {}

    def matches() -> bool:
        # Both sides read together: other traffic the predictor scores may still be arriving, so
        # the window must come to hold exactly what was written (more: counted twice; less: lost).
        seen["written"] = written_since_group_start()
        seen["rows"], seen["labels"] = drift_totals(detector)
        return seen["rows"] == seen["written"] and seen["labels"]["joined"] == expected_joined

    detector.wait(
        lambda: f"window rows == predictions written, {expected_joined} joined: {seen}", matches, 240
    )
    ledger.note(f"window rows {seen['rows']}, joined {seen['labels']['joined']}")
    assert seen["labels"]["duplicate_predictions"] == labels_before["duplicate_predictions"], seen
    ledger.assert_exactly_once()


# --------------------------------------------------------------------------- services on fresh topics


class Publisher:
    """Events straight onto a service's fresh input topics (what the upstream services would send)."""

    def __init__(self, settings: PlatformSettings, serde: AvroSerde) -> None:
        self.producer = EventProducer(settings, "chaos-test", serde)

    def send(
        self, topic: str, contract: Topic, payload: dict[str, Any], key: str, source: str = "chaos"
    ) -> str:
        """Produce one event; returns its event id (flushed by :meth:`flush`)."""
        event = make_event(source, payload)
        self.producer.produce(topic, event, key=key, schema_topic=contract)
        self.producer.poll(0)
        return str(event["envelope"]["event_id"])

    def flush(self) -> None:
        assert self.producer.flush(60) == 0, "events not acknowledged"

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def publisher(platform_settings: PlatformSettings, serde: AvroSerde) -> Iterator[Publisher]:
    sender = Publisher(platform_settings, serde)
    yield sender
    sender.close()


def test_alerter_sigkill_mid_delivery_sends_every_alert_once_and_keeps_open_alerts(
    platform_settings: PlatformSettings,
    publisher: Publisher,
    launcher: ServiceLauncher,
    tmp_path: Path,
    chaos_ledger: Callable[..., Ledger],
) -> None:
    """Alerts flow while the alerter is killed: each is delivered to the webhook once, none lost,
    and the open alerts are the same after the restart.

    Needs the alerter's delivery journal (a delivery recorded before it is attempted, finished
    or retried after a crash, never repeated once confirmed).
    """
    ledger = chaos_ledger()
    topic = fresh_topic(platform_settings, "alerts", 1)
    routes = tmp_path / "routes.yaml"
    routes.write_text("defaults: {cooldown: 10m}\nroutes:\n  - name: default\n    channels: [webhook]\n")
    with AlertSinks() as sinks:
        alerter = launcher.start(
            "alerter",
            "ALERTER_",
            {
                **connection_env(platform_settings),
                "ALERTER_ALERTS_TOPIC": topic,
                "ALERTER_GROUP_ID": f"chaos-alerter-{uuid.uuid4().hex[:8]}",
                "ALERTER_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:6]}",
                "ALERTER_ROUTES_FILE": str(routes),
                "ALERTER_WEBHOOK_URL": sinks.webhook_url,
                "ALERTER_DELIVERY_BACKOFF_BASE_S": "0.3",
                "ALERTER_DELIVERY_BACKOFF_JITTER": "0",
            },
            timeout_s=120,
            stop_timeout_s=60,
        )

        def delivered() -> list[str]:
            return [
                str(r.body["alert_id"])
                for r in sinks.requests("/webhook")
                if isinstance(r.body, dict) and r.body.get("kind") == "notify"
            ]

        def publish(n: int) -> None:
            alert_id = f"chaos-alert-{uuid.uuid4().hex[:6]}-{n}"
            payload: dict[str, Any] = {
                "alert_id": alert_id,
                "severity": "HIGH",
                "title": f"chaos alert {n}",
                "message": "raised by the chaos test",
                "dedup_key": alert_id,
                "status": "firing",
                "labels": {},
                "related_event_id": None,
            }
            publisher.send(topic, Topic.SYSTEM_ALERTS, payload, key=alert_id, source="drift-detector")
            ledger.sent(alert_id)

        for n in range(40):
            publish(n)
        publisher.flush()
        alerter.wait("half of the deliveries", lambda: len(delivered()) >= 20, 120)
        # Deliveries are in flight: the kill lands among them; more alerts arrive while it is down.
        open_before = {a["alert_id"]: a["status"] for a in alerter.json("/alerts", status="open", limit=1000)}
        recovery = ledger.fault("alerter")
        alerter.kill()
        for n in range(40, 80):
            publish(n)
        publisher.flush()
        alerter.restart()
        recovery.restarted()
        alerter.wait_for("/ready", timeout_s=120)
        recovery.ready()

        def complete() -> bool:
            ledger.recount(delivered())
            return ledger.complete()

        alerter.wait(ledger.summary, complete, 180)
        ledger.recount(delivered())
        open_after = {a["alert_id"]: a["status"] for a in alerter.json("/alerts", status="open", limit=1000)}
    assert {k: open_after.get(k) for k in open_before} == open_before, "open alerts changed over the restart"
    ledger.assert_exactly_once()


def test_auto_responder_sigkill_mid_stream_decides_each_trigger_once_and_keeps_its_history(
    platform_settings: PlatformSettings,
    publisher: Publisher,
    launcher: ServiceLauncher,
    chaos_ledger: Callable[..., Ledger],
) -> None:
    """Triggers keep coming while the auto-responder is killed: each gets exactly one decision
    record, and the history served before the kill is served unchanged after it."""
    ledger = chaos_ledger()
    names = ("drift", "degraded", "evaluation", "health", "alerts", "actions", "request", "feedback")
    topics = {name: fresh_topic(platform_settings, f"responder-{name}", 1) for name in names}
    model = f"chaos_responder_{uuid.uuid4().hex[:8]}"
    responder = launcher.start(
        "auto_responder",
        "RESPONDER_",
        {
            **connection_env(platform_settings),
            **{f"RESPONDER_{name.upper()}_TOPIC": topic for name, topic in topics.items()},
            "RESPONDER_MODEL_NAME": model,
            "RESPONDER_GROUP_ID": f"chaos-responder-{uuid.uuid4().hex[:8]}",
            "RESPONDER_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:6]}",
            # Never touch the local stack's real instances from a test.
            "RESPONDER_SCALE_COMMAND": "[]",
        },
        timeout_s=300,
        stop_timeout_s=60,
    )

    def history() -> list[dict[str, Any]]:
        return list(responder.json("/actions", limit=5000)["actions"])

    def decided() -> list[str]:
        return [str(r["trigger_event_id"]) for r in history() if r.get("trigger_event_id")]

    def degraded(n: int) -> None:
        payload = {
            "model_name": model,
            "model_version": str(n + 2),
            "ab_arm": "challenger",
            "severity": "MEDIUM",
            "metric": "auc_roc",
            "baseline_value": 0.95,
            "current_value": 0.6,
            "performance_drop": 0.37,
            "baseline_metrics": {"auc_roc": 0.95},
            "current_metrics": {"auc_roc": 0.6},
            "samples": 900,
            "action_hint": "rollback",
        }
        ledger.sent(publisher.send(topics["degraded"], Topic.MODEL_PERFORMANCE_DEGRADED, payload, model))

    for n in range(20):
        degraded(n)
    publisher.flush()
    responder.wait("some decisions", lambda: len(set(decided()) & set(ledger.sent_ids)) >= 8, 180)
    kill_and_restart(responder, ledger, "auto-responder")
    before = {r["action_id"]: r for r in history()}
    for n in range(20, 40):
        degraded(n)
    publisher.flush()

    def complete() -> bool:
        ledger.recount(decided())
        return ledger.complete()

    responder.wait(ledger.summary, complete, 240)
    after = {r["action_id"]: r for r in history()}
    assert {k: after.get(k) for k in before} == before, "the history changed after the restart"
    ledger.recount(decided())
    ledger.assert_exactly_once()


def test_recommender_sigkill_mid_stream_keeps_served_users_and_counts_every_interaction_once(
    platform_settings: PlatformSettings,
    publisher: Publisher,
    launcher: ServiceLauncher,
    tmp_path: Path,
    chaos_ledger: Callable[..., Ledger],
) -> None:
    """Users served before the kill get the same profile and recommendations after it; users
    whose interactions straddle the kill end with each interaction counted once."""
    ledger = chaos_ledger()
    app_id, topics = new_run()
    create_topics(platform_settings, topics)
    recommender = launcher.start(
        "recommender",
        "RECOMMENDER_",
        {**connection_env(platform_settings), **recommender_env(app_id, topics, tmp_path)},
        timeout_s=180,
        stop_timeout_s=90,
    )
    items = [item.item_id for item in load_items().items][:40]
    served = [f"chaos-u-{uuid.uuid4().hex[:6]}-{n}" for n in range(20)]
    straddling = [f"chaos-v-{uuid.uuid4().hex[:6]}-{n}" for n in range(40)]
    per_user = 3

    def interact(users: list[str], rounds: range) -> None:
        for r in rounds:
            for n, user in enumerate(users):
                payload = {
                    "user_id": user,
                    "item_id": items[(n + r) % len(items)],
                    "interaction_type": "purchase",
                }
                publisher.send(
                    topics[Topic.BUSINESS_USER_INTERACTION], Topic.BUSINESS_USER_INTERACTION, payload, user
                )
                ledger.sent(f"{user}#{r}")
        publisher.flush()

    def interactions(user: str) -> int:
        response = recommender.get(f"/users/{user}/profile")
        return int(response.json()["interactions"]) if response.status_code == 200 else 0

    interact(served, range(per_user))
    recommender.wait(
        "the served users' profiles", lambda: all(interactions(u) == per_user for u in served), 180
    )
    core = ("genres", "dominant_genre", "interactions", "counts", "updated_at", "recent_activity")
    profiles = {u: {k: recommender.json(f"/users/{u}/profile")[k] for k in core} for u in served}

    def sources() -> dict[str, str]:
        return {u: recommender.json(f"/recommendations/{u}")["source"] for u in served}

    # Served from the table (their own state), not from the popular fallback.
    recommender.wait(
        "served users answered from the table", lambda: set(sources().values()) == {"table"}, 120
    )

    interact(straddling, range(2))
    recovery = ledger.fault("recommender")
    recommender.kill()
    interact(straddling, range(2, per_user))
    recommender.restart()
    recovery.restarted()
    recommender.wait_for("/ready", timeout_s=180)
    recovery.ready()

    def counted() -> list[str]:
        # A profile counts interactions, not ids: n counted of per_user sent are ids #0..#n-1, and
        # any beyond per_user are repeats (so a replayed interaction shows as duplicated).
        ids: list[str] = []
        for user in [*served, *straddling]:
            ids += [f"{user}#{r % per_user}" for r in range(interactions(user))]
        return ids

    def complete() -> bool:
        ledger.recount(counted())
        return ledger.complete()

    # A deadline, not a speed check: after a SIGKILL Faust restores the tables from their
    # changelogs and replays the uncommitted input, which takes minutes on a loaded machine.
    recommender.wait(ledger.summary, complete, 600)
    ledger.recount(counted())
    ledger.note("counted by each profile's interaction total")
    assert {u: {k: recommender.json(f"/users/{u}/profile")[k] for k in core} for u in served} == profiles
    # After the restart their recommendations come from the restored tables again. (The ids may
    # differ: the straddling users' activity re-ranks everybody's recommendations.)
    assert set(sources().values()) == {"table"}, sources()
    ledger.assert_exactly_once()
