"""What the detector needs from the MLflow registry, fetched in the background.

The consumer thread never waits for MLflow: it *asks* (:meth:`ModelInfoCache.want_info`,
:meth:`ModelInfoCache.want_reference`, :meth:`ModelInfoCache.want_champion`) and picks
up results on a later batch. A lookup that fails (MLflow down) is retried with
exponential backoff, so the stream keeps flowing and the answers arrive when MLflow
is back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops_platform.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    threshold: float
    #: training baseline: the run's ``val_*`` metrics without the prefix.
    baseline: dict[str, float]


@dataclass(frozen=True)
class Reference:
    version: str
    frame: pd.DataFrame  # FEATURE_NAMES (+ fraud_probability when stored)


class RegistryClient:
    """The calls the cache makes (a seam for tests)."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        from fraud_model.registry import ModelRegistry

        self._registry = ModelRegistry(tracking_uri, model_name=model_name)

    def champion(self) -> str | None:
        from fraud_model.registry import CHAMPION

        return self._registry.version_for_alias(CHAMPION)

    def info(self, version: str) -> VersionInfo:
        metrics = self._registry.training_metrics(version)
        threshold = self._registry.threshold(version)
        baseline = {k[len("val_") :]: float(v) for k, v in metrics.items() if k.startswith("val_")}
        return VersionInfo(version=version, threshold=threshold, baseline=baseline)

    def reference(self, version: str) -> pd.DataFrame:
        """The version's logged reference: features, its own scores and labels.

        A run that logged no ``fraud_probability`` (older versions) gets it by scoring its
        reference features with the version itself, so prediction drift always compares the
        serving model's scores with its own.
        """
        from fraud_model.features import FEATURE_NAMES
        from fraud_model.training import PREDICTION_COLUMN

        frame = self._registry.load_reference(version, include_targets=True)
        if PREDICTION_COLUMN not in frame.columns:
            scorer = self._registry.load_booster(version)
            frame = frame.copy()
            frame[PREDICTION_COLUMN] = scorer.predict_proba(frame[list(FEATURE_NAMES)].to_numpy())
            log.info("reference_scores_computed", version=version, rows=len(frame))
        return frame


Task = tuple[str, str]  # (kind, version): ("champion", ""), ("info", v), ("reference", v)


class ModelInfoCache:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        champion_refresh_s: float = 300.0,
    ) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._lock = threading.Condition()
        self._tasks: dict[Task, float] = {}  # task -> not before (monotonic)
        self._attempts: dict[Task, int] = {}
        self.infos: dict[str, VersionInfo] = {}
        self.references: dict[str, Reference] = {}
        self.champion: str | None = None
        self.champion_resolved = False
        #: Called (from the lookup thread) after a champion or reference lookup succeeded.
        self.on_change: Callable[[], None] | None = None
        self.last_error: str | None = None
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.champion_refresh_s = champion_refresh_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-registry", daemon=True)

    # -- requests (any thread)
    def want_champion(self) -> None:
        """Resolve ``@champion`` now (also when a periodic refresh is scheduled later)."""
        with self._lock:
            self._tasks[("champion", "")] = 0.0
            self._lock.notify()

    def want_info(self, version: str) -> None:
        if version not in self.infos:
            self._want(("info", version))

    def want_reference(self, version: str) -> None:
        if version not in self.references:
            self._want(("reference", version))

    def _want(self, task: Task) -> None:
        with self._lock:
            if task not in self._tasks:
                self._tasks[task] = 0.0
                self._lock.notify()

    def pending(self) -> list[str]:
        with self._lock:
            return [f"{kind}:{version}" if version else kind for kind, version in self._tasks]

    # -- lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            task = self._next_task()
            if task is None:
                continue
            try:
                self._do(task)
            except Exception as exc:
                attempts = self._attempts.get(task, 0) + 1
                self._attempts[task] = attempts
                delay = min(self.backoff_s * 2 ** (attempts - 1), self.max_backoff_s)
                self.last_error = f"{task[0]} {task[1]}: {type(exc).__name__}: {exc}"
                log.warning(
                    "registry_lookup_failed", task=task[0], version=task[1], retry_in_s=delay, error=str(exc)
                )
                with self._lock:
                    self._tasks[task] = time.monotonic() + delay
                continue
            self._attempts.pop(task, None)
            self.last_error = None
            with self._lock:
                if task[0] == "champion" and self.champion_refresh_s > 0:
                    # Re-read the alias now and then: it may move without a model.deployed event.
                    self._tasks[task] = time.monotonic() + self.champion_refresh_s
                else:
                    self._tasks.pop(task, None)
            if self.on_change is not None and task[0] in ("champion", "reference"):
                try:
                    self.on_change()
                except Exception as exc:
                    log.warning("registry_change_hook_failed", error=repr(exc))

    def _next_task(self) -> Task | None:
        with self._lock:
            while not self._stop.is_set():
                now = time.monotonic()
                ready = [t for t, at in self._tasks.items() if at <= now]
                if ready:
                    return ready[0]
                wait = min((at - now for at in self._tasks.values()), default=1.0)
                self._lock.wait(timeout=max(min(wait, 1.0), 0.01))
            return None

    def _do(self, task: Task) -> None:
        if self._client is None:
            self._client = self._factory()
        kind, version = task
        if kind == "champion":
            champion = self._client.champion()
            self.champion, self.champion_resolved = champion, True
            if champion is None:
                raise LookupError("no @champion alias yet")  # retried with backoff
            self.want_reference(champion)
            self.want_info(champion)
        elif kind == "info":
            info = self._client.info(version)
            if math.isnan(info.threshold):
                log.warning("version_without_threshold", version=version)
            self.infos[version] = info
        elif kind == "reference":
            frame = self._client.reference(version)
            self.references[version] = Reference(version=version, frame=frame)
            log.info("reference_loaded", version=version, rows=len(frame))
