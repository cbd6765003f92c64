"""Training, registration and alias moves against a real MLflow tracking server."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import TransactionGenerator
from fraud_model.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    ModelRegistry,
    ModelRegistryError,
    NoPreviousChampionError,
)
from fraud_model.training import (
    PREDICTION_COLUMN,
    TARGET_COLUMN,
    RegisteredModelInfo,
    TrainingResult,
    log_and_register,
    train,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000").rstrip("/")
    problem = None
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:  # noqa: S310 - http(s) URI
            if response.status != 200:
                problem = f"/health answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(exc)
    if problem:
        pytest.fail(
            f"MLflow tracking server not reachable at {uri} ({problem}); start it or set MLFLOW_TRACKING_URI",
            pytrace=False,
        )
    return uri


@pytest.fixture
def model_name(tracking_uri: str) -> Iterator[str]:
    name = f"fraud_detector_test_{uuid.uuid4().hex[:10]}"
    yield name
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.search_registered_models(filter_string=f"name = '{name}'"):
        client.delete_registered_model(name)


@pytest.fixture(scope="module")
def result() -> TrainingResult:
    return train(TransactionGenerator(seed=77).generate_frame(15_000), seed=3)


@pytest.fixture(scope="module")
def weaker() -> TrainingResult:
    return train(TransactionGenerator(seed=78).generate_frame(6_000), params={"n_estimators": 30}, seed=4)


def register(result: TrainingResult, uri: str, name: str, **kwargs: Any) -> RegisteredModelInfo:
    # A separate experiment keeps test runs out of the platform's own experiment.
    kwargs.setdefault("experiment_name", "fraud_detection_tests")
    return log_and_register(result, tracking_uri=uri, model_name=name, **kwargs)


def test_log_and_register_records_everything(
    tracking_uri: str, model_name: str, result: TrainingResult
) -> None:
    info = register(
        result,
        tracking_uri,
        model_name,
        reason="drift_retrain",
        tags={"causation_id": "evt-1"},
        set_alias=CHALLENGER,
    )
    assert info.version == "1" and info.alias == CHALLENGER and info.validation_status == "passed"
    assert info.threshold == result.threshold

    registry = ModelRegistry(tracking_uri, model_name)
    assert registry.aliases() == {CHALLENGER: "1"}
    assert registry.version_for_alias(CHALLENGER) == "1"
    assert registry.version_for_alias(CHAMPION) is None

    tags = registry.version_tags(info.version)
    assert tags["validation_status"] == "passed"
    assert tags["deployment_env"] == "staging"
    assert tags["reason"] == "drift_retrain" and tags["causation_id"] == "evt-1"
    assert registry.threshold(info.version) == result.threshold

    metrics = registry.training_metrics(info.version)
    for key, value in result.metrics.items():
        assert metrics[f"val_{key}"] == pytest.approx(value), key
    assert metrics["threshold"] == pytest.approx(result.threshold)

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(info.run_id)
    assert run.data.params["n_estimators"] == "200"
    assert run.data.tags["reason"] == "drift_retrain"
    artifacts = {a.path for a in client.list_artifacts(info.run_id)}
    assert {"reference", "feature_importance.json"} <= artifacts

    reference = registry.load_reference(info.version)
    assert list(reference.columns) == FEATURE_NAMES
    pd.testing.assert_frame_equal(reference, result.reference_features())
    with_targets = registry.load_reference(info.version, include_targets=True)
    assert list(with_targets.columns)[-2:] == [PREDICTION_COLUMN, TARGET_COLUMN]


def test_failed_validation_gets_no_alias(tracking_uri: str, model_name: str, weaker: TrainingResult) -> None:
    info = register(weaker, tracking_uri, model_name, set_alias=CHAMPION, min_auc=1.01)
    assert info.validation_status == "failed" and info.alias is None
    registry = ModelRegistry(tracking_uri, model_name)
    assert registry.version_tags(info.version)["validation_status"] == "failed"
    assert registry.version_for_alias(CHAMPION) is None


def test_loaded_booster_predicts_like_the_in_memory_model(
    tracking_uri: str, model_name: str, result: TrainingResult
) -> None:
    info = register(result, tracking_uri, model_name, set_alias=CHAMPION)
    scorer = ModelRegistry(tracking_uri, model_name).load_booster(info.version, nthread=1)
    rows = TransactionGenerator(seed=99).generate(700)
    features = build_features(rows)
    expected = result.predict_proba(features)
    np.testing.assert_allclose(scorer.predict_proba(features), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(scorer.score(rows[:10]), expected[:10], rtol=1e-6, atol=1e-7)
    assert scorer.version == info.version and scorer.threshold == result.threshold
    assert scorer.predict_proba(features[0]).shape == (1,)
    assert scorer.predict_proba(features[:0]).shape == (0,)


def test_promote_keeps_previous_champion_and_rollback_restores_it(
    tracking_uri: str, model_name: str, result: TrainingResult, weaker: TrainingResult
) -> None:
    registry = ModelRegistry(tracking_uri, model_name)
    with pytest.raises(NoPreviousChampionError, match="previous_champion"):
        registry.rollback()

    first = register(result, tracking_uri, model_name, set_alias=CHAMPION)
    second = register(weaker, tracking_uri, model_name, set_alias=CHALLENGER, min_auc=0.5)
    assert registry.aliases() == {CHAMPION: first.version, CHALLENGER: second.version}
    with pytest.raises(NoPreviousChampionError):
        registry.rollback()

    assert registry.promote(second.version) == (first.version, second.version)
    assert registry.aliases() == {CHAMPION: second.version, PREVIOUS_CHAMPION: first.version}
    assert registry.version_tags(second.version)["deployment_env"] == "production"
    assert registry.version_tags(first.version)["deployment_env"] == "standby"

    assert registry.rollback() == (second.version, first.version)
    assert registry.aliases() == {CHAMPION: first.version}
    assert registry.version_tags(second.version)["deployment_env"] == "rolled_back"
    assert registry.load_booster(registry.version_for_alias(CHAMPION) or "").version == first.version
    with pytest.raises(NoPreviousChampionError):
        registry.rollback()

    with pytest.raises(ModelRegistryError):
        registry.promote("999")


def test_unknown_model_has_no_aliases(tracking_uri: str) -> None:
    registry = ModelRegistry(tracking_uri, f"fraud_detector_missing_{uuid.uuid4().hex[:8]}")
    assert registry.aliases() == {}
    assert registry.version_for_alias(CHAMPION) is None
    assert registry.latest_version() is None
