"""1 % poison records in the predictor's and the drift detector's inputs: exactly those are dead-lettered.

Each service runs on fresh input topics with its own group. A stream of good records has
poison mixed in at random positions: undecodable bytes (not Avro of the registry) and
schema-valid records whose values make no sense (an empty transaction id for the
predictor; a fraud probability outside [0, 1] for the drift detector). Every poison record
is keyed ``poison-<n>``, so the dead-letter topic must hold exactly those keys, once each,
with the reason headers of :func:`mlops_platform.kafka.dead_letters.dead_letter_headers`;
every good record is processed once, and the service's consumer group ends with no lag.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from mlflow import MlflowClient

from constellation.lag import total_lag
from fraud_model.features import build_features, feature_dict
from fraud_model.generator import TransactionGenerator
from fraud_model.training import log_and_register, train
from mlops_platform.contracts import Topic, dlq_topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.chaos import Ledger, committed_ids, key_id, positions
from tests.support.processes import ServiceLauncher, connection_env, wait_until
from tests.support.scoring import transactions

pytestmark = pytest.mark.chaos

GOOD = 1980
POISON = 20  # 1 %: half undecodable bytes, half schema-valid but invalid values
HEADERS = (
    "dlq.original.topic",
    "dlq.original.partition",
    "dlq.original.offset",
    "dlq.original.timestamp",
    "dlq.error.class",
    "dlq.error.message",
    "dlq.stage",
    "dlq.service",
    "dlq.failed.at",
)


@pytest.fixture
def producer(platform_settings: PlatformSettings, serde: AvroSerde) -> Iterator[EventProducer]:
    producer = EventProducer(platform_settings, "chaos-poison", serde)
    yield producer
    producer.close()


@pytest.fixture(scope="module")
def model_name(mlflow_uri: str) -> Iterator[str]:
    """A small model as @champion under a fresh name (the predictor scores with it, the drift
    detector takes its reference sample)."""
    name = f"chaos_poison_{uuid.uuid4().hex[:8]}"
    result = train(TransactionGenerator(seed=41).generate_frame(4000), seed=4)
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
    try:
        MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).delete_registered_model(name)
    except Exception:  # noqa: S110 - best-effort cleanup of a test model
        pass


def poison_positions(seed: int) -> set[int]:
    """Where in the stream of GOOD + POISON records the poison goes."""
    return set(random.Random(seed).sample(range(GOOD + POISON), POISON))


def dead_letters(settings: PlatformSettings, start: list[Any], source_topic: str) -> list[Message]:
    """The dead letters written since ``start`` whose original topic is ``source_topic``."""
    found: list[Message] = []

    def keep(msg: Message) -> str | None:
        headers = dict(msg.headers() or [])
        if headers.get("dlq.original.topic") == source_topic.encode():
            found.append(msg)
        return None

    committed_ids(settings, start, keep)
    return found


def check_dead_letters(
    letters: list[Message], poison: set[str], source_topic: str, service: str, ledger: Ledger
) -> None:
    keys = Counter((msg.key() or b"").decode() for msg in letters)
    ledger.note(f"{len(letters)} dead letters of {len(poison)} poison records")
    assert set(keys) == poison, f"dead letters {sorted(keys)} are not the poison records {sorted(poison)}"
    assert all(count == 1 for count in keys.values()), f"dead-lettered twice: {keys.most_common(3)}"
    stages: Counter[str] = Counter()
    for msg in letters:
        headers = dict(msg.headers() or [])
        assert all(name in headers for name in HEADERS), headers
        assert headers["dlq.service"] == service.encode()
        assert headers["dlq.original.topic"] == source_topic.encode()
        assert headers["dlq.error.message"], headers
        stage = headers["dlq.stage"]
        stages[stage.decode() if isinstance(stage, bytes) else str(stage)] += 1
    assert stages == {"deserialize": POISON // 2, "process": POISON // 2}, stages


def test_predictor_dead_letters_exactly_the_poison_and_scores_every_good_request_once(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    producer: EventProducer,
    model_name: str,
    topic_factory: Callable[..., str],
    launcher: ServiceLauncher,
    chaos_ledger: Callable[..., Ledger],
) -> None:
    settings, ledger = platform_settings, chaos_ledger()
    request, completed = topic_factory("chaos-request", 3), topic_factory("chaos-completed", 3)
    dlq = topic_factory("chaos-dlq-predictor", 1)
    group = f"chaos-poison-predictor-{uuid.uuid4().hex[:8]}"
    launcher.start(
        "predictor",
        "PREDICTOR_",
        {
            **connection_env(settings),
            "PREDICTOR_MODEL_NAME": model_name,
            "PREDICTOR_REQUEST_TOPIC": request,
            "PREDICTOR_COMPLETED_TOPIC": completed,
            "PREDICTOR_MODEL_EVENTS_TOPIC": topic_factory("chaos-deployed", 1),
            "PREDICTOR_DEAD_LETTER_TOPIC": dlq,
            "PREDICTOR_GROUP_ID": group,
            "PREDICTOR_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:8]}",
        },
    )
    good = iter(transactions(GOOD, prefix=f"chaos-good-{uuid.uuid4().hex[:6]}"))
    poison: set[str] = set()
    at = poison_positions(seed=1)
    for i in range(GOOD + POISON):
        if i not in at:
            txn = next(good)
            producer.produce(
                request, make_event("test", txn), txn["transaction_id"], schema_topic=Topic.PREDICTION_REQUEST
            )
            ledger.sent(txn["transaction_id"])
        elif len(poison) % 2 == 0:
            poison.add(key := f"poison-{i}")
            producer.produce_raw(request, b"\x00\x00\x00\x00\x07not avro at all" + bytes([i % 256]), key)
        else:
            poison.add(key := f"poison-{i}")
            (bad,) = transactions(1)
            bad["transaction_id"] = ""  # schema-valid, but no model can score it
            producer.produce(request, make_event("test", bad), key, schema_topic=Topic.PREDICTION_REQUEST)
        producer.poll(0)
    assert producer.flush(60) == 0

    settle(settings, ledger, completed, group, request)
    letters = dead_letters(settings, positions(settings, dlq, beginning=True), request)
    check_dead_letters(letters, poison, request, "predictor", ledger)
    ledger.assert_exactly_once()


def settle(settings: PlatformSettings, ledger: Ledger, output: str, group: str, *inputs: str) -> None:
    """Wait until every good record came out on ``output`` and ``group`` has no lag on ``inputs``."""

    def lag() -> int:
        return total_lag(settings, group, inputs)

    def done() -> bool:
        ledger.recount(committed_ids(settings, positions(settings, output, beginning=True), key_id))
        return ledger.complete() and lag() == 0

    wait_until(done, 300, lambda: f"{ledger.summary()}; lag {lag()}", interval_s=2)


def test_drift_detector_dead_letters_exactly_the_poison_and_counts_every_good_prediction_once(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    producer: EventProducer,
    model_name: str,
    topic_factory: Callable[..., str],
    launcher: ServiceLauncher,
    tmp_path: Path,
    chaos_ledger: Callable[..., Ledger],
) -> None:
    """The drift detector's dead-letter topic is the catalogue's (``dlq.drift-detector``): its
    letters are told apart by their original topic, a fresh one."""
    settings, ledger = platform_settings, chaos_ledger()
    names = ("predictions", "feedback", "deployments", "actions", "drift", "degraded", "evaluation")
    topics = {name: topic_factory(f"chaos-drift-{name}", 3 if name == "predictions" else 1) for name in names}
    predictions = topics["predictions"]
    group = f"chaos-poison-drift-{uuid.uuid4().hex[:8]}"
    dlq = dlq_topic("drift-detector")
    dlq_start = positions(settings, dlq)
    drift = launcher.start(
        "drift_detector",
        "DRIFT_",
        {
            **connection_env(settings),
            **{f"DRIFT_{name.upper()}_TOPIC": topic for name, topic in topics.items()},
            "DRIFT_MODEL_NAME": model_name,
            "DRIFT_GROUP_ID": group,
            "DRIFT_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:6]}",
            "DRIFT_REPORTS_DIR": str(tmp_path / "reports"),
        },
        timeout_s=180,
        stop_timeout_s=60,
    )
    rows = TransactionGenerator(seed=43).generate_frame(GOOD)
    features = build_features(rows)
    prefix = f"chaos-good-{uuid.uuid4().hex[:6]}"
    good = iter(range(GOOD))
    poison: set[str] = set()
    at = poison_positions(seed=2)

    def prediction(i: int, txn: str, probability: float) -> dict[str, Any]:
        return make_event(
            "predictor",
            {
                "transaction_id": txn,
                "account_id": str(rows["account_id"].iloc[i]),
                "request_event_id": str(uuid.uuid4()),
                "fraud_probability": probability,
                "risk_level": "approve",
                "model_name": model_name,
                "model_version": "1",
                "model_alias": "champion",
                "ab_arm": "champion",
                "features": feature_dict(features[i]),
                "latency_ms": 3.0,
            },
        )

    for n in range(GOOD + POISON):
        if n not in at:
            i = next(good)
            txn = f"{prefix}-{i}"
            producer.produce(
                predictions, prediction(i, txn, 0.1), txn, schema_topic=Topic.PREDICTION_COMPLETED
            )
            ledger.sent(txn)
        elif len(poison) % 2 == 0:
            poison.add(key := f"poison-{n}")
            producer.produce_raw(predictions, b"\x00\x00\x00\x00\x07not avro at all", key)
        else:
            poison.add(key := f"poison-{n}")
            # Schema-valid, but a probability outside [0, 1] is no model's output.
            producer.produce(
                predictions, prediction(0, key, 7.5), key, schema_topic=Topic.PREDICTION_COMPLETED
            )
        producer.poll(0)
    assert producer.flush(60) == 0

    def lag() -> int:
        return total_lag(settings, group, [predictions])

    drift.wait(lambda: f"no lag on {predictions}, have {lag()}", lambda: lag() == 0, 300)
    window = drift.json("/drift")["window"]
    # The window counts rows, not ids: as many rows as good records (dead letters never enter it).
    ledger.recount(ledger.sent_ids[: int(window["rows_seen"])])
    ledger.note(f"window rows {window['rows_seen']}")
    assert int(window["rows_seen"]) == GOOD, window
    check_dead_letters(
        dead_letters(settings, dlq_start, predictions), poison, predictions, "drift-detector", ledger
    )
    ledger.assert_exactly_once()
