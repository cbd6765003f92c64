"""Settings of the predictor, read from ``PREDICTOR_*`` environment variables.

Connection settings (``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL``,
``MLFLOW_TRACKING_URI`` ...) are the platform's un-prefixed ones; see
:class:`mlops_platform.settings.PlatformSettings`.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic, dlq_topic
from mlops_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    """What the predictor reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="PREDICTOR_", extra="ignore", populate_by_name=True, protected_namespaces=()
    )

    service_name: str = "predictor"
    http_port: int = 8002

    # -- models
    model_name: str = Field("fraud_detector", description="Registered model name in MLflow.")
    champion_alias: str = Field("champion", description="Alias served to most traffic.")
    challenger_alias: str = Field("challenger", description="Alias of the A/B candidate, when it exists.")
    challenger_share: float = Field(
        0.10, ge=0.0, le=1.0, description="Share of transactions (by id hash) routed to the challenger."
    )
    model_refresh_interval_s: float = Field(
        30.0, gt=0, description="Period of the alias check that backs up the model.deployed trigger."
    )
    model_retry_interval_s: float = Field(
        5.0, gt=0, description="Alias check period while the last check failed or no model is loaded."
    )
    model_nthread: int | None = Field(
        1,
        ge=1,
        description=(
            "XGBoost threads per predict call. One thread is fastest for micro-batches of a few hundred "
            "rows (no OpenMP fan-out) and leaves the other cores to Kafka and Avro."
        ),
    )
    mlflow_request_timeout_s: int = Field(
        10, ge=1, description="HTTP timeout of MLflow calls (MLflow's default is 120 s)."
    )
    mlflow_max_retries: int = Field(
        1, ge=0, description="Retries of a failed MLflow call (MLflow's default retries for minutes)."
    )

    # -- risk levels: approve < verify <= p < hold <= p < block
    risk_verify_threshold: float = Field(0.18, ge=0.0, le=1.0, description="p >= this: verify.")
    risk_hold_threshold: float = Field(0.40, ge=0.0, le=1.0, description="p >= this: hold.")
    risk_block_threshold: float = Field(0.65, ge=0.0, le=1.0, description="p >= this: block.")

    # -- stream
    request_topic: str = Field(Topic.PREDICTION_REQUEST.value, description="Transactions to score.")
    completed_topic: str = Field(Topic.PREDICTION_COMPLETED.value, description="Where scores go.")
    model_events_topic: str = Field(Topic.MODEL_DEPLOYED.value, description="Alias moves to follow.")
    dead_letter_topic: str = Field(dlq_topic("predictor"), description="Requests that cannot be scored.")
    processed_topic: str = Field(Topic.DATA_PROCESSED.value, description="Per-window processing summaries.")
    processed_window_s: float = Field(
        60.0,
        ge=0,
        description="Length of the data.processed windows (aligned to UTC multiples of it); 0: off.",
    )
    model_events_group_id: str | None = Field(
        None,
        description=(
            "Consumer group of the model.deployed listener; must differ per instance so that every "
            "instance sees every deployment. Default: predictor-model-events-<instance_id>."
        ),
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Most requests scored in one transaction.")
    transaction_max_events: int = Field(
        2_000,
        ge=1,
        description=(
            "While a backlog drains, one transaction spans several polls up to this many requests: "
            "a commit costs several broker round trips, so fewer, larger transactions score more per "
            "second. A poll that comes back short (the stream caught up) commits at once."
        ),
    )
    transaction_max_ms: float = Field(
        20.0, ge=0, description="Oldest a transaction spanning several polls may grow before it commits."
    )
    poll_timeout_s: float = Field(
        0.05,
        gt=0,
        le=1.0,
        description=(
            "How long an idle poll blocks. A batch is what has arrived by the time the previous one "
            "is committed (up to batch_size), so this adds no latency to a flowing stream."
        ),
    )
    producer_retry_backoff_ms: int = Field(
        1,
        ge=1,
        description=(
            "librdkafka retry.backoff.ms of the transactional producer. Right after a commit the "
            "coordinator still completes it and the next transaction's first request is answered "
            "CONCURRENT_TRANSACTIONS; with the default 100 ms backoff every transaction would take "
            "over 100 ms. The coordinator usually completes within a few milliseconds on a local broker "
            "(back-to-back transactions: 4.1 ms a cycle at 1 ms here, 6.9 ms at 5 ms). Retries still back "
            "off exponentially (retry.backoff.max.ms)."
        ),
    )
    producer_retry_backoff_max_ms: int = Field(
        5,
        ge=1,
        description=(
            "librdkafka retry.backoff.max.ms of the transactional producer: CONCURRENT_TRANSACTIONS "
            "retries back off exponentially up to this (default 1 s, which stalls a stream for that long "
            "whenever the coordinator is slow to complete the previous commit)."
        ),
    )
    transactional_producers: int = Field(
        2,
        ge=1,
        le=8,
        description=(
            "Transactional producers taking turns, transaction by transaction (ids <service>-<instance>, "
            "<service>-<instance>-1 ...). The coordinator completes a commit after answering it and refuses "
            "the same id's next transaction until then; with two, a transaction begins on a producer whose "
            "last commit completed a transaction ago (make bench's transaction floor on the development "
            "machine: 2.9 ms a cycle at the median with two, 4.6 ms with one)."
        ),
    )
    retry_backoff_s: float = Field(2.0, gt=0, description="Pause before retrying a batch (e.g. no model).")
    session_timeout_ms: int = Field(
        10_000,
        ge=6_000,
        description=(
            "Consumer group session timeout: how soon partitions of a crashed instance move to the others."
        ),
    )

    @model_validator(mode="after")
    def _thresholds_ascend(self) -> Self:
        if not self.risk_verify_threshold <= self.risk_hold_threshold <= self.risk_block_threshold:
            raise ValueError(
                "risk thresholds must ascend: verify <= hold <= block, got "
                f"{self.risk_verify_threshold}, {self.risk_hold_threshold}, {self.risk_block_threshold}"
            )
        return self

    @property
    def events_group_id(self) -> str:
        return self.model_events_group_id or f"{self.service_name}-model-events-{self.instance_id}"

    # -- bindings: a private topic (tests, benchmarks) carries the catalogue contract

    @property
    def requests(self) -> Binding:
        """Transactions to score (input of the scoring loop)."""
        return Binding.to(Topic.PREDICTION_REQUEST, self.request_topic, key="transaction_id")

    @property
    def completed(self) -> Binding:
        """Scores, keyed by transaction id like the requests they answer."""
        return Binding.to(Topic.PREDICTION_COMPLETED, self.completed_topic, key="transaction_id")

    @property
    def model_events(self) -> Binding:
        """Alias moves to follow (input of the deployment listener)."""
        return Binding.to(Topic.MODEL_DEPLOYED, self.model_events_topic)

    @property
    def processed(self) -> Binding:
        """What each instance scored per window, keyed by instance."""
        return Binding.to(Topic.DATA_PROCESSED, self.processed_topic, key="instance_id")

    def bindings(self) -> ServiceBindings:
        return ServiceBindings.of(
            consumes=[self.requests, self.model_events],
            produces=[self.completed, self.processed, self.heartbeats, self.system_metrics],
        )
