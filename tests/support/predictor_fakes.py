"""In-memory stand-ins for the model registry, for the predictor's unit tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from predictor.holder import LoadedVersion


@dataclass
class FakeScorer:
    """Scores every row with a constant (so tests can tell versions apart) and records calls."""

    probability: float
    calls: list[int] = field(default_factory=list)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        self.calls.append(len(features))
        return np.full(len(features), self.probability)


class RegistryDown(ConnectionError):
    pass


@dataclass
class FakeSource:
    """Aliases and versions in memory; ``down`` makes every call fail like an unreachable server."""

    model_name: str = "fraud_detector"
    aliases_: dict[str, str] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=lambda: {"1": 0.1, "2": 0.5, "3": 0.9})
    down: bool = False
    broken_versions: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)
    scorers: dict[str, FakeScorer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def aliases(self) -> dict[str, str]:
        if self.down:
            raise RegistryDown("connection refused")
        return dict(self.aliases_)

    def load(self, version: str) -> LoadedVersion:
        if self.down:
            raise RegistryDown("connection refused")
        if version in self.broken_versions:
            raise ValueError(f"version {version} cannot be loaded")
        self.loads.append(version)
        scorer = FakeScorer(self.probabilities[version])
        self.scorers[version] = scorer
        return LoadedVersion(
            scorer=scorer,
            version=version,
            run_id=f"run-{version}",
            threshold=0.2,
            loaded_at=datetime.now(UTC),
            load_seconds=0.01,
        )


@dataclass
class FakeLoop:
    group_id: str
    topics: list[str]
    options: dict[str, object]
    alive: bool = False


@dataclass
class FakeRuntime:
    """Records what the predictor declares on its runtime; starts nothing (no Kafka clients)."""

    settings: object
    loops: list[FakeLoop] = field(default_factory=list)
    checks: dict[str, object] = field(default_factory=dict)
    heartbeat_details: object = None
    started: list[object] = field(default_factory=list)
    stopped: list[object] = field(default_factory=list)
    lifespan: object = None

    def transactional_loop(self, *, topics: list[str], group_id: str, **options: object) -> FakeLoop:
        loop = FakeLoop(group_id, list(topics), options)
        self.loops.append(loop)
        return loop

    def consumer_loop(self, *, topics: list[str], group_id: str, **options: object) -> FakeLoop:
        return self.transactional_loop(topics=topics, group_id=group_id, **options)

    def on_start(self, hook: object) -> None:
        self.started.append(hook)

    def on_stop(self, hook: object) -> None:
        self.stopped.append(hook)

    def lag(self) -> int:
        return 0
