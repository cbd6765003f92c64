"""The ingest process: runtime, front-door publisher, dependency gate and ingestor, wired once.

Ingest consumes nothing: its runtime only provides the serde, the idempotent producer,
the readiness checks and the heartbeat. Requests are published by the platform's
front-door publishers:

* :class:`~mlops_platform.kafka.TransactionalPublisher` (default): one Kafka transaction
  per request (group commit across concurrent requests) on a pool of transactional
  producers with ids ``<INGEST_TRANSACTIONAL_ID_PREFIX or ingest-<instance>>-<n>``;
* :class:`~mlops_platform.kafka.AcknowledgedPublisher` (``INGEST_TRANSACTIONAL=false``):
  the runtime's idempotent ``acks=all`` producer, awaiting every acknowledgement.

The best-effort ``data.quality.issues`` of refused requests go through the runtime's
producer either way; the ones lost are counted by reason in
``ingest_quality_events_dropped_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from ingest.config import Settings
from ingest.ingestion import DependencyGate, Ingestor
from ingest.limits import IdempotencyStore, RateLimiter
from ingest.metrics import quality_event_dropped
from mlops_platform.contracts import utc_now
from mlops_platform.health import Check
from mlops_platform.http import Lifespan
from mlops_platform.kafka import (
    AcknowledgedPublisher,
    EventProducer,
    FrontDoorPublisher,
    TransactionalPublisher,
)
from mlops_platform.serde import AvroSerde
from mlops_platform.service import ServiceRuntime


def build_publisher(settings: Settings, serde: AvroSerde, producer: EventProducer) -> FrontDoorPublisher:
    """The front-door publisher ``settings`` ask for; ``producer`` carries the best-effort events."""
    if settings.transactional:
        return TransactionalPublisher(
            settings,
            settings.service_name,
            serde,
            transactional_ids=settings.transactional_ids,
            side_producer=producer,
            timeout_s=settings.publish_timeout_s,
            on_emit_failure=quality_event_dropped,
        )
    return AcknowledgedPublisher(producer, settings.publish_timeout_s, on_emit_failure=quality_event_dropped)


class IngestService:
    """Everything ingest runs, around one :class:`ServiceRuntime`.

    Tests pass a ``publisher`` (and the ``checks`` its gate consults) instead: then no
    runtime, and so no Kafka client, is built, and the app has no lifespan.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        publisher: FrontDoorPublisher | None = None,
        checks: Mapping[str, Check] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.runtime: ServiceRuntime | None = None
        if publisher is None:
            self.runtime = ServiceRuntime(settings)
            publisher = build_publisher(settings, self.runtime.serde, self.runtime.producer)
            # Runs after the heartbeat stopped and before the runtime closes its producer.
            self.runtime.on_stop(publisher.close)
            checks = self.runtime.checks
        self.publisher = publisher
        # The readiness checks, cached: refusing up front costs nothing per request.
        self.ingestor = Ingestor(settings, publisher, DependencyGate(checks or {}), clock)
        self.quota = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.idempotency = IdempotencyStore(settings.idempotency_window_s, settings.idempotency_max_keys)

    @property
    def lifespan(self) -> Lifespan | None:
        """The runtime's lifespan (None without a runtime)."""
        return self.runtime.lifespan if self.runtime is not None else None
