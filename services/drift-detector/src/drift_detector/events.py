"""What the evaluators share: event time, the events they make, and small formatting helpers.

Evaluators never touch Kafka: they put events into an :class:`Emitter`, and the
dispatcher (:mod:`drift_detector.detector`) moves them into the stream loop's outbox
once the record that caused them has been handled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from drift_detector import metrics as m
from mlops_platform.bindings import Binding
from mlops_platform.contracts import make_event
from mlops_platform.kafka import Output

SOURCE = "drift-detector"
PREDICTION_COLUMN = "fraud_probability"
CHAMPION_ARM = "champion"
CHALLENGER_ARM = "challenger"


def event_ms(envelope: Mapping[str, Any] | None, fallback: int = 0) -> int:
    """Event time of an envelope in epoch milliseconds."""
    value = (envelope or {}).get("event_time")
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return fallback


def as_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 (None stays None)."""
    return None if ms is None else as_datetime(ms).isoformat()


def finite_map(values: Mapping[str, float]) -> dict[str, float]:
    """The finite numeric entries of ``values`` (Avro maps and JSON carry no NaN)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


class InvalidPrediction(ValueError):
    """A ``prediction.completed`` no model could have made; the stream loop dead-letters it."""


def check_prediction(value: Mapping[str, Any]) -> None:
    """Refuse a prediction whose ``fraud_probability`` is not a finite number in [0, 1].

    The Avro contract guarantees a double, not a probability: one such value would skew the
    prediction PSI and every quality metric of its window.
    """
    probability = value.get(PREDICTION_COLUMN)
    if (
        not isinstance(probability, int | float)
        or not math.isfinite(probability)
        or not 0.0 <= probability <= 1.0
    ):
        raise InvalidPrediction(f"{PREDICTION_COLUMN} {probability!r} is not a probability in [0, 1]")


class Emitter:
    """Events made while one record (or one run of predictions) is handled.

    :meth:`emit` builds the envelope and counts the event; the dispatcher
    :meth:`take`\\ s the events once the record is done, so the events of a record
    that fails half-way never leave the detector.
    """

    def __init__(self) -> None:
        self._outputs: list[Output] = []

    def emit(
        self,
        binding: Binding,
        payload: dict[str, Any],
        cause: Mapping[str, Any] | None,
        *,
        severity: str,
        reason: str,
    ) -> dict[str, Any]:
        """Make an event of ``payload`` caused by ``cause`` (an envelope); returns the event."""
        event = make_event(SOURCE, payload, cause=cause or None)
        self._outputs.append(Output(binding, event))
        m.EVENTS.labels(binding.topic, severity, reason).inc()
        return event

    def take(self) -> list[Output]:
        """The events made since the last call (the emitter is empty afterwards)."""
        outputs, self._outputs = self._outputs, []
        return outputs
