"""Settings of the ingest service (environment variables prefixed ``INGEST_``).

Connection settings (``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL``, ...) are the
platform's un-prefixed ones; see :class:`mlops_platform.settings.PlatformSettings`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic
from mlops_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    """What the ingest service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", populate_by_name=True)

    service_name: str = "ingest"
    http_port: int = 8001

    max_batch_size: int = Field(1000, ge=1, description="Most transactions one batch request may hold.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body (413 above it, before it is read)."
    )
    rate_limit_per_s: float = Field(
        10_000.0, gt=0, description="Records per second each API key may send (token bucket refill rate)."
    )
    rate_limit_burst: float = Field(
        20_000.0, ge=1, description="Records an API key may send at once (token bucket capacity)."
    )
    idempotency_window_s: float = Field(
        3600.0, gt=0, description="How long an Idempotency-Key answers its first request again."
    )
    idempotency_max_keys: int = Field(
        100_000, ge=1, description="Most idempotency keys remembered (the oldest are forgotten first)."
    )
    transactional: bool = Field(
        True,
        description=(
            "Publish each request in one Kafka transaction (a failed request leaves nothing visible to "
            "read_committed consumers). False: idempotent acks=all producer without transactions."
        ),
    )
    transactional_producers: int = Field(
        4, ge=1, le=64, description="Transactional producers in the pool (concurrent transactions)."
    )
    transactional_id_prefix: str | None = Field(
        None,
        description=(
            "Prefix of the producers' transactional.id (default ingest-<instance_id>). Keep it stable per "
            "instance so a restarted instance fences its predecessor's open transactions."
        ),
    )
    publish_timeout_s: float = Field(
        10.0, gt=0, description="How long a request waits for Kafka's acknowledgement before a 503."
    )
    max_quality_events: int = Field(
        1000, ge=0, description="Most data.quality.issues events one request may produce."
    )
    amount_to_credit_limit_warning: float = Field(
        1.0, gt=0, description="Warn (accept) when amount exceeds this multiple of credit_limit."
    )
    amount_to_average_warning: float = Field(
        50.0, gt=0, description="Warn (accept) when amount exceeds this multiple of amount_avg_30d."
    )
    max_future_event_time_s: float = Field(
        300.0, ge=0, description="Warn (accept) when a client event_time is further ahead of our clock."
    )

    def transactional_id(self, index: int) -> str:
        prefix = self.transactional_id_prefix or f"{self.service_name}-{self.instance_id}"
        return f"{prefix}-{index}"

    @property
    def transactional_ids(self) -> list[str]:
        """One per transactional producer of the pool."""
        return [self.transactional_id(index) for index in range(self.transactional_producers)]

    # -- bindings: where each kind of record goes and what keys it (ingest consumes nothing)

    @property
    def requests(self) -> Binding:
        """Transactions to score, keyed by id so every event of a transaction shares a partition."""
        return Binding.to(Topic.PREDICTION_REQUEST, key="transaction_id")

    @property
    def labels(self) -> Binding:
        """Ground truth of scored transactions."""
        return Binding.to(Topic.PREDICTION_FEEDBACK, key="transaction_id")

    @property
    def interactions(self) -> Binding:
        return Binding.to(Topic.BUSINESS_USER_INTERACTION, key="user_id")

    @property
    def clicks(self) -> Binding:
        return Binding.to(Topic.BUSINESS_RECOMMENDATION_CLICKED, key="user_id")

    @property
    def feedback(self) -> Binding:
        return Binding.to(Topic.BUSINESS_FEEDBACK_RECEIVED, key="user_id")

    @property
    def ingested(self) -> Binding:
        """One summary per accepted request, keyed by record type."""
        return Binding.to(Topic.DATA_INGESTED, key="record_type")

    @property
    def quality_issues(self) -> Binding:
        """Warnings and refusals; keyed explicitly (the record's key, else the record type)."""
        return Binding.to(Topic.DATA_QUALITY_ISSUES)

    def bindings(self) -> ServiceBindings:
        return ServiceBindings.of(
            produces=[
                self.requests,
                self.labels,
                self.interactions,
                self.clicks,
                self.feedback,
                self.ingested,
                self.quality_issues,
                self.heartbeats,
                self.system_metrics,
            ]
        )
