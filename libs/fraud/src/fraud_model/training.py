"""Train the XGBoost fraud model and record it in MLflow.

:func:`train` is pure (no I/O): data in, :class:`TrainingResult` out.
:func:`log_and_register` writes one MLflow run (params, ``val_*`` FDS metrics, the
cost-optimal threshold, the reference sample, the model) and registers a version of
``fraud_detector`` with validation tags, optionally pointing an alias at it (into a run of
its own, or into an open one, e.g. the parent run of a hyper-parameter search).

The reference sample is stored as Parquet (``reference/reference.parquet``); pyarrow
is a hard dependency of MLflow, so it is always available where MLflow is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import train_test_split

from fraud_model.contract import LABEL_KEY
from fraud_model.features import FEATURE_NAMES, FEATURE_SET_VERSION, build_features
from fraud_model.metrics import DEFAULT_FN_COST, DEFAULT_FP_COST, cost_optimal_threshold, fds_metrics

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME: Final[str] = "fraud_detector"
DEFAULT_EXPERIMENT: Final[str] = "fraud_detection"
DEFAULT_MIN_AUC: Final[float] = 0.85
MODEL_ARTIFACT_NAME: Final[str] = "model"
REFERENCE_ARTIFACT_DIR: Final[str] = "reference"
REFERENCE_FILE: Final[str] = "reference.parquet"
#: Run-relative path of the reference sample.
REFERENCE_ARTIFACT_PATH: Final[str] = f"{REFERENCE_ARTIFACT_DIR}/{REFERENCE_FILE}"
#: Extra reference columns next to ``FEATURE_NAMES`` (for prediction / target drift).
PREDICTION_COLUMN: Final[str] = "fraud_probability"
TARGET_COLUMN: Final[str] = LABEL_KEY

#: Quick to train on two cores (a few seconds for ~50k rows) yet strong on this data.
DEFAULT_PARAMS: Final[dict[str, Any]] = {
    "n_estimators": 200,
    "max_depth": 5,
    "learning_rate": 0.08,
    "subsample": 0.9,
    "colsample_bytree": 0.8,
    "min_child_weight": 2.0,
    "tree_method": "hist",
    "max_bin": 256,
    "eval_metric": "aucpr",
    "n_jobs": 2,
}

# mlflow's fluent API (start_run, log_model) reads a process-wide tracking URI.
_FLUENT_LOCK = threading.Lock()
_MLFLOW_URI_VARS: Final[tuple[str, ...]] = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass
class TrainingResult:
    """Everything :func:`train` produced; input to :func:`log_and_register`.

    ``reference`` holds up to ``reference_rows`` validation rows: the ``FEATURE_NAMES``
    columns plus ``fraud_probability`` and ``is_fraud``.
    """

    model: xgb.XGBClassifier
    params: dict[str, Any]
    metrics: dict[str, float]
    threshold: float
    reference: pd.DataFrame
    n_train: int
    n_validation: int
    train_fraud_rate: float
    seed: int
    fn_cost: float = DEFAULT_FN_COST
    fp_cost: float = DEFAULT_FP_COST
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    feature_set_version: str = FEATURE_SET_VERSION

    @property
    def booster(self) -> xgb.Booster:
        """The trained booster."""
        return self.model.get_booster()

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Fraud probability per row of a ``build_features`` matrix."""
        return np.asarray(self.model.predict_proba(np.asarray(features, dtype=np.float32))[:, 1])

    def reference_features(self) -> pd.DataFrame:
        """The reference sample restricted to the model's features."""
        return self.reference[self.feature_names]


@dataclass(frozen=True)
class RegisteredModelInfo:
    """Outcome of :func:`log_and_register`."""

    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    threshold: float
    validation_status: str
    model_uri: str
    alias: str | None = None


def _as_frame(data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    return pd.DataFrame.from_records(list(data))


def train(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    seed: int = 42,
    *,
    validation_fraction: float = 0.25,
    reference_rows: int = 5_000,
    fn_cost: float = DEFAULT_FN_COST,
    fp_cost: float = DEFAULT_FP_COST,
) -> TrainingResult:
    """Train an XGBoost fraud classifier on labelled transactions.

    Args:
        data: transactions with the contract fields and an ``is_fraud`` label
            (rows whose label is missing are ignored).
        params: XGBoost overrides on top of :data:`DEFAULT_PARAMS`. Unless given,
            ``scale_pos_weight`` is set to ``negatives / positives`` of the training split.
        seed: drives the split, the model and the reference sample.
        validation_fraction: share of rows held out (stratified by label).
        reference_rows: size cap of the reference sample.

    Returns:
        The model, the cost-optimal threshold on the validation split and the FDS
        metrics at that threshold.

    Raises:
        ValueError: no label column, or fewer than 10 rows of either class.
    """
    frame = _as_frame(data)
    if LABEL_KEY not in frame.columns:
        raise ValueError(f"training data needs a {LABEL_KEY!r} column")
    frame = frame[frame[LABEL_KEY].notna()]
    labels = frame[LABEL_KEY].astype(bool).to_numpy()
    positives = int(labels.sum())
    if positives < 10 or labels.size - positives < 10:
        raise ValueError(
            f"need at least 10 fraud and 10 legitimate rows, got {positives} and {labels.size - positives}"
        )
    features = build_features(frame)
    x_train, x_val, y_train, y_val = train_test_split(
        features, labels, test_size=validation_fraction, stratify=labels, random_state=seed
    )
    effective: dict[str, Any] = {**DEFAULT_PARAMS, **(params or {})}
    train_pos = int(y_train.sum())
    effective.setdefault("scale_pos_weight", (y_train.size - train_pos) / train_pos)
    effective["random_state"] = seed

    model = xgb.XGBClassifier(**effective)
    model.fit(x_train, y_train.astype(np.int32), verbose=False)
    # Names travel with the saved model, so MLflow's UI and importances are readable.
    model.get_booster().feature_names = list(FEATURE_NAMES)

    prob = np.asarray(model.predict_proba(x_val)[:, 1], dtype=np.float64)
    threshold = cost_optimal_threshold(y_val, prob, fn_cost, fp_cost)
    metrics = fds_metrics(y_val, prob, threshold, fn_cost, fp_cost)

    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(x_val), size=min(reference_rows, len(x_val)), replace=False))
    reference = pd.DataFrame(x_val[take], columns=list(FEATURE_NAMES))
    reference[PREDICTION_COLUMN] = prob[take]
    reference[TARGET_COLUMN] = y_val[take]

    return TrainingResult(
        model=model,
        params=effective,
        metrics=metrics,
        threshold=threshold,
        reference=reference,
        n_train=int(y_train.size),
        n_validation=int(y_val.size),
        train_fraud_rate=train_pos / y_train.size,
        seed=seed,
        fn_cost=fn_cost,
        fp_cost=fp_cost,
    )


@contextlib.contextmanager
def _fluent_tracking(tracking_uri: str) -> Iterator[None]:
    """Point mlflow's process-wide fluent API at ``tracking_uri`` for a block."""
    import mlflow

    with _FLUENT_LOCK:
        old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        # set_*_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ;
        # restoring only the URIs would leave MLflow's resolved default (a local sqlite
        # file) in the environment, where child processes and settings would pick it up.
        old_env = {name: os.environ.get(name) for name in _MLFLOW_URI_VARS}
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_tracking)
            mlflow.set_registry_uri(old_registry)
            for name, value in old_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        # Another process created it between our two calls.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(
                name, description="XGBoost card-fraud scorer (FDS); versions carry validation tags."
            )
        except MlflowException as create_exc:
            if getattr(create_exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise


def _pip_requirements() -> list[str]:
    # Pinning explicitly skips MLflow's requirement inference, which loads the model
    # in a subprocess and costs seconds per registration.
    import mlflow
    import sklearn

    return [
        f"mlflow=={mlflow.__version__}",
        f"xgboost=={xgb.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
    ]


def log_and_register(
    result: TrainingResult,
    *,
    tracking_uri: str,
    model_name: str = DEFAULT_MODEL_NAME,
    reason: str = "manual",
    tags: Mapping[str, str] | None = None,
    set_alias: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    min_auc: float = DEFAULT_MIN_AUC,
    deployment_env: str = "staging",
    alias_requires_validation: bool = True,
    run_name: str | None = None,
    run_id: str | None = None,
) -> RegisteredModelInfo:
    """Log ``result`` as one MLflow run and register it as a new model version.

    The run gets the params, every FDS metric prefixed ``val_``, ``threshold``, the
    reference sample at ``reference/reference.parquet``, feature importances and the
    model (``mlflow.xgboost`` flavour with signature and input example). The version
    gets tags ``validation_status`` (``passed`` if validation AUC >= ``min_auc``),
    ``deployment_env``, ``reason``, ``threshold``, ``feature_set_version`` and ``tags``.

    Args:
        set_alias: alias to point at the new version (e.g. ``challenger``). With
            ``alias_requires_validation`` (default) a version that failed validation
            does not get the alias; ``RegisteredModelInfo.alias`` is then ``None``.
        run_id: log into this existing (open) run instead of starting one, e.g. the parent
            run of a hyper-parameter search whose trials are its nested runs.

    Not safe to run concurrently with other code using mlflow's fluent API in the
    same process: the tracking URI is process-wide while the run is written.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment_name)
    auc = result.metrics.get("auc_roc", math.nan)
    status = "passed" if not math.isnan(auc) and auc >= min_auc else "failed"
    extra_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    run_tags = {
        "reason": reason,
        "model_name": model_name,
        "validation_status": status,
        "feature_set_version": result.feature_set_version,
        **extra_tags,
    }
    params: dict[str, Any] = {
        **result.params,
        "seed": result.seed,
        "n_train": result.n_train,
        "n_validation": result.n_validation,
        "n_features": len(result.feature_names),
        "fn_cost": result.fn_cost,
        "fp_cost": result.fp_cost,
        "min_auc": min_auc,
        "feature_set_version": result.feature_set_version,
    }
    run_metrics = {f"val_{k}": float(v) for k, v in result.metrics.items()}
    run_metrics |= {"threshold": result.threshold, "train_fraud_rate": result.train_fraud_rate}

    example = result.reference_features().head(5)
    signature = infer_signature(example, result.model.predict(example.to_numpy()))
    importances = result.booster.get_score(importance_type="gain")

    with _fluent_tracking(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        if run_id is not None:
            starting = mlflow.start_run(run_id=run_id)
        else:
            starting = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags)
        with starting as run:
            run_id = run.info.run_id
            mlflow.set_tags(run_tags)
            mlflow.log_params(params)
            mlflow.log_metrics(run_metrics)
            reference_path = Path(tmp) / REFERENCE_FILE
            result.reference.to_parquet(reference_path, index=False)
            mlflow.log_artifact(str(reference_path), artifact_path=REFERENCE_ARTIFACT_DIR)
            importance_path = Path(tmp) / "feature_importance.json"
            importance_path.write_text(json.dumps(importances, indent=2, sort_keys=True))
            mlflow.log_artifact(str(importance_path))
            model_info = mlflow.xgboost.log_model(
                result.model,
                name=MODEL_ARTIFACT_NAME,
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
                model_format="ubj",
            )

    _ensure_registered_model(client, model_name)
    version_tags = {
        "validation_status": status,
        "deployment_env": deployment_env,
        "reason": reason,
        "threshold": repr(result.threshold),
        "feature_set_version": result.feature_set_version,
        "min_auc": repr(min_auc),
        **extra_tags,
    }
    model_version = client.create_model_version(
        name=model_name,
        source=model_info.model_uri,
        run_id=run_id,
        tags=version_tags,
        description=f"{reason}: val AUC {auc:.4f}, threshold {result.threshold:.4f}",
        model_id=getattr(model_info, "model_id", None),
    )
    version = str(model_version.version)

    alias: str | None = None
    if set_alias:
        if status == "passed" or not alias_requires_validation:
            client.set_registered_model_alias(model_name, set_alias, version)
            alias = set_alias
        else:
            log.warning(
                "version %s of %s failed validation (AUC %.4f < %.4f); alias %r not set",
                version,
                model_name,
                auc,
                min_auc,
                set_alias,
            )
    return RegisteredModelInfo(
        model_name=model_name,
        version=version,
        run_id=run_id,
        metrics=dict(result.metrics),
        threshold=result.threshold,
        validation_status=status,
        model_uri=f"models:/{model_name}/{version}",
        alias=alias,
    )
