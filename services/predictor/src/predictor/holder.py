"""The models being served: champion (+ optional challenger), reloaded by alias.

:class:`ModelHolder` resolves the aliases in the registry, loads the versions they
point to and publishes them as one immutable :class:`ServingSet`. The scoring loop
reads :attr:`ModelHolder.serving` once per micro-batch, so a reload takes effect
between two batches, never inside one; nothing stops or restarts.

If the registry cannot be reached (or a version cannot be loaded) the holder keeps the
last good set and reports itself *stale*; with nothing loaded at all it reports no
model, and the scoring loop waits instead of scoring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from mlops_platform.logs import get_logger
from predictor import metrics
from predictor.ab import CHALLENGER_ARM, CHAMPION_ARM

log = get_logger(__name__)


class Scorer(Protocol):
    """What scoring needs from a loaded model (``fraud_model.registry.FraudScorer``)."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedVersion:
    """A model version downloaded and ready to score."""

    scorer: Scorer
    version: str
    run_id: str | None
    threshold: float
    loaded_at: datetime
    load_seconds: float


class ModelSource(Protocol):
    """Where models come from (the MLflow registry in production, fakes in unit tests)."""

    model_name: str

    def aliases(self) -> dict[str, str]:
        """Alias -> version of the registered model ({} if it does not exist)."""
        ...

    def load(self, version: str) -> LoadedVersion:
        """Download and load one version."""
        ...


class MlflowModelSource:
    """Models from the MLflow registry, through :class:`fraud_model.registry.ModelRegistry`."""

    def __init__(self, tracking_uri: str, model_name: str, nthread: int | None = 1) -> None:
        from fraud_model.registry import ModelRegistry  # MLflow is heavy: imported on use

        self.registry = ModelRegistry(tracking_uri, model_name)
        self.model_name = model_name
        self.nthread = nthread

    def aliases(self) -> dict[str, str]:
        return self.registry.aliases()

    def load(self, version: str) -> LoadedVersion:
        started = time.perf_counter()
        scorer = self.registry.load_booster(version, nthread=self.nthread)
        entry = self.registry.get_version(version)
        return LoadedVersion(
            scorer=scorer,
            version=str(version),
            run_id=str(entry.run_id) if entry.run_id else None,
            threshold=float(scorer.threshold),
            loaded_at=datetime.now(UTC),
            load_seconds=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class ServingModel:
    """One A/B arm: the alias it follows and the version loaded for it."""

    arm: str
    alias: str
    model: LoadedVersion

    @property
    def version(self) -> str:
        return self.model.version

    def describe(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "alias": self.alias,
            "version": self.model.version,
            "run_id": self.model.run_id,
            "training_threshold": None if np.isnan(self.model.threshold) else self.model.threshold,
            "loaded_at": self.model.loaded_at.isoformat(),
            "load_seconds": round(self.model.load_seconds, 4),
        }


@dataclass(frozen=True)
class ServingSet:
    """What serves right now; replaced as a whole, never modified."""

    model_name: str
    champion: ServingModel
    challenger: ServingModel | None
    since: datetime

    def for_arm(self, arm: str) -> ServingModel:
        if arm == CHALLENGER_ARM and self.challenger is not None:
            return self.challenger
        return self.champion

    @property
    def versions(self) -> dict[str, str]:
        """Arm -> version."""
        out = {CHAMPION_ARM: self.champion.version}
        if self.challenger is not None:
            out[CHALLENGER_ARM] = self.challenger.version
        return out


@dataclass
class HolderStatus:
    """Outcome of the alias checks so far (for /model, /ready and heartbeats)."""

    stale: bool = False
    stale_since: datetime | None = None
    last_error: str | None = None
    last_check_at: datetime | None = None
    last_success_at: datetime | None = None
    last_trigger: str | None = None
    registry_aliases: dict[str, str] = field(default_factory=dict)
    checks: int = 0
    swaps: int = 0

    def as_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "stale": self.stale,
            "stale_since": iso(self.stale_since),
            "last_error": self.last_error,
            "last_check_at": iso(self.last_check_at),
            "last_success_at": iso(self.last_success_at),
            "last_trigger": self.last_trigger,
            "registry_aliases": dict(self.registry_aliases),
            "checks": self.checks,
            "swaps": self.swaps,
        }


@dataclass(frozen=True)
class RefreshResult:
    changed: bool
    error: str | None
    serving: ServingSet | None


class RefreshError(RuntimeError):
    """The registry could not be read, or a version it names could not be loaded."""


class ModelHolder:
    """Follows ``@champion`` and ``@challenger`` of one registered model.

    :meth:`refresh` may be called from any thread (periodic check, ``model.deployed``
    listener, HTTP); calls are serialised. Loaded versions are reused when an alias moves
    to a version already in memory (e.g. promoting the challenger).
    """

    def __init__(
        self,
        source: ModelSource,
        champion_alias: str = "champion",
        challenger_alias: str = "challenger",
    ) -> None:
        self.source = source
        self.model_name = source.model_name
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self._serving: ServingSet | None = None
        self._status = HolderStatus()
        self._lock = threading.Lock()

    @property
    def serving(self) -> ServingSet | None:
        """The current set (read once per batch; a plain attribute read is atomic)."""
        return self._serving

    @property
    def status(self) -> HolderStatus:
        return self._status

    def refresh(self, trigger: str = "manual") -> RefreshResult:
        """Check the aliases and swap in what they point to; never raises."""
        with self._lock:
            status = self._status
            status.checks += 1
            status.last_trigger = trigger
            status.last_check_at = datetime.now(UTC)
            try:
                new, partial_error = self._resolve()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:1000]
                self._mark_stale(error)
                metrics.MODEL_RELOADS.labels(trigger, "failed").inc()
                log.warning(
                    "model_refresh_failed",
                    trigger=trigger,
                    error=error,
                    serving=self._serving.versions if self._serving else None,
                )
                return RefreshResult(False, error, self._serving)
            changed = new is not self._serving
            if changed:
                self._swap(new, trigger)
            if partial_error is None:
                status.stale, status.stale_since, status.last_error = False, None, None
                status.last_success_at = status.last_check_at
                metrics.MODEL_STALE.set(0)
            else:
                self._mark_stale(partial_error)
            outcome = "failed" if partial_error else ("changed" if changed else "unchanged")
            metrics.MODEL_RELOADS.labels(trigger, outcome).inc()
            return RefreshResult(changed, partial_error, self._serving)

    # ---------------------------------------------------------------- internals

    def _resolve(self) -> tuple[ServingSet, str | None]:
        """The set the registry asks for (the current object itself when nothing changed).

        Raises when the registry cannot be read or the champion cannot be loaded. A challenger
        that cannot be loaded fails the refresh too (the last good set keeps serving), except
        when nothing serves yet: then the champion serves alone and the error is returned.
        """
        aliases = self.source.aliases()
        self._status.registry_aliases = dict(aliases)
        champion_version = aliases.get(self.champion_alias)
        if champion_version is None:
            raise RefreshError(
                f"registered model {self.model_name!r} has no @{self.champion_alias} alias "
                f"(aliases: {aliases or 'none'})"
            )
        challenger_version = aliases.get(self.challenger_alias)
        if challenger_version == champion_version:
            # Both aliases on one version: there is nothing to compare, serve it as champion only.
            challenger_version = None
        current = self._serving
        if (
            current is not None
            and current.champion.version == champion_version
            and (current.challenger.version if current.challenger else None) == challenger_version
        ):
            return current, None
        in_memory = self._in_memory()
        champion = self._load(champion_version, in_memory)
        challenger: LoadedVersion | None = None
        partial_error: str | None = None
        if challenger_version:
            try:
                challenger = self._load(challenger_version, in_memory)
            except Exception as exc:
                if current is not None:
                    raise
                partial_error = f"challenger v{challenger_version} not loaded: {type(exc).__name__}: {exc}"
        serving = ServingSet(
            model_name=self.model_name,
            champion=ServingModel(CHAMPION_ARM, self.champion_alias, champion),
            challenger=(
                ServingModel(CHALLENGER_ARM, self.challenger_alias, challenger) if challenger else None
            ),
            since=datetime.now(UTC),
        )
        return serving, partial_error[:1000] if partial_error else None

    def _in_memory(self) -> Mapping[str, LoadedVersion]:
        current = self._serving
        if current is None:
            return {}
        loaded = {current.champion.version: current.champion.model}
        if current.challenger is not None:
            loaded[current.challenger.version] = current.challenger.model
        return loaded

    def _load(self, version: str, in_memory: Mapping[str, LoadedVersion]) -> LoadedVersion:
        if version in in_memory:
            return in_memory[version]
        log.info("model_loading", model=self.model_name, version=version)
        loaded = self.source.load(version)
        metrics.MODEL_LOAD_TIME.labels(self.model_name).set(loaded.load_seconds)
        log.info(
            "model_loaded", model=self.model_name, version=version, seconds=round(loaded.load_seconds, 3)
        )
        return loaded

    def _swap(self, new: ServingSet, trigger: str) -> None:
        old = self._serving
        self._serving = new
        self._status.swaps += 1
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(new.champion.alias, new.champion.version).set(1)
        if new.challenger is not None:
            metrics.MODEL_INFO.labels(new.challenger.alias, new.challenger.version).set(1)
        log.info(
            "model_swapped",
            model=self.model_name,
            trigger=trigger,
            previous=old.versions if old else None,
            serving=new.versions,
        )

    def _mark_stale(self, error: str) -> None:
        status = self._status
        if not status.stale:
            status.stale_since = datetime.now(UTC)
        status.stale = True
        status.last_error = error
        metrics.MODEL_STALE.set(1)
