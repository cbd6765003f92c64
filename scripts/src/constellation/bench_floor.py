"""The benchmark's compute floor: the predictor's own work on the same events, in one process, no Kafka.

decode (Avro, ``prediction.request``) -> features -> predict -> ``prediction.completed``
values -> encode (Avro), through the predictor's real :class:`PredictionHandler` and the
platform's serde, in micro-batches like the stream loop's. What the pipeline reaches next
to this number is what Kafka, transactions and the process layout cost.

Alongside the floor it reports where the time per event goes (the profile the README's
breakdown comes from): decode, features, predict, encode are timed on their own; the
rest of the handler (A/B routing, risk levels, envelopes, payloads, metrics) is the
handler's time minus features, predict and encode. Each figure is the best of several
rounds, so a busy neighbour on a shared machine inflates it as little as possible.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from fraud_model.features import build_features
from mlops_platform.kafka import EventProducer, Outbox, Record
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

REQUEST = "prediction.request"


class _Capture:
    """An outbox stand-in that keeps the handler's values (to time their encoding separately)."""

    def __init__(self) -> None:
        self.values: list[tuple[Any, Mapping[str, Any]]] = []

    def emit(self, target: Any, value: Mapping[str, Any], *_args: Any, **_kw: Any) -> Mapping[str, Any]:
        self.values.append((target, value))
        return value


def compute_floor(
    settings: PlatformSettings,
    serde: AvroSerde,
    blobs: Sequence[bytes],
    model_name: str,
    *,
    batch_size: int = 500,
    rounds: int = 5,
) -> dict[str, Any]:
    """Events/s of decode -> features -> predict -> encode in this process, and µs per event per stage."""
    from predictor.ab import ABRouter
    from predictor.config import Settings
    from predictor.holder import MlflowModelSource, ModelHolder
    from predictor.risk import RiskThresholds
    from predictor.scoring import PredictionHandler, ScoringEngine

    predictor = Settings(model_name=model_name)
    holder = ModelHolder(
        MlflowModelSource(settings.mlflow_tracking_uri, model_name, predictor.model_nthread),
        predictor.champion_alias,
        predictor.challenger_alias,
    )
    holder.refresh("bench")
    engine = ScoringEngine(
        holder,
        ABRouter(predictor.challenger_share),
        RiskThresholds(
            predictor.risk_verify_threshold, predictor.risk_hold_threshold, predictor.risk_block_threshold
        ),
    )
    handler = PredictionHandler(engine, predictor.completed)
    producer = EventProducer(settings, "bench-floor", serde)
    batches = [list(blobs[i : i + batch_size]) for i in range(0, len(blobs), batch_size)]

    def decode(batch: list[bytes]) -> list[Record]:
        return [
            Record(REQUEST, 0, offset, None, serde.decode(REQUEST, data, schema_topic=REQUEST), 0)
            for offset, data in enumerate(batch)
        ]

    def timed_round() -> dict[str, float]:
        spent = {"floor": 0.0, "decode": 0.0, "handler": 0.0, "features": 0.0, "predict": 0.0, "encode": 0.0}
        serving = engine.current()
        for batch in batches:
            started = time.perf_counter()
            records = decode(batch)
            decoded = time.perf_counter()
            handler(records, Outbox(producer))  # the floor itself: handler + encode, as the loop runs it
            spent["floor"] += time.perf_counter() - started
            spent["decode"] += decoded - started
            # The breakdown, timed apart from the floor.
            capture = _Capture()
            started = time.perf_counter()
            handler(records, cast(Outbox, capture))
            spent["handler"] += time.perf_counter() - started
            values = [r.value for r in records]
            started = time.perf_counter()
            features = build_features(values)
            spent["features"] += time.perf_counter() - started
            started = time.perf_counter()
            serving.champion.model.scorer.predict_proba(features)
            spent["predict"] += time.perf_counter() - started
            started = time.perf_counter()
            for target, value in capture.values:
                producer.encode(target, value)
            spent["encode"] += time.perf_counter() - started
        return spent

    timed_round()  # warm-up: schema lookups, model caches
    best = {key: min(values) for key, values in _transpose([timed_round() for _ in range(rounds)]).items()}
    events = len(blobs)
    per_event = {key: value / events * 1e6 for key, value in best.items()}
    stages = {
        "decode": per_event["decode"],
        "features": per_event["features"],
        "predict": per_event["predict"],
        "routing, risk levels, envelopes, payloads, metrics": max(
            per_event["handler"] - per_event["features"] - per_event["predict"], 0.0
        ),
        "encode": per_event["encode"],
    }
    return {
        "events": events,
        "batch_size": batch_size,
        "events_per_s": round(events / best["floor"], 1),
        "us_per_event": round(per_event["floor"], 2),
        "stages_us_per_event": {key: round(value, 2) for key, value in stages.items()},
        "model": {"name": model_name, "versions": (engine.current().versions)},
    }


def _transpose(rounds: list[dict[str, float]]) -> dict[str, list[float]]:
    return {key: [r[key] for r in rounds] for key in rounds[0]}
