"""The predictor as a process (``python -m predictor``) against the real Kafka, registry and MLflow.

Every test owns its topics (request, completed, model events, dead letters), its consumer
group and a registered model with a fresh name whose versions 1 and 2 are copies of two
small models logged once per module. Outputs are read with ``read_committed`` consumers.
Deadlines only bound how long a test waits for something to happen; nothing asserts speed.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.registry import ModelRegistry
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from predictor.ab import ABRouter
from predictor.risk import RiskThresholds
from tests.support.models import LoggedModel, delete_model, log_small_models, register_copies
from tests.support.processes import ServiceLauncher, ServiceProcess, wait_until
from tests.support.scoring import (
    COMPLETED,
    DEPLOYED,
    Streamer,
    Topics,
    assert_exactly_once,
    decode,
    deployed_event,
    read_results,
    send_requests,
    start_predictor,
    transactions,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.topics import TopicTail, consume, drain

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def logged_models(mlflow_uri: str) -> Iterator[list[LoggedModel]]:
    base = f"predictor_test_base_{uuid.uuid4().hex[:8]}"
    yield log_small_models(mlflow_uri, count=2, name=base)
    delete_model(mlflow_uri, base)


@pytest.fixture
def model_name(mlflow_uri: str, logged_models: list[LoggedModel]) -> Iterator[str]:
    name = register_copies(mlflow_uri, logged_models)
    yield name
    delete_model(mlflow_uri, name)


@pytest.fixture
def registry(mlflow_uri: str, model_name: str) -> ModelRegistry:
    return ModelRegistry(mlflow_uri, model_name)


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> Topics:
    return Topics(
        request=topic_factory("prediction-request", 6),
        completed=topic_factory("prediction-completed", 6),
        deployed=topic_factory("model-deployed", 1),
        dead_letters=topic_factory("dlq-predictor", 1),
    )


@pytest.fixture
def producer(platform_settings: PlatformSettings, serde: AvroSerde) -> Iterator[EventProducer]:
    producer = EventProducer(platform_settings, "test", serde)
    yield producer
    producer.close()


def model_info(predictor: ServiceProcess) -> dict[str, Any]:
    response = predictor.get("/model")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


def champion_version(predictor: ServiceProcess) -> str | None:
    champion = model_info(predictor)["champion"]
    return champion["version"] if champion else None


# --------------------------------------------------------------------------- tests


def test_one_request_yields_exactly_one_prediction_from_the_champion(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    registry.set_alias("champion", "1")
    predictor = start_predictor(launcher, platform_settings, topics, model_name)
    (txn,) = transactions(1)
    (event,) = send_requests(producer, topics.request, [txn])

    results = read_results(consumer_factory(topics.completed), serde, 1, timeout_s=90)
    assert len(results) == 1, "exactly one prediction per request"
    (result,) = results
    envelope, request_envelope = result["envelope"], event["envelope"]
    assert result["_key"] == txn["transaction_id"].encode()
    assert result["transaction_id"] == txn["transaction_id"]
    assert result["account_id"] == txn["account_id"]
    assert result["request_event_id"] == request_envelope["event_id"]
    assert envelope["causation_id"] == request_envelope["event_id"]
    assert envelope["correlation_id"] == request_envelope["correlation_id"]
    assert envelope["source"] == "predictor"
    assert (result["model_name"], result["model_version"], result["model_alias"], result["ab_arm"]) == (
        model_name,
        "1",
        "champion",
        "champion",
    )
    assert result["latency_ms"] >= 0

    # The score is the champion's own score of these features, and the risk level follows the thresholds.
    expected_features = build_features([txn])[0].astype(np.float64)
    assert list(result["features"]) == FEATURE_NAMES
    np.testing.assert_allclose([result["features"][n] for n in FEATURE_NAMES], expected_features, rtol=1e-6)
    expected_probability = float(registry.load_booster("1").score([txn])[0])
    assert result["fraud_probability"] == pytest.approx(expected_probability, abs=1e-6)
    assert result["risk_level"] == RiskThresholds(0.18, 0.40, 0.65).level(result["fraud_probability"])

    # What the HTTP side says about it.
    info = model_info(predictor)
    assert info["champion"]["version"] == "1"
    assert info["champion"]["run_id"] == registry.get_version("1").run_id
    assert info["challenger"] is None and info["ab_active"] is False
    assert info["risk_thresholds"] == {"verify": 0.18, "hold": 0.4, "block": 0.65}
    ready = predictor.get("/ready").json()
    assert ready["ready"] is True and ready["checks"]["model"]["ok"] is True
    scored = predictor.post("/score", json=txn)
    assert scored.status_code == 200, scored.text
    assert scored.json()["fraud_probability"] == pytest.approx(expected_probability, abs=1e-6)
    assert scored.json()["model_version"] == "1"
    assert predictor.post("/score", json={"transaction_id": "x"}).status_code == 422
    assert predictor.metric("fds_requests_total", endpoint="stream", status="ok", model_version="1") == 1.0
    assert predictor.metric("fds_model_info", alias="champion", version="1") == 1.0
    assert predictor.metric("fds_model_stale") == 0.0
    assert predictor.metric("fds_latency_seconds_count", endpoint="stream") == 1.0
    assert drain(consumer_factory(topics.dead_letters), quiet_s=2) == []


def test_ab_split_is_within_binomial_bounds_and_stable_per_transaction(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    registry.set_alias("champion", "1")
    registry.set_alias("challenger", "2")
    predictor = start_predictor(launcher, platform_settings, topics, model_name)
    info = model_info(predictor)
    assert info["ab_active"] is True and info["challenger"]["version"] == "2"

    n, share = 4000, 0.10
    txns = transactions(n)
    ids = [t["transaction_id"] for t in txns]
    send_requests(producer, topics.request, txns)
    output = consumer_factory(topics.completed)
    first = read_results(output, serde, n)
    assert_exactly_once(first, ids)

    arms = {r["transaction_id"]: r["ab_arm"] for r in first}
    challenger = sum(arm == "challenger" for arm in arms.values())
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(challenger - n * share) <= 4 * sigma, f"{challenger} of {n} to the challenger"
    for r in first:
        expected = ("2", "challenger") if r["ab_arm"] == "challenger" else ("1", "champion")
        assert (r["model_version"], r["model_alias"]) == expected
    # The arm is a pure function of the id: the same router outside the service agrees.
    router = ABRouter(share)
    assert all(arms[tid] == router.arm(tid) for tid in ids)

    # The same transactions again (new events): every one lands in the same arm.
    send_requests(producer, topics.request, list(reversed(txns)))
    second = read_results(output, serde, n)
    assert len(second) == n
    assert {r["transaction_id"]: r["ab_arm"] for r in second} == arms
    assert predictor.metric("fds_ab_assignments_total", arm="challenger") == 2 * challenger


def test_model_deployed_switches_the_version_without_restart_or_loss(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    registry.set_alias("champion", "1")
    # No periodic check during the test: only the model.deployed event can trigger the reload.
    predictor = start_predictor(
        launcher,
        platform_settings,
        topics,
        model_name,
        PREDICTOR_MODEL_REFRESH_INTERVAL_S="3600",
        PREDICTOR_MODEL_RETRY_INTERVAL_S="3600",
    )
    pid = predictor.pid
    output = consumer_factory(topics.completed)
    with Streamer(producer, topics.request) as streamer:
        before = consume(output, 100, timeout_s=90)
        assert len(before) == 100
        previous, new = registry.promote("2")
        assert (previous, new) == ("1", "2")
        deployed = deployed_event(model_name, "champion", "2", "1", "promote")
        producer.publish(topics.deployed, deployed, key=model_name, schema_topic=DEPLOYED)
        wait_until(
            lambda: champion_version(predictor) == "2", 90, "the predictor to serve v2", log=predictor.log
        )
        switched_at = time.time()
        wait_until(lambda: len(streamer.sent) and streamer.sent[-1][1] > switched_at + 1, 60, "more requests")
    sent = streamer.stop()

    results = decode(serde, before, COMPLETED)
    for msg, r in zip(before, results, strict=True):
        r["_partition"] = msg.partition()
    results += read_results(output, serde, len(sent) - len(before))
    assert_exactly_once(results, sent)
    assert predictor.alive() and predictor.pid == pid and predictor.starts == 1, "no restart"
    assert model_info(predictor)["registry"]["last_trigger"] == "model.deployed"

    versions = Counter(r["model_version"] for r in results)
    assert versions["1"] > 0 and versions["2"] > 0, versions
    # Requests published after the switch was visible are all scored by v2 ...
    sent_at = dict(streamer.sent)
    late = [r for r in results if sent_at[r["transaction_id"]] > switched_at]
    assert late and all(r["model_version"] == "2" for r in late)
    # ... and the swap happened between batches: in every partition, v1 never follows v2.
    by_partition: dict[int, list[str]] = defaultdict(list)
    for r in results:
        by_partition[r["_partition"]].append(r["model_version"])
    for partition, sequence in by_partition.items():
        if "2" in sequence:
            assert "1" not in sequence[sequence.index("2") :], f"v1 after v2 in partition {partition}"
    assert predictor.metric("fds_model_info", alias="champion", version="2") == 1.0
    assert predictor.metric("fds_model_info", alias="champion", version="1") is None


def test_sigkill_mid_stream_then_restart_scores_every_request_exactly_once(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    registry.set_alias("champion", "1")
    predictor = start_predictor(launcher, platform_settings, topics, model_name, PREDICTOR_BATCH_SIZE="50")
    committed = consumer_factory(topics.completed)
    with Streamer(producer, topics.request) as streamer:
        early = consume(committed, 200, timeout_s=90)
        assert len(early) == 200
        predictor.kill()  # mid-stream, most likely mid-transaction: no shutdown, no flush, no commit
        killed_at_sent = len(streamer.sent)
        time.sleep(1)
        predictor.restart()  # same instance id: its transactional.id fences the dead producer
        predictor.wait_for("/ready")
        wait_until(lambda: len(streamer.sent) > killed_at_sent + 200, 60, "requests after the restart")
    sent = streamer.stop()

    results = decode(serde, early, COMPLETED)
    results += read_results(committed, serde, len(sent) - len(early))
    assert_exactly_once(results, sent)
    assert predictor.starts == 2
    assert drain(consumer_factory(topics.dead_letters), quiet_s=2) == []


def test_malformed_requests_go_to_the_dead_letter_topic(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    registry.set_alias("champion", "1")
    start_predictor(launcher, platform_settings, topics, model_name)
    good, empty_id = transactions(2)
    empty_id["transaction_id"] = ""
    junk = b'{"transaction_id": "not avro"}'
    wrong_contract = make_event(
        "test", {"transaction_id": "feedback-not-request", "is_fraud": True, "label_source": "chargeback"}
    )
    # All on one partition, in order: the good request must survive its bad neighbours.
    key = b"same-partition"
    producer.produce_raw(topics.request, junk, key)
    producer.produce(topics.request, wrong_contract, key, schema_topic=Topic.PREDICTION_FEEDBACK.value)
    for txn in (empty_id, good):
        producer.produce(
            topics.request, make_event("test", txn), key, schema_topic=Topic.PREDICTION_REQUEST.value
        )
    assert producer.flush(30) == 0

    dead = consume(consumer_factory(topics.dead_letters), 3, timeout_s=90)
    assert len(dead) == 3
    headers = [dict(msg.headers() or []) for msg in dead]
    assert all(h["dlq.service"] == b"predictor" for h in headers)
    assert all(h["dlq.original.topic"] == topics.request.encode() for h in headers)
    assert [h["dlq.stage"] for h in headers] == [b"deserialize", b"deserialize", b"process"]
    assert dead[0].value() == junk, "original bytes kept"
    assert b"transaction_id is empty" in headers[2]["dlq.error.message"]

    results = read_results(consumer_factory(topics.completed), serde, 1, timeout_s=60)
    assert [r["transaction_id"] for r in results] == [good["transaction_id"]]


def test_registry_outage_keeps_serving_the_last_good_model(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
    mlflow_uri: str,
) -> None:
    upstream = urlparse(mlflow_uri)
    proxy = TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 80)
    proxy.up()
    try:
        registry.set_alias("champion", "1")
        predictor = start_predictor(
            launcher,
            platform_settings,
            topics,
            model_name,
            MLFLOW_TRACKING_URI=proxy.url,
            PREDICTOR_MODEL_REFRESH_INTERVAL_S="3600",
            PREDICTOR_MODEL_RETRY_INTERVAL_S="1",
        )
        output = consumer_factory(topics.completed)

        proxy.down()
        registry.promote("2")  # directly, not through the proxy: the predictor cannot see it
        producer.publish(
            topics.deployed,
            deployed_event(model_name, "champion", "2", "1", "promote"),
            schema_topic=DEPLOYED,
        )
        wait_until(lambda: model_info(predictor)["registry"]["stale"], 60, "the model to turn stale")
        ready = predictor.get("/ready")
        assert ready.status_code == 200, "a stale model still serves"
        assert "stale" in ready.json()["checks"]["model"]["detail"]
        assert predictor.metric("fds_model_stale") == 1.0

        during = transactions(50)
        send_requests(producer, topics.request, during)
        results = read_results(output, serde, 50)
        assert_exactly_once(results, [t["transaction_id"] for t in during])
        assert {r["model_version"] for r in results} == {"1"}, "the last good model serves"

        proxy.up()
        wait_until(lambda: champion_version(predictor) == "2", 60, "v2 after the registry came back")
        assert model_info(predictor)["registry"]["stale"] is False
        assert predictor.metric("fds_model_stale") == 0.0
        after = transactions(50)
        send_requests(producer, topics.request, after)
        results = read_results(output, serde, 50)
        assert_exactly_once(results, [t["transaction_id"] for t in after])
        assert {r["model_version"] for r in results} == {"2"}
    finally:
        proxy.close()


def test_without_any_model_requests_wait_instead_of_being_dead_lettered(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    # No @champion yet: the service starts, is not ready, and holds the requests.
    predictor = start_predictor(
        launcher,
        platform_settings,
        topics,
        model_name,
        wait_for="/health",
        PREDICTOR_MODEL_RETRY_INTERVAL_S="1",
    )
    wait_until(lambda: predictor.get("/ready").status_code == 503, 30, "/ready to answer 503")
    ready = predictor.get("/ready").json()
    assert ready["checks"]["model"]["ok"] is False
    txns = transactions(30)
    send_requests(producer, topics.request, txns)
    output = consumer_factory(topics.completed)
    assert drain(output, quiet_s=4) == []
    assert drain(consumer_factory(topics.dead_letters), quiet_s=1) == []

    registry.set_alias("champion", "2")
    predictor.wait_for("/ready", timeout_s=60)
    results = read_results(output, serde, len(txns))
    assert_exactly_once(results, [t["transaction_id"] for t in txns])
    assert {r["model_version"] for r in results} == {"2"}


def test_instances_in_one_group_share_the_partitions(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
) -> None:
    registry.set_alias("champion", "1")
    group = f"test-predictor-{uuid.uuid4().hex[:8]}"
    first = start_predictor(launcher, platform_settings, topics, model_name, PREDICTOR_GROUP_ID=group)
    second = start_predictor(launcher, platform_settings, topics, model_name, PREDICTOR_GROUP_ID=group)
    admin = AdminClient(platform_settings.admin_config())

    def both_assigned() -> bool:
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
        partitions = [len(m.assignment.topic_partitions) for m in description.members]
        return len(partitions) == 2 and all(partitions) and sum(partitions) == 6

    wait_until(both_assigned, 90, "both instances to own partitions")
    txns = transactions(600)
    send_requests(producer, topics.request, txns)
    results = read_results(consumer_factory(topics.completed), serde, len(txns))
    assert_exactly_once(results, [t["transaction_id"] for t in txns])
    scored = [
        p.metric("fds_requests_total", endpoint="stream", status="ok", model_version="1") or 0.0
        for p in (first, second)
    ]
    assert all(n > 0 for n in scored) and sum(scored) == len(txns), scored


def test_each_window_reports_what_was_scored(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    topics: Topics,
    model_name: str,
    registry: ModelRegistry,
    launcher: ServiceLauncher,
    producer: EventProducer,
    consumer_factory: Callable[..., Consumer],
    topic_factory: Callable[..., str],
    topic_tail: Callable[..., TopicTail],
) -> None:
    registry.set_alias("champion", "1")
    registry.set_alias("challenger", "2")
    processed = topic_factory("data-processed")
    tail = topic_tail({processed: Topic.DATA_PROCESSED})
    window_s = 2.0
    start_predictor(
        launcher,
        platform_settings,
        topics,
        model_name,
        PREDICTOR_PROCESSED_TOPIC=processed,
        PREDICTOR_PROCESSED_WINDOW_S=str(window_s),
    )
    txns = transactions(400)
    send_requests(producer, topics.request, txns)
    unscorable = make_event("test", {**transactions(1, prefix="bad")[0], "transaction_id": ""})
    producer.produce(topics.request, unscorable, b"bad", schema_topic=Topic.PREDICTION_REQUEST.value)
    assert producer.flush(30) == 0
    results = read_results(consumer_factory(topics.completed), serde, len(txns))
    assert_exactly_once(results, [t["transaction_id"] for t in txns])

    def windows() -> list[dict[str, Any]]:
        tail.poll(0.5)
        return tail.on(processed)

    def totals_reached() -> bool:
        seen = windows()
        return (
            sum(w["events"] for w in seen) >= len(txns)
            and sum(w["invalid"] for w in seen) >= 1
            and sum(w["dead_letters"] for w in seen) >= 1
        )

    wait_until(totals_reached, 90, "data.processed windows covering every request", log=lambda: windows())
    seen = windows()
    assert {r.key for r in tail.records(processed)} == {seen[0]["instance_id"]}
    assert sum(w["events"] for w in seen) == len(txns)
    assert sum(w["invalid"] for w in seen) == 1
    assert sum(w["dead_letters"] for w in seen) == 1

    # Per version and arm, per risk level, and the mean score: what prediction.completed says.
    expected = Counter((r["model_version"], r["ab_arm"]) for r in results)
    counted: Counter[tuple[str, str]] = Counter()
    for window in seen:
        for entry in window["by_model"]:
            counted[(entry["model_version"], entry["ab_arm"])] += entry["events"]
    assert counted == expected
    levels: Counter[str] = Counter()
    for window in seen:
        levels.update(window["risk_levels"])
    assert +levels == Counter(r["risk_level"] for r in results)
    weighted = sum(w["fraud_probability_mean"] * w["events"] for w in seen if w["events"])
    mean = sum(r["fraud_probability"] for r in results) / len(results)
    assert weighted / len(txns) == pytest.approx(mean, rel=1e-9)
    assert all(w["latency_p50_ms"] <= w["latency_p99_ms"] for w in seen if w["events"])

    # Windows follow each other without gaps, on boundaries aligned to their length.
    for before, after in zip(seen, seen[1:], strict=False):
        assert after["window_start"] == before["window_end"]
    for window in seen:
        assert window["window_end"].timestamp() % window_s == 0
        assert window["model_name"] == model_name and window["service"] == "predictor"
