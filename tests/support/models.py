"""Fraud models in the real MLflow registry for tests.

Training and logging a model takes seconds; registering another version of an already
logged model takes a fraction of that. So a session trains and logs a couple of small
models once (:func:`log_small_models`), and each test copies them as versions of a
registered model with a fresh name (:func:`register_copies`), which it owns alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mlflow import MlflowClient

from fraud_model.generator import TransactionGenerator
from fraud_model.training import log_and_register, train

TEST_EXPERIMENT = "predictor_tests"


@dataclass(frozen=True)
class LoggedModel:
    """A logged model version to copy: its artifact source, run and version tags."""

    source: str
    run_id: str
    tags: dict[str, str]
    model_id: str | None = None


def _logged_model_id(source: str) -> str | None:
    # MLflow 3 sources look like models:/m-<id>; a copy must name that logged model.
    prefix = "models:/"
    return source[len(prefix) :] if source.startswith(prefix + "m-") else None


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def log_small_models(tracking_uri: str, count: int = 2, name: str | None = None) -> list[LoggedModel]:
    """Train ``count`` small, different models (a few thousand rows each) and log them once.

    They are registered as versions of ``name`` (a fresh name by default), which the caller may
    delete afterwards: copies made by :func:`register_copies` keep working.
    """
    client = client_for(tracking_uri)
    name = name or f"predictor_test_base_{uuid.uuid4().hex[:8]}"
    logged: list[LoggedModel] = []
    for index in range(count):
        frame = TransactionGenerator(seed=100 + index).generate_frame(4_000)
        result = train(frame, params={"n_estimators": 40 + 20 * index, "max_depth": 3 + index}, seed=index)
        info = log_and_register(
            result,
            tracking_uri=tracking_uri,
            model_name=name,
            experiment_name=TEST_EXPERIMENT,
            min_auc=0.0,
            reason="test",
        )
        version = client.get_model_version(name, info.version)
        logged.append(
            LoggedModel(
                str(version.source),
                str(version.run_id),
                dict(version.tags or {}),
                _logged_model_id(str(version.source)),
            )
        )
    return logged


def register_copies(
    tracking_uri: str, models: list[LoggedModel], *, prefix: str = "fraud_detector_test"
) -> str:
    """A new registered model whose versions 1..n are ``models``; returns its name (no aliases set)."""
    client = client_for(tracking_uri)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    client.create_registered_model(name)
    try:
        for model in models:
            client.create_model_version(
                name, source=model.source, run_id=model.run_id, tags=model.tags, model_id=model.model_id
            )
    except BaseException:
        client.delete_registered_model(name)
        raise
    return name


def delete_model(tracking_uri: str, name: str) -> None:
    client = client_for(tracking_uri)
    if client.search_registered_models(filter_string=f"name = '{name}'"):
        client.delete_registered_model(name)
