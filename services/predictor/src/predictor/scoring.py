"""Micro-batch scoring: features once per batch, one predict call per A/B arm.

:class:`ScoringEngine` is shared by the stream handler (:class:`PredictionHandler`)
and ``POST /score``, so both score exactly the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fraud_model.features import FEATURE_NAMES, build_features
from mlops_platform.bindings import Binding
from mlops_platform.contracts import make_event
from mlops_platform.kafka import Outbox, Record, RetryableError
from predictor import metrics
from predictor.ab import ABRouter
from predictor.holder import ModelHolder, ServingModel, ServingSet
from predictor.risk import RiskThresholds

SOURCE = "predictor"


class NoModelLoaded(RetryableError):
    """Nothing can be loaded yet: the batch is retried later, never dead-lettered."""


class InvalidRequest(ValueError):
    """A request that can never be scored (dead-lettered by the loop)."""


@dataclass(frozen=True)
class Prediction:
    """The score of one transaction and how it was obtained."""

    transaction_id: str
    account_id: str
    fraud_probability: float
    risk_level: str
    arm: str
    model: ServingModel
    features: dict[str, float]

    def payload(self, model_name: str) -> dict[str, Any]:
        """The ``prediction.completed`` fields this prediction determines."""
        return {
            "transaction_id": self.transaction_id,
            "account_id": self.account_id,
            "fraud_probability": self.fraud_probability,
            "risk_level": self.risk_level,
            "model_name": model_name,
            "model_version": self.model.version,
            "model_alias": self.model.alias,
            "ab_arm": self.arm,
            "features": self.features,
        }


def validate(transaction: Mapping[str, Any]) -> None:
    """Reject what no model can score meaningfully (the Avro contract guarantees the types)."""
    transaction_id = transaction.get("transaction_id")
    if not isinstance(transaction_id, str) or not transaction_id.strip():
        raise InvalidRequest("transaction_id is empty")


class ScoringEngine:
    """Scores batches of transaction records with the holder's current models."""

    def __init__(self, holder: ModelHolder, router: ABRouter, thresholds: RiskThresholds) -> None:
        self.holder = holder
        self.router = router
        self.thresholds = thresholds

    def current(self) -> ServingSet:
        serving = self.holder.serving
        if serving is None:
            error = self.holder.status.last_error or "not loaded yet"
            raise NoModelLoaded(f"no model of {self.holder.model_name!r} is loaded: {error}")
        return serving

    def score(self, transactions: Sequence[Mapping[str, Any]], endpoint: str) -> list[Prediction]:
        """Score a batch with one consistent set of models (the one current at the call)."""
        serving = self.current()
        count = len(transactions)
        if count == 0:
            return []
        metrics.ACTIVE_REQUESTS.inc(count)
        started = time.perf_counter()
        try:
            ids = [str(t["transaction_id"]) for t in transactions]
            arms = self.router.arms(ids, challenger_available=serving.challenger is not None)
            features = build_features(transactions)
            probabilities = np.empty(count, dtype=np.float64)
            arm_array = np.asarray(arms)
            for arm in dict.fromkeys(arms):
                model = serving.for_arm(arm)
                rows = np.flatnonzero(arm_array == arm)
                probabilities[rows] = model.model.scorer.predict_proba(features[rows])
            models: list[ServingModel] = [serving.for_arm(arm) for arm in arms]
            levels = self.thresholds.levels(probabilities)
            feature_rows = features.astype(np.float64).tolist()
        finally:
            metrics.ACTIVE_REQUESTS.dec(count)
        metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(count)
        predictions = [
            Prediction(
                transaction_id=ids[i],
                account_id=str(transactions[i].get("account_id") or ""),
                fraud_probability=float(probabilities[i]),
                risk_level=levels[i],
                arm=arms[i],
                model=models[i],
                features=dict(zip(FEATURE_NAMES, feature_rows[i], strict=True)),
            )
            for i in range(count)
        ]
        self._record(predictions, endpoint)
        return predictions

    @staticmethod
    def _record(predictions: Sequence[Prediction], endpoint: str) -> None:
        # Aggregate first: one labelled increment per combination instead of one per record.
        for version, n in Counter(p.model.version for p in predictions).items():
            metrics.REQUESTS.labels(endpoint, "ok", version).inc(n)
        for (level, version), n in Counter((p.risk_level, p.model.version) for p in predictions).items():
            metrics.PREDICTIONS.labels(level, version).inc(n)
        for arm, n in Counter(p.arm for p in predictions).items():
            metrics.AB_ASSIGNMENTS.labels(arm).inc(n)
        for p in predictions:
            metrics.FRAUD_PROBABILITY.observe(p.fraud_probability)


def event_time_ms(envelope: Mapping[str, Any]) -> float | None:
    """The envelope's event_time in epoch milliseconds (decoded Avro gives a datetime)."""
    value = envelope.get("event_time")
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp() * 1000.0
    if isinstance(value, int | float):
        return float(value)
    return None


class PredictionHandler:
    """The exactly-once stream handler: ``prediction.request`` records -> ``prediction.completed`` events.

    Emits one event per request into the loop's outbox; the loop commits them in the
    transaction that also commits the consumed offsets.
    """

    def __init__(self, engine: ScoringEngine, completed: Binding) -> None:
        self.engine = engine
        self.completed = completed

    def __call__(self, records: list[Record], outbox: Outbox) -> None:
        try:
            for record in records:
                validate(record.value)
        except InvalidRequest:
            # The loop replays a failed batch record by record; count each bad one once, there.
            if len(records) == 1:
                metrics.REQUESTS.labels(metrics.STREAM_ENDPOINT, "invalid", "").inc()
            raise
        predictions = self.engine.score([r.value for r in records], metrics.STREAM_ENDPOINT)
        model_name = self.engine.holder.model_name
        completed = self.completed
        now_ms = time.time() * 1000.0
        for record, prediction in zip(records, predictions, strict=True):
            envelope = record.envelope
            sent_ms = event_time_ms(envelope)
            latency_ms = max(now_ms - sent_ms, 0.0) if sent_ms is not None else 0.0
            metrics.LATENCY.labels(metrics.STREAM_ENDPOINT).observe(latency_ms / 1000.0)
            payload = prediction.payload(model_name)
            payload["request_event_id"] = str(envelope.get("event_id") or "")
            payload["latency_ms"] = latency_ms
            # Keyed by the binding's key field (transaction_id), like the request.
            outbox.emit(completed, make_event(SOURCE, payload, cause=envelope or None))
