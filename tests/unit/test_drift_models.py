"""Background registry lookups: retries while MLflow is down or no champion exists yet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from drift_detector.models import ModelInfoCache, VersionInfo


class FlakyClient:
    def __init__(self) -> None:
        self.champion_version: str | None = None
        self.down = True
        self.calls: list[str] = []

    def champion(self) -> str | None:
        self.calls.append("champion")
        if self.down:
            raise ConnectionError("MLflow is down")
        return self.champion_version

    def info(self, version: str) -> VersionInfo:
        self.calls.append(f"info:{version}")
        return VersionInfo(version, 0.3, {"auc_roc": 0.9})

    def reference(self, version: str) -> pd.DataFrame:
        self.calls.append(f"reference:{version}")
        return pd.DataFrame({"a": [1.0, 2.0]})


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met")


def test_lookups_retry_until_mlflow_and_a_champion_are_there() -> None:
    client = FlakyClient()
    changes = threading.Event()
    cache = ModelInfoCache(lambda: client, backoff_s=0.01, max_backoff_s=0.05, champion_refresh_s=0.05)
    cache.on_change = changes.set
    cache.start()
    try:
        cache.want_champion()
        wait_until(lambda: client.calls.count("champion") >= 3)
        assert cache.last_error is not None and "MLflow is down" in cache.last_error
        assert cache.champion is None and not changes.is_set()
        client.down = False  # MLflow is back, but nothing is @champion yet
        wait_until(lambda: cache.champion_resolved)
        assert cache.champion is None and "no @champion" in (cache.last_error or "")
        client.champion_version = "4"  # the alias is set (no model.deployed needed: periodic refresh)
        wait_until(lambda: "4" in cache.references and "4" in cache.infos)
        assert cache.champion == "4" and cache.infos["4"].threshold == 0.3
        assert changes.is_set()
        assert cache.pending() == ["champion"]  # the periodic refresh stays scheduled
    finally:
        cache.stop()


def test_a_reference_without_scores_is_scored_by_its_own_version() -> None:
    from drift_detector.models import RegistryClient
    from fraud_model.features import FEATURE_NAMES

    features = pd.DataFrame(np.random.default_rng(1).random((50, len(FEATURE_NAMES))), columns=FEATURE_NAMES)

    class Scorer:
        def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
            return matrix[:, 0] / 2

    class Registry:
        loaded: list[str] = []

        def load_reference(self, version: str, include_targets: bool = False) -> pd.DataFrame:
            return features.copy()

        def load_booster(self, version: str) -> Scorer:
            self.loaded.append(version)
            return Scorer()

    client = RegistryClient.__new__(RegistryClient)
    client._registry = Registry()  # type: ignore[assignment]
    frame = client.reference("7")
    assert Registry.loaded == ["7"]
    np.testing.assert_allclose(frame["fraud_probability"], features[FEATURE_NAMES[0]] / 2)
