"""Kafka plumbing shared by every service.

- :mod:`.producer` — :class:`EventProducer` (idempotent, ``acks=all``, optionally
  transactional) and :class:`Outbox`, the one way to confirm that events are stored;
- :mod:`.loop` — :class:`StreamLoop`, the single consume → handle → produce loop with
  ``Guarantee.AT_LEAST_ONCE`` or ``Guarantee.EXACTLY_ONCE``;
- :mod:`.publisher` — front-door publishing for request handlers
  (:class:`TransactionalPublisher`, :class:`AcknowledgedPublisher`);
- :mod:`.dead_letters` — dead-letter routing and headers;
- :mod:`.consumer` — decoded :class:`Record`, group consumer, :class:`StopSignal`;
- :mod:`.state` — :class:`Stateful`, the snapshot/restore protocol of handlers whose state
  an exactly-once :class:`StreamLoop` checkpoints to a compacted topic with its offsets;
- :mod:`.admin` — cluster probes, topic creation and deletion, reading a topic range to its end.
"""

from .admin import (
    consume_to_end,
    create_topic,
    delete_topics,
    ensure_topics,
    group_members,
    kafka_reachable,
    offsets_since,
)
from .consumer import GroupConsumer, Record, StopSignal, next_offsets
from .dead_letters import DeadLetters, dead_letter_headers, header_items
from .loop import Guarantee, Handler, RetryableError, StreamLoop
from .producer import Encoded, EventProducer, Headers, Outbox, Output, Target, encode_all, kafka_error
from .publisher import AcknowledgedPublisher, FrontDoorPublisher, TransactionalPublisher
from .state import StateError, Stateful, StateTopic, decode_chunks, encode_chunks, state_key

__all__ = [
    "AcknowledgedPublisher",
    "DeadLetters",
    "Encoded",
    "EventProducer",
    "FrontDoorPublisher",
    "GroupConsumer",
    "Guarantee",
    "Handler",
    "Headers",
    "Outbox",
    "Output",
    "Record",
    "StateError",
    "StateTopic",
    "Stateful",
    "RetryableError",
    "StopSignal",
    "StreamLoop",
    "Target",
    "TransactionalPublisher",
    "consume_to_end",
    "create_topic",
    "delete_topics",
    "decode_chunks",
    "dead_letter_headers",
    "encode_all",
    "encode_chunks",
    "ensure_topics",
    "header_items",
    "kafka_error",
    "group_members",
    "kafka_reachable",
    "next_offsets",
    "offsets_since",
    "state_key",
]
