"""The predictor process: model holder, scoring loop, deployment listener and refresher, wired once.

Threads:

* **scoring loop** — an exactly-once :class:`~mlops_platform.kafka.StreamLoop` on
  ``prediction.request``; a Kafka transaction holds the ``prediction.completed`` outputs,
  dead letters and the consumed offsets of one poll, or of several while a backlog drains
  (up to ``transaction_max_events`` / ``transaction_max_ms``);
* **deployment listener** — an at-least-once :class:`~mlops_platform.kafka.StreamLoop` on
  ``model.deployed`` in a consumer group of its own (per process), so every instance sees
  every deployment; it triggers an alias check;
* **refresher** — the periodic alias check backing up the listener (missed events, a
  registry that was down); it checks more often while the last check failed;
* **window reporter** — publishes what was scored in each window (``data.processed``,
  ``processed_window_s``) with the shared producer, see :mod:`predictor.processed`.

Startup order: the listener's start offsets are pinned to the end of ``model.deployed``
first, then the models are loaded, then the loops start: a deployment announced after
startup is always seen, and one announced before is already in the loaded aliases.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from mlops_platform.health import CheckResult
from mlops_platform.kafka import Guarantee, Outbox, Record
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.service import ServiceRuntime
from predictor.ab import ABRouter
from predictor.config import Settings
from predictor.holder import MlflowModelSource, ModelHolder, ModelSource
from predictor.processed import ProcessedReporter
from predictor.risk import RiskThresholds
from predictor.scoring import PredictionHandler, ScoringEngine

log = get_logger(__name__)

_REFRESHER_TICK_S = 0.5


def configure_mlflow_client(settings: Settings) -> None:
    """Bound MLflow's HTTP behaviour so an unreachable registry fails fast.

    MLflow's defaults (120 s timeout, retries with back-off for minutes) would freeze
    alias checks; explicit environment values set by the operator win.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_request_timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # Progress bars on stderr would interleave with the JSON log lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class PredictorService:
    """Everything the predictor runs, around one :class:`ServiceRuntime`."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: ModelSource | None = None,
        runtime: ServiceRuntime | None = None,
    ) -> None:
        self.settings = settings
        if source is None:
            configure_mlflow_client(settings)
            source = MlflowModelSource(
                settings.mlflow_tracking_uri, settings.model_name, settings.model_nthread
            )
        self.holder = ModelHolder(source, settings.champion_alias, settings.challenger_alias)
        self.router = ABRouter(settings.challenger_share)
        self.thresholds = RiskThresholds(
            settings.risk_verify_threshold, settings.risk_hold_threshold, settings.risk_block_threshold
        )
        self.engine = ScoringEngine(self.holder, self.router, self.thresholds)
        self.runtime = runtime or ServiceRuntime(settings)
        self.processed = ProcessedReporter(settings, self.runtime.producer)
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        # A fresh group per process: it never has members or offsets from an earlier run.
        self.events_group_id = settings.model_events_group_id or (
            f"{settings.events_group_id}-{uuid.uuid4().hex[:8]}"
        )
        self._wire()

    # ------------------------------------------------------------------ wiring

    def _wire(self) -> None:
        settings, runtime = self.settings, self.runtime
        group_overrides = {"session.timeout.ms": settings.session_timeout_ms}
        # Group settings.consumer_group; transactional.id <service>-<instance>, stable per
        # instance so a restarted instance fences its predecessor's open transaction.
        self.scoring_loop = runtime.stream(
            inputs=[settings.requests],
            handler=PredictionHandler(
                self.engine, settings.completed, self.processed.window if self.processed.enabled else None
            ),
            guarantee=Guarantee.EXACTLY_ONCE,
            batch_size=settings.batch_size,
            commit_max_records=settings.transaction_max_events,
            commit_interval_s=settings.transaction_max_ms / 1000.0,
            poll_timeout_s=settings.poll_timeout_s,
            retry_backoff_s=settings.retry_backoff_s,
            dead_letter_topic=settings.dead_letter_topic,
            transactional_producers=settings.transactional_producers,
            consumer_overrides=group_overrides,
            # The whole batch is produced before the commit flushes it: lingering only delays it.
            producer_overrides={
                "retry.backoff.ms": settings.producer_retry_backoff_ms,
                "retry.backoff.max.ms": settings.producer_retry_backoff_max_ms,
                "linger.ms": 0,
            },
        )
        self.events_loop = runtime.stream(
            inputs=[settings.model_events],
            handler=self.on_model_events,
            guarantee=Guarantee.AT_LEAST_ONCE,
            group_id=self.events_group_id,
            batch_size=50,
            retry_backoff_s=settings.retry_backoff_s,
            dead_letter_topic=settings.dead_letter_topic,
            consumer_overrides={**group_overrides, "auto.offset.reset": "latest"},
        )
        runtime.checks["model"] = self.model_check
        runtime.heartbeat_details = self.heartbeat_details
        runtime.on_start(self._pin_events_start)
        runtime.on_start(self._initial_load)
        runtime.on_start(self._start_refresher)
        runtime.on_start(self.processed.start)
        runtime.on_stop(self._stop_refresher)
        runtime.on_stop(self.processed.stop)

    # ---------------------------------------------------------------- handlers

    def on_model_events(self, records: list[Record], _outbox: Outbox) -> None:
        """``model.deployed`` for our model: check the aliases now (nothing is produced).

        Never raises: if the registry is down the holder turns stale and the refresher
        retries at the short interval until the check succeeds.
        """
        relevant = [r for r in records if r.value.get("model_name") == self.settings.model_name]
        if not relevant:
            return
        last = relevant[-1]
        with bind_event(last.envelope):
            log.info(
                "model_deployed_received",
                alias=last.value.get("alias"),
                version=last.value.get("version"),
                action=last.value.get("action"),
                events=len(relevant),
            )
            self.holder.refresh("model.deployed")

    def model_check(self) -> CheckResult:
        """Ready while a champion is loaded; a stale model (registry unreachable) is still served."""
        serving, status = self.holder.serving, self.holder.status
        if serving is None:
            return CheckResult(False, f"no model of {self.settings.model_name!r} loaded: {status.last_error}")
        parts = [f"{serving.model_name} champion v{serving.champion.version}"]
        if serving.challenger is not None:
            parts.append(f"challenger v{serving.challenger.version}")
        detail = ", ".join(parts)
        if status.stale:
            since = status.stale_since.isoformat() if status.stale_since else "?"
            detail += f"; stale since {since}: serving the last good model ({status.last_error})"
        return CheckResult(True, detail)

    def heartbeat_details(self) -> dict[str, str]:
        serving = self.holder.serving
        details = {
            "consumer_lag": str(self.runtime.lag()),
            "model_name": self.settings.model_name,
            "model_stale": str(self.holder.status.stale).lower(),
        }
        if serving is not None:
            details.update({f"{arm}_version": version for arm, version in serving.versions.items()})
        return details

    # ------------------------------------------------------------ model events

    def _initial_load(self) -> None:
        # Never raises: without a model the service starts unready and the refresher retries.
        self.holder.refresh("startup")

    def _pin_events_start(self) -> None:
        """Commit the current end of ``model.deployed`` as the listener group's start."""
        topic = self.settings.model_events.topic
        consumer = Consumer(
            self.settings.consumer_config(self.events_group_id, client_id=f"{self.settings.service_name}-pin")
        )
        try:
            metadata = consumer.list_topics(topic, timeout=self.settings.request_timeout_s * 2)
            partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
            offsets = []
            for partition in partitions:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.settings.request_timeout_s * 2
                )
                offsets.append(TopicPartition(topic, partition, high))
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Falls back to auto.offset.reset=latest; the periodic check covers any gap.
            log.warning("model_events_start_not_pinned", topic=topic, error=str(exc))
        finally:
            consumer.close()

    def model_events_listener(self) -> dict[str, Any]:
        return {
            "topic": self.settings.model_events.topic,
            "group_id": self.events_group_id,
            "running": self.events_loop.alive,
        }

    # --------------------------------------------------------------- refresher

    def _start_refresher(self) -> None:
        self._refresher = threading.Thread(target=self._refresh_forever, name="model-refresher", daemon=True)
        self._refresher.start()

    def _stop_refresher(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)

    def _refresh_forever(self) -> None:
        # Re-evaluated every tick: turning stale (e.g. after a failed model.deployed check)
        # switches to the short retry interval at once, not after a long wait.
        while not self._stop.wait(_REFRESHER_TICK_S):
            last = self.holder.status.last_check_at
            elapsed = (datetime.now(UTC) - last).total_seconds() if last else float("inf")
            if elapsed >= self._next_check_in():
                self.holder.refresh("periodic")

    def _next_check_in(self) -> float:
        if self.holder.serving is None or self.holder.status.stale:
            return min(self.settings.model_retry_interval_s, self.settings.model_refresh_interval_s)
        return self.settings.model_refresh_interval_s
