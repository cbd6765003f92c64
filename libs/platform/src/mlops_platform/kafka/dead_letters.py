"""Dead letters: a record that cannot be processed goes, bytes untouched, to the service's DLQ topic.

The headers say where it came from and why it failed, so an operator can fix and
replay it: ``dlq.original.topic/partition/offset/timestamp``, ``dlq.error.class``,
``dlq.error.message``, ``dlq.stage`` (deserialize | process), ``dlq.service`` and
``dlq.failed.at``, after the record's own headers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

from mlops_platform.contracts import dlq_topic
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics

from .producer import Encoded, Headers, Outbox

log = get_logger(__name__)


def header_items(msg: Message) -> Headers:
    """A message's headers as a list of (name, value) pairs."""
    headers = msg.headers() or []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(str(k), v) for k, v in headers]


def dead_letter_headers(msg: Message, error: BaseException, *, stage: str, service: str) -> Headers:
    """Headers that explain why a record was dead-lettered and where it came from."""
    return [
        *header_items(msg),
        ("dlq.original.topic", (msg.topic() or "").encode()),
        ("dlq.original.partition", str(msg.partition()).encode()),
        ("dlq.original.offset", str(msg.offset()).encode()),
        ("dlq.original.timestamp", str(msg.timestamp()[1]).encode()),
        ("dlq.error.class", type(error).__name__.encode()),
        ("dlq.error.message", str(error)[:4000].encode()),
        ("dlq.stage", stage.encode()),
        ("dlq.service", service.encode()),
        ("dlq.failed.at", datetime.now(UTC).isoformat().encode()),
    ]


class DeadLetters:
    """Routes failed records of one service into an outbox bound for its dead-letter topic.

    The dead letter travels with the batch's other outputs, so the input offset is
    committed only once the dead letter is stored (or, exactly-once, in the same transaction).
    """

    def __init__(self, service: str, topic: str | None = None) -> None:
        self.service = service
        self.topic = topic or dlq_topic(service)
        self._metrics = platform_metrics()

    def letter(self, msg: Message, error: BaseException, *, stage: str) -> Encoded:
        """The dead letter of ``msg`` (logged and counted), for the caller to produce.

        Services whose outputs go through another producer (Faust's) send it themselves.
        """
        log.warning(
            "dead_letter",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            stage=stage,
            error=f"{type(error).__name__}: {error}",
        )
        self._metrics.dead_letters.labels(self.service, msg.topic() or "", stage).inc()
        self._metrics.events_failed.labels(self.service, msg.topic() or "", stage).inc()
        return Encoded(
            self.topic,
            msg.value(),
            msg.key(),
            dead_letter_headers(msg, error, stage=stage, service=self.service),
        )

    def route(self, outbox: Outbox, msg: Message, error: BaseException, *, stage: str) -> None:
        """Put the dead letter of ``msg`` into ``outbox``, confirmed with the batch's other outputs."""
        outbox.emit_encoded(self.letter(msg, error, stage=stage))
