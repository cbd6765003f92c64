"""Champion / challenger bookkeeping on the MLflow model registry, by alias.

Aliases used by the platform:

* ``@champion`` - what the predictor serves;
* ``@challenger`` - candidate in the A/B test;
* ``@previous_champion`` - where :meth:`ModelRegistry.rollback` goes back to.

Every call goes through an explicit :class:`mlflow.MlflowClient` bound to the given
tracking URI, so several registries (or tests) can coexist in one process.
Alias moves are several registry calls, not a transaction: run one promoter at a time
(in the platform that is the auto-responder).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from fraud_model.features import FEATURE_NAMES, FEATURE_SET_VERSION, build_features
from fraud_model.training import (
    DEFAULT_MODEL_NAME,
    PREDICTION_COLUMN,
    REFERENCE_ARTIFACT_PATH,
    TARGET_COLUMN,
)

CHAMPION: Final[str] = "champion"
CHALLENGER: Final[str] = "challenger"
PREVIOUS_CHAMPION: Final[str] = "previous_champion"

# Error codes MLflow's REST API uses when an alias / model / version does not exist.
_NOT_FOUND: Final[frozenset[str]] = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


class ModelRegistryError(RuntimeError):
    """A registry operation cannot be carried out as asked."""


class NoPreviousChampionError(ModelRegistryError):
    """``rollback`` was asked for but there is no ``@previous_champion``."""


@dataclass
class FraudScorer:
    """A loaded model version, ready for fast micro-batch scoring."""

    booster: xgb.Booster
    model_name: str
    version: str
    threshold: float
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Fraud probability (positive class) per row of a ``build_features`` matrix."""
        matrix = np.asarray(features, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {matrix.shape[1]}")
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        # inplace_predict skips DMatrix construction: the cheapest path for small
        # batches, and thread-safe. binary:logistic yields probabilities directly.
        return np.asarray(self.booster.inplace_predict(matrix, validate_features=False), dtype=np.float64)

    def score(self, transactions: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Fraud probability per transaction record."""
        return self.predict_proba(build_features(transactions))


def _is_not_found(exc: MlflowException) -> bool:
    return getattr(exc, "error_code", "") in _NOT_FOUND


class ModelRegistry:
    """Aliases, artifacts and metrics of one registered model.

    Args:
        tracking_uri: MLflow tracking server (also used as registry URI).
        model_name: registered model name.
    """

    def __init__(self, tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ----------------------------------------------------------------- lookups

    def model_uri(self, alias: str) -> str:
        """``models:/<name>@<alias>``."""
        return f"models:/{self.model_name}@{alias}"

    def version_for_alias(self, alias: str) -> str | None:
        """Version the alias points to, or ``None`` if the alias (or model) does not exist."""
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as exc:
            if _is_not_found(exc):
                return None
            raise

    def aliases(self) -> dict[str, str]:
        """All aliases of the model (``{}`` if the model is not registered yet)."""
        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if _is_not_found(exc):
                return {}
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def get_version(self, version: str | int) -> ModelVersion:
        """The registry entry of a version.

        Raises:
            ModelRegistryError: the version does not exist.
        """
        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise ModelRegistryError(f"{self.model_name} has no version {version}") from exc
            raise

    def latest_version(self) -> str | None:
        """Highest version number, or ``None`` if there is none."""
        try:
            versions = self.client.search_model_versions(f"name = '{self.model_name}'")
        except MlflowException as exc:
            if _is_not_found(exc):
                return None
            raise
        numbers = [int(v.version) for v in versions]
        return str(max(numbers)) if numbers else None

    def training_metrics(self, version: str | int) -> dict[str, float]:
        """Metrics of the MLflow run that produced ``version`` (``val_*``, ``threshold``, ...)."""
        run_id = self._run_id(version)
        return dict(self.client.get_run(run_id).data.metrics)

    def threshold(self, version: str | int) -> float:
        """Cost-optimal decision threshold stored with ``version``."""
        return self._threshold(self.get_version(version))

    def version_tags(self, version: str | int) -> dict[str, str]:
        """Tags of ``version`` (``validation_status``, ``deployment_env``, ...)."""
        return dict(self.get_version(version).tags or {})

    # --------------------------------------------------------------- artifacts

    def load_booster(self, version: str | int, nthread: int | None = None) -> FraudScorer:
        """Download and load ``version`` for scoring.

        Args:
            nthread: scoring threads of the booster (default: as trained).

        Raises:
            ModelRegistryError: the version is unknown or was trained on another
                feature set than this library builds.
        """
        import mlflow

        entry = self.get_version(version)
        feature_set = (entry.tags or {}).get("feature_set_version")
        if feature_set is not None and feature_set != FEATURE_SET_VERSION:
            raise ModelRegistryError(
                f"{self.model_name} v{entry.version} uses feature set {feature_set!r}, "
                f"this build produces {FEATURE_SET_VERSION!r}"
            )
        # The storage location is resolved against *our* server; ``models:/`` URIs would
        # go through mlflow's process-wide registry URI instead.
        location = self.client.get_model_version_download_uri(self.model_name, str(entry.version))
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, tracking_uri=self.tracking_uri, dst_path=tmp
            )
            loaded = mlflow.xgboost.load_model(local)
        booster = loaded.get_booster() if isinstance(loaded, xgb.XGBModel) else loaded
        if nthread is not None:
            booster.set_param({"nthread": nthread})
        return FraudScorer(
            booster=booster,
            model_name=self.model_name,
            version=str(entry.version),
            threshold=self._threshold(entry),
        )

    def load_reference(self, version: str | int, include_targets: bool = False) -> pd.DataFrame:
        """Reference feature sample stored with the run of ``version``.

        Args:
            include_targets: also return ``fraud_probability`` and ``is_fraud``
                (for prediction / target drift); by default only ``FEATURE_NAMES``.
        """
        import mlflow

        run_id = self._run_id(version)
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=REFERENCE_ARTIFACT_PATH,
                tracking_uri=self.tracking_uri,
                dst_path=tmp,
            )
            frame = pd.read_parquet(Path(path))
        columns = list(FEATURE_NAMES)
        if include_targets:
            columns += [c for c in (PREDICTION_COLUMN, TARGET_COLUMN) if c in frame.columns]
        return frame[columns]

    # ------------------------------------------------------------------ aliases

    def set_alias(self, alias: str, version: str | int) -> None:
        """Point ``alias`` at ``version`` (which must exist)."""
        entry = self.get_version(version)
        self.client.set_registered_model_alias(self.model_name, alias, str(entry.version))

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias``; a missing alias is not an error."""
        try:
            self.client.delete_registered_model_alias(self.model_name, alias)
        except MlflowException as exc:
            if not _is_not_found(exc):
                raise

    def promote(self, version: str | int) -> tuple[str | None, str]:
        """Make ``version`` the champion.

        The old champion becomes ``@previous_champion``; ``@challenger`` is removed if it
        pointed to ``version``. Promoting the current champion again changes nothing
        but the challenger clean-up.

        Returns:
            ``(previous champion or None, new champion)``.
        """
        new = str(self.get_version(version).version)
        previous = self.version_for_alias(CHAMPION)
        if previous != new:
            # previous_champion first: a rollback target exists before serving changes.
            if previous is not None:
                self.client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION, previous)
                self.client.set_model_version_tag(self.model_name, previous, "deployment_env", "standby")
            self.client.set_registered_model_alias(self.model_name, CHAMPION, new)
            self.client.set_model_version_tag(self.model_name, new, "deployment_env", "production")
        if self.version_for_alias(CHALLENGER) == new:
            self.delete_alias(CHALLENGER)
        return previous, new

    def rollback(self) -> tuple[str | None, str]:
        """Point ``@champion`` back at ``@previous_champion``.

        ``@previous_champion`` is removed afterwards, so a second rollback fails instead
        of flipping back to the version just rolled away from; that version is tagged
        ``deployment_env=rolled_back``.

        Returns:
            ``(rolled-back champion or None, restored champion)``.

        Raises:
            NoPreviousChampionError: there is nothing to roll back to.
        """
        target = self.version_for_alias(PREVIOUS_CHAMPION)
        if target is None:
            raise NoPreviousChampionError(
                f"cannot roll back {self.model_name!r}: no @{PREVIOUS_CHAMPION} alias "
                f"(aliases: {self.aliases() or 'none'})"
            )
        current = self.version_for_alias(CHAMPION)
        if current == target:
            raise ModelRegistryError(
                f"cannot roll back {self.model_name!r}: @{CHAMPION} already is v{target}"
            )
        self.client.set_registered_model_alias(self.model_name, CHAMPION, target)
        self.client.set_model_version_tag(self.model_name, target, "deployment_env", "production")
        if current is not None:
            self.client.set_model_version_tag(self.model_name, current, "deployment_env", "rolled_back")
        self.delete_alias(PREVIOUS_CHAMPION)
        return current, target

    # ---------------------------------------------------------------- internals

    def _run_id(self, version: str | int) -> str:
        entry = self.get_version(version)
        if not entry.run_id:
            raise ModelRegistryError(f"{self.model_name} v{entry.version} is not linked to a run")
        return str(entry.run_id)

    def _threshold(self, entry: ModelVersion) -> float:
        tag = (entry.tags or {}).get("threshold")
        if tag is not None:
            return float(tag)
        if entry.run_id:
            value = self.client.get_run(entry.run_id).data.metrics.get("threshold")
            if value is not None:
                return float(value)
        return math.nan
