"""The retrain's bounded hyper-parameter search against a real MLflow tracking server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from mlflow import MlflowClient

from auto_responder import search
from fraud_model.generator import TransactionGenerator
from fraud_model.training import log_and_register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return TransactionGenerator(seed=31).generate_frame(4000)


@pytest.fixture
def names(mlflow_uri: str) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    experiment, model = f"search_it_{suffix}", f"fraud_search_it_{suffix}"
    yield experiment, model
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        client.delete_registered_model(model)
    except Exception as exc:
        print(f"cleanup of {model}: {exc}")


def test_search_logs_nested_trials_under_the_retrain_run(frame, names, mlflow_uri) -> None:
    experiment, model = names
    outcome = search.search_and_train(
        frame,
        seed=3,
        trials=3,
        timeout_s=120,
        tracking_uri=mlflow_uri,
        experiment_name=experiment,
        run_name="retrain-it",
        tags={"action_id": "a1"},
    )
    assert outcome.run_id is not None and outcome.completed == 3
    assert outcome.choice in ("search", "fixed")
    info = log_and_register(
        outcome.result,
        tracking_uri=mlflow_uri,
        model_name=model,
        experiment_name=experiment,
        min_auc=0.5,
        run_id=outcome.run_id,
        tags={"action_id": "a1"},
    )
    client = MlflowClient(tracking_uri=mlflow_uri)
    # The registered version is the parent run: chosen params, every FDS metric, the summary.
    assert info.run_id == outcome.run_id
    parent = client.get_run(outcome.run_id)
    assert parent.info.status == "FINISHED"
    assert {"val_business_cost", "val_auprc", "val_auc_roc", "val_recall", "threshold"} <= set(
        parent.data.metrics
    )
    assert parent.data.params["search_completed"] == "3" and "n_estimators" in parent.data.params
    assert parent.data.tags["search_choice"] == outcome.choice
    assert parent.data.metrics["search_fixed_business_cost"] == pytest.approx(outcome.fixed_cost)
    if outcome.choice == "search":
        assert parent.data.params["n_estimators"] == parent.data.params["search_best_n_estimators"]
    # Three nested trial runs under it, each with its parameters and FDS metrics.
    experiment_id = parent.info.experiment_id
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{outcome.run_id}'"
    )
    assert len(children) == 3
    for child in children:
        assert {"max_depth", "learning_rate", "n_estimators"} <= set(child.data.params)
        assert "val_business_cost" in child.data.metrics and child.info.status == "FINISHED"


def test_a_search_worse_than_the_fixed_parameters_keeps_them(frame, names, mlflow_uri, monkeypatch) -> None:
    experiment, _ = names

    def crippled(trial):  # a search space that cannot win
        trial.suggest_int("n_estimators", 1, 2)
        return {"n_estimators": 1, "max_depth": 1, "learning_rate": 0.001}

    monkeypatch.setattr(search, "suggest", crippled)
    outcome = search.search_and_train(
        frame, seed=3, trials=2, timeout_s=120, tracking_uri=mlflow_uri, experiment_name=experiment
    )
    assert outcome.choice == "fixed" and outcome.completed == 2
    assert outcome.best_cost > outcome.fixed_cost
    assert outcome.result.params["n_estimators"] == 200  # the fixed parameters
    tags = MlflowClient(tracking_uri=mlflow_uri).get_run(outcome.run_id).data.tags
    assert tags["search_choice"] == "fixed" and "no trial beats" in tags["search_reason"]


def test_no_trials_is_the_fixed_parameters_without_a_search(frame, mlflow_uri) -> None:
    outcome = search.search_and_train(
        frame, seed=3, trials=0, timeout_s=1, tracking_uri=mlflow_uri, experiment_name="unused"
    )
    assert (outcome.choice, outcome.run_id, outcome.completed) == ("fixed", None, 0)
