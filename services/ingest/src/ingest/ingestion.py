"""What ingest does with a valid request, independent of HTTP and of Kafka clients.

:class:`Ingestor` turns validated records into events (``make_event("ingest", ...)``) on
the service's bindings, adds the soft data-quality warnings and the ``data.ingested``
summary, checks that Kafka is up, and hands everything to a front-door
publisher in one go. Refused requests go through :meth:`Ingestor.reject`, which emits
their ``data.quality.issues`` (best effort).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from confluent_kafka import KafkaException

from ingest.config import Settings
from ingest.metrics import (
    BATCH_RECORDS,
    PUBLISH_SECONDS,
    QUALITY_EVENTS_DROPPED,
    QUALITY_ISSUES,
    RECORDS_PUBLISHED,
    RECORDS_REJECTED,
)
from ingest.models import IngestAccepted, QualityWarning
from ingest.quality import Issue
from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic, make_event, utc_now
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.health import Check, CheckResult
from mlops_platform.kafka import FrontDoorPublisher, Output
from mlops_platform.logs import get_logger

log = get_logger(__name__)

SOURCE: Final = "ingest"


@dataclass(frozen=True)
class RecordKind:
    """A kind of record the API accepts and the contract of its topic (the binding says the key)."""

    name: str
    contract: Topic
    #: Field whose value is the record's business id in quality events (None: no such id).
    id_field: str | None = None


TRANSACTION: Final = RecordKind("transaction", Topic.PREDICTION_REQUEST, "transaction_id")
INTERACTION: Final = RecordKind("interaction", Topic.BUSINESS_USER_INTERACTION)
CLICK: Final = RecordKind("click", Topic.BUSINESS_RECOMMENDATION_CLICKED)
LABEL: Final = RecordKind("label", Topic.PREDICTION_FEEDBACK, "transaction_id")
FEEDBACK: Final = RecordKind("feedback", Topic.BUSINESS_FEEDBACK_RECEIVED)


@dataclass
class Prepared:
    """A valid record ready to become an event."""

    payload: dict[str, Any]
    event_time: datetime | None = None
    warnings: list[Issue] = field(default_factory=list)


class ServiceUnavailable(Exception):
    """Kafka or the registry cannot take the request now (answered 503 with ``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DependencyGate:
    """Refuses work up front when Kafka is known to be down.

    Uses the readiness checks (cached for a moment), so under load this costs one
    metadata request every couple of seconds, not one per request. The schema registry is
    not a gate: the serde keeps the schemas it resolved, so ingest goes on accepting while
    the registry is down (the chaos tier's registry outage); a contract it never resolved
    still fails the publish, answered 503 "schema registry unavailable".
    """

    NAMES: Final = {"kafka": "Kafka"}

    def __init__(self, checks: Mapping[str, Check]) -> None:
        self.checks = {name: checks[name] for name in self.NAMES if name in checks}

    def _failures(self) -> list[str]:
        failures: list[str] = []
        for name, check in self.checks.items():
            try:
                result = check()
            except Exception as exc:  # a check must not turn into a 500
                result = CheckResult(False, f"{type(exc).__name__}: {exc}")
            if not result.ok:
                failures.append(f"{self.NAMES[name]} unavailable ({result.detail})")
        return failures

    async def ensure(self) -> None:
        failures = await asyncio.to_thread(self._failures)
        if failures:
            raise ServiceUnavailable("; ".join(failures))


def unavailable_reason(exc: BaseException) -> str:
    """The 503 reason for a failure while publishing."""
    if isinstance(exc, SchemaRegistryUnavailable):
        return f"schema registry unavailable: {exc}"
    if isinstance(exc, SerializationError):
        # A validated record that does not encode means the registered contract is missing
        # or differs from ours: a deployment problem, not the client's.
        return f"event contract unavailable: {exc}"
    if isinstance(exc, KafkaUnavailable | PublishError | KafkaException):
        return f"Kafka did not accept the records: {exc}"
    return str(exc)


#: What publishing may raise; each is answered 503 (the client's data was valid).
PUBLISH_FAILURES: Final = (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
    KafkaException,
)


class Ingestor:
    """Publishes validated records on the service's bindings; reports refused ones."""

    def __init__(
        self,
        settings: Settings,
        publisher: FrontDoorPublisher,
        gate: DependencyGate,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.gate = gate
        self.clock = clock
        self._bindings = {binding.contract: binding for binding in settings.bindings().produces}
        self._issues = settings.quality_issues
        self._ingested = settings.ingested
        self._background: set[asyncio.Future[None]] = set()

    def now(self) -> datetime:
        return self.clock()

    def binding(self, kind: RecordKind) -> Binding:
        """Where records of ``kind`` go, keyed by the binding's key field."""
        return self._bindings[kind.contract]

    async def ingest(
        self, kind: RecordKind, records: Sequence[Prepared], producer: str | None = None
    ) -> IngestAccepted:
        """Publish ``records`` (all or none) with their warnings and a ``data.ingested`` summary.

        ``producer`` is the name of the caller's API key, recorded in the summary.
        """
        binding = self.binding(kind)
        record_events = [make_event(SOURCE, r.payload, event_time=r.event_time) for r in records]
        events = [Output(binding, e) for e in record_events]

        warnings: list[Issue] = [w for r in records for w in r.warnings]
        # A warning shares its record's key (and so its partition).
        warning_events = [
            Output(self._issues, make_event(SOURCE, w.payload(), cause=e["envelope"]), binding.key_of(e))
            for r, e in zip(records, record_events, strict=True)
            for w in r.warnings
        ]
        dropped = max(len(warning_events) - self.settings.max_quality_events, 0)
        if dropped:
            warning_events = warning_events[: self.settings.max_quality_events]
            QUALITY_EVENTS_DROPPED.labels("cap").inc(dropped)

        event_ids = [e["envelope"]["event_id"] for e in record_events]
        batch_id = str(uuid.uuid4())
        summary = make_event(
            SOURCE,
            {
                "record_type": kind.name,
                "target_topic": binding.topic,
                "record_count": len(records),
                "event_ids": event_ids,
                "batch_id": batch_id,
                "producer": producer,
            },
        )
        outgoing = [*events, *warning_events, Output(self._ingested, summary)]

        try:
            await self.gate.ensure()
            started = time.perf_counter()
            await self.publisher.publish(outgoing)
            PUBLISH_SECONDS.labels(kind.name).observe(time.perf_counter() - started)
        except ServiceUnavailable as exc:
            self._count_unavailable(kind, len(records), exc.reason)
            raise
        except PUBLISH_FAILURES as exc:
            reason = unavailable_reason(exc)
            self._count_unavailable(kind, len(records), reason)
            raise ServiceUnavailable(reason) from exc

        RECORDS_PUBLISHED.labels(kind.name).inc(len(records))
        BATCH_RECORDS.labels(kind.name).observe(len(records))
        for warning in warnings:
            QUALITY_ISSUES.labels(kind.name, warning.issue_type, "false").inc()
        return IngestAccepted(
            record_type=kind.name,
            topic=binding.topic,
            count=len(records),
            event_ids=event_ids,
            transaction_ids=[str(r.payload["transaction_id"]) for r in records] if kind.id_field else [],
            batch_id=batch_id,
            warnings=[
                QualityWarning(
                    index=w.index or 0,
                    field=w.field,
                    issue_type=w.issue_type,
                    message=w.message,
                    record_id=w.record_id,
                )
                for w in warnings
            ],
        )

    def _count_unavailable(self, kind: RecordKind, count: int, reason: str) -> None:
        RECORDS_REJECTED.labels(kind.name, "unavailable").inc(count)
        log.warning("ingest_unavailable", record_type=kind.name, records=count, reason=reason)

    async def reject(self, kind: RecordKind, issues: Sequence[Issue], record_count: int) -> None:
        """Account for a refused request and publish its issues (without waiting for Kafka)."""
        for issue in issues:
            QUALITY_ISSUES.labels(kind.name, issue.issue_type, "true").inc()
        # Every record of the request is refused: those with their own problem by the first
        # one's type, the others because the batch is all-or-nothing.
        first_reason: dict[int | None, str] = {}
        for issue in issues:
            first_reason.setdefault(issue.index, issue.issue_type)
        request_reason = first_reason.get(None)
        for index in range(record_count):
            reason = first_reason.get(index) or request_reason or "batch_rejected"
            RECORDS_REJECTED.labels(kind.name, reason).inc()
        log.info("ingest_rejected", record_type=kind.name, records=record_count, issues=len(issues))

        events = [
            Output(self._issues, make_event(SOURCE, issue.payload()), issue.record_id or kind.name)
            for issue in issues[: self.settings.max_quality_events]
        ]
        if len(issues) > len(events):
            QUALITY_EVENTS_DROPPED.labels("cap").inc(len(issues) - len(events))
        if events:
            # Encoding may wait on the registry: keep it off the event loop, and do not make
            # the client's 422 depend on Kafka being up.
            future = asyncio.get_running_loop().run_in_executor(None, self.publisher.emit, events)
            self._background.add(future)
            future.add_done_callback(self._background_done)

    def _background_done(self, future: asyncio.Future[None]) -> None:
        self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            QUALITY_EVENTS_DROPPED.labels("error").inc()
            log.warning("quality_events_failed", error=repr(future.exception()))

    async def drain(self) -> None:
        """Wait for the background emits (tests and shutdown)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
