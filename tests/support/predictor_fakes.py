"""Stand-ins for the predictor's unit tests: model registry, runtime, and an outbox without Kafka."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlops_platform.bindings import Binding
from mlops_platform.kafka import EventProducer, Guarantee, Handler, Outbox
from mlops_platform.settings import ServiceSettings
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
    """A declared stream loop: its group, inputs, handler, guarantee and the other options."""

    group_id: str
    inputs: list[Binding]
    handler: Handler
    guarantee: Guarantee
    options: dict[str, object]
    alive: bool = False

    @property
    def topics(self) -> list[str]:
        return [binding.topic for binding in self.inputs]


@dataclass
class FakeRuntime:
    """Records what the predictor declares on its runtime; starts nothing (no Kafka clients).

    ``stream`` applies the runtime's defaults (group: the service's consumer group;
    exactly-once transactional id: ``<service>-<instance>``) so tests see what would run.
    """

    settings: ServiceSettings
    loops: list[FakeLoop] = field(default_factory=list)
    checks: dict[str, object] = field(default_factory=dict)
    heartbeat_details: object = None
    #: never used to produce here (nothing starts); the window reporter only keeps it
    producer: object = None
    started: list[object] = field(default_factory=list)
    stopped: list[object] = field(default_factory=list)
    lifespan: object = None

    def stream(
        self,
        *,
        inputs: Sequence[Binding],
        handler: Handler,
        guarantee: Guarantee = Guarantee.AT_LEAST_ONCE,
        group_id: str | None = None,
        transactional_id: str | None = None,
        **options: object,
    ) -> FakeLoop:
        if guarantee is Guarantee.EXACTLY_ONCE:
            options["transactional_id"] = (
                transactional_id or f"{self.settings.service_name}-{self.settings.instance_id}"
            )
        loop = FakeLoop(group_id or self.settings.consumer_group, list(inputs), handler, guarantee, options)
        self.loops.append(loop)
        return loop

    def on_start(self, hook: object) -> None:
        self.started.append(hook)

    def on_stop(self, hook: object) -> None:
        self.stopped.append(hook)

    def lag(self) -> int:
        return 0


@dataclass(frozen=True)
class Emitted:
    """An event a handler emitted, with the topic and key the producer resolved."""

    topic: str
    value: Mapping[str, Any]
    key: str | None


class _KeepValues:
    """A serde that keeps values as they are, so tests read what a handler emitted."""

    def encode(self, _topic: str, value: Mapping[str, Any], *, schema_topic: str | None = None) -> Any:
        return value


class _EncodingOnly:
    """The platform producer's encoding (binding -> topic and key) without a Kafka client."""

    encode = EventProducer.encode

    def __init__(self) -> None:
        self.serde = _KeepValues()


def fake_outbox() -> Outbox:
    """A real :class:`Outbox` whose producer only encodes (nothing reaches Kafka)."""
    return Outbox(_EncodingOnly())  # type: ignore[arg-type]


def emitted(outbox: Outbox) -> list[Emitted]:
    """Take what was emitted into ``outbox``, in order."""
    return [
        Emitted(record.topic, record.value, record.key.decode() if record.key else None)  # type: ignore[arg-type]
        for record in outbox.take()
    ]
