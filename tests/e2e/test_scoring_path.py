"""The fraud scoring path end to end: HTTP ingest -> prediction.request -> predictor -> prediction.completed.

Both services run as processes on the catalogue topics, which other traffic may share: the
predictor gets its own consumer group (pinned to the current end of prediction.request) and a
registered model with a fresh name, so its outputs are told apart by model name and
transaction id; readers start at the current end of each topic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fraud_model.registry import ModelRegistry
from mlops_platform.contracts import load_catalogue
from mlops_platform.kafka import ensure_topics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.support.models import LoggedModel, delete_model, log_small_models, register_copies
from tests.support.processes import ServiceLauncher, ServiceProcess, connection_env
from tests.support.scoring import COMPLETED, REQUEST, pin_group_to_end, transactions
from tests.support.topics import TailRecord, TopicTail

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def provisioned(platform_settings: PlatformSettings, serde: AvroSerde) -> AvroSerde:
    ensure_topics(platform_settings, load_catalogue(platform_settings.schemas_dir))
    return serde


@pytest.fixture(scope="module")
def champion(mlflow_uri: str) -> Iterator[tuple[str, str]]:
    """A fresh registered model whose @champion is version 1: (name, version)."""
    base = f"predictor_e2e_base_{uuid.uuid4().hex[:8]}"
    logged: list[LoggedModel] = log_small_models(mlflow_uri, count=1, name=base)
    name = register_copies(mlflow_uri, logged, prefix="fraud_detector_e2e")
    ModelRegistry(mlflow_uri, name).set_alias("champion", "1")
    yield name, "1"
    delete_model(mlflow_uri, name)
    delete_model(mlflow_uri, base)


@pytest.fixture(scope="module")
def predictor(
    provisioned: AvroSerde,
    platform_settings: PlatformSettings,
    champion: tuple[str, str],
    service_launcher: ServiceLauncher,
) -> ServiceProcess:
    group = f"e2e-predictor-{uuid.uuid4().hex[:8]}"
    pin_group_to_end(platform_settings, group, REQUEST)
    env = {
        **connection_env(platform_settings),
        "PREDICTOR_MODEL_NAME": champion[0],
        "PREDICTOR_GROUP_ID": group,
        "PREDICTOR_INSTANCE_ID": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    return service_launcher.start("predictor", "PREDICTOR_", env)


@pytest.fixture(scope="module")
def ingest(
    provisioned: AvroSerde, platform_settings: PlatformSettings, service_launcher: ServiceLauncher
) -> ServiceProcess:
    env = {**connection_env(platform_settings), "INGEST_INSTANCE_ID": f"e2e-{uuid.uuid4().hex[:8]}"}
    return service_launcher.start("ingest", "INGEST_", env)


def ours_in(records: list[TailRecord], wanted: set[str]) -> list[dict[str, Any]]:
    """The decoded values of the records whose key is in ``wanted``."""
    return [r.value for r in records if r.key in wanted]


def test_a_posted_transaction_yields_exactly_one_prediction_from_the_champion(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    champion: tuple[str, str],
    predictor: ServiceProcess,
    ingest: ServiceProcess,
) -> None:
    model_name, version = champion
    completed = TopicTail(platform_settings, serde, [COMPLETED])
    try:
        (txn,) = transactions(1, prefix=f"e2e-{uuid.uuid4().hex[:8]}")
        response = ingest.post("/transactions", txn)
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["transaction_ids"] == [txn["transaction_id"]]

        ours: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while not ours and time.monotonic() < deadline:
            found = ours_in(completed.poll(1), {txn["transaction_id"]})
            ours += [r for r in found if r["model_name"] == model_name]
        # Then make sure no second prediction of ours follows.
        ours += [
            r for r in ours_in(completed.poll(5), {txn["transaction_id"]}) if r["model_name"] == model_name
        ]
    finally:
        completed.close()
    assert len(ours) == 1, f"expected exactly one prediction, got {len(ours)}"
    (prediction,) = ours
    assert prediction["model_version"] == version and prediction["model_alias"] == "champion"
    assert prediction["ab_arm"] == "champion"
    assert prediction["request_event_id"] == accepted["event_ids"][0]
    assert prediction["envelope"]["causation_id"] == accepted["event_ids"][0]
    assert prediction["risk_level"] in {"approve", "verify", "hold", "block"}
    assert predictor.get("/model").json()["champion"]["version"] == version


def test_bad_input_gets_422_and_nothing_is_published(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    predictor: ServiceProcess,
    ingest: ServiceProcess,
) -> None:
    requests = TopicTail(platform_settings, serde, [REQUEST])
    completed = TopicTail(platform_settings, serde, [COMPLETED])
    try:
        good, other = transactions(2, prefix=f"e2e-bad-{uuid.uuid4().hex[:8]}")
        out_of_range = {**good, "amount": -5.0}
        missing = {k: v for k, v in other.items() if k != "merchant_category"}
        for body, field in ((out_of_range, "amount"), (missing, "merchant_category")):
            response = ingest.post("/transactions", body)
            assert response.status_code == 422, response.text
            assert any(field in error["loc"] for error in response.json()["detail"]), response.text
        ids = {good["transaction_id"], other["transaction_id"]}
        assert ours_in(requests.poll(5), ids) == [], "nothing reached prediction.request"
        assert ours_in(completed.poll(1), ids) == [], "nothing was scored"
    finally:
        requests.close()
        completed.close()
