"""The decision history: in memory for queries, durable on ``system.actions``.

Every decision the responder publishes is also added here. At start the responder
replays its own records of ``system.actions`` (last ``history_lookback_s``, this
service and this model only) before consuming anything, which restores:

* the cooldown and dampening state (:class:`~auto_responder.policies.PolicyState`);
* which trigger events were already decided, so a trigger delivered again (offsets not
  committed before a crash, a new consumer group) is not acted on twice;
* actions that were ``started`` but never finished (the process died meanwhile): they
  are reported and closed as ``failed`` rather than run again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from confluent_kafka import Consumer, KafkaException, TopicPartition

from auto_responder.model import ActionRecord, Status
from auto_responder.policies import PolicyState
from mlops_platform.bindings import Binding
from mlops_platform.errors import KafkaUnavailable, PlatformError
from mlops_platform.kafka import consume_to_end, offsets_since
from mlops_platform.logs import get_logger
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

log = get_logger(__name__)


def dedup_key(trigger_event_id: str, event_type: str, severity: str | None) -> tuple[str, str, str]:
    """Identity of "this trigger, understood this way": one decision per key."""
    return (trigger_event_id, event_type, severity or "")


class ActionHistory:
    """Decision records, newest last, capped at ``max_records``; thread-safe."""

    def __init__(self, max_records: int = 5000) -> None:
        self._records: deque[ActionRecord] = deque(maxlen=max_records)
        self._decided: dict[tuple[str, str, str], datetime] = {}
        self._open: dict[str, ActionRecord] = {}
        self._terminal: deque[tuple[datetime, str]] = deque()
        self.policy = PolicyState()
        self._lock = threading.Lock()

    def add(self, record: ActionRecord) -> None:
        with self._lock:
            self._records.append(record)
            key = dedup_key(record.trigger_event_id, record.event_type, record.assessed_severity)
            self._decided.setdefault(key, record.at)
            if record.status == Status.STARTED.value:
                self._open[record.action_id] = record
            else:
                self._open.pop(record.action_id, None)
                if record.status in (Status.SUCCEEDED.value, Status.FAILED.value):
                    self._terminal.append((record.at, record.status))
            self.policy.note_record(record)

    def already_decided(self, trigger_event_id: str, event_type: str, severity: str | None) -> bool:
        with self._lock:
            return dedup_key(trigger_event_id, event_type, severity) in self._decided

    def trained(self, version: str) -> ActionRecord | None:
        """The succeeded retrain that registered ``version`` (newest first), if remembered."""
        with self._lock:
            for record in reversed(self._records):
                if (
                    record.action == "retrain"
                    and record.status == Status.SUCCEEDED.value
                    and record.details.get("version") == version
                ):
                    return record
        return None

    def unfinished(self) -> list[ActionRecord]:
        """Actions ``started`` without a terminal record."""
        with self._lock:
            return list(self._open.values())

    def records(self) -> list[ActionRecord]:
        with self._lock:
            return list(self._records)

    def query(
        self,
        *,
        action: str | None = None,
        status: str | None = None,
        trigger_event_type: str | None = None,
        trigger_event_id: str | None = None,
        rule_id: str | None = None,
        action_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[ActionRecord]:
        """Newest first."""
        out: list[ActionRecord] = []
        for record in reversed(self.records()):
            if action and record.action != action:
                continue
            if status and record.status != status:
                continue
            types = (record.trigger_event_type, record.event_type)
            if trigger_event_type and trigger_event_type not in types:
                continue
            if trigger_event_id and record.trigger_event_id != trigger_event_id:
                continue
            if rule_id and record.rule_id != rule_id:
                continue
            if action_id and record.action_id != action_id:
                continue
            if since and record.at < since:
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def success_ratio(self, now: datetime, window_s: float = 86400.0) -> float | None:
        """Succeeded / (succeeded + failed) over the window (``None`` without outcomes)."""
        horizon = now - timedelta(seconds=window_s)
        with self._lock:
            while self._terminal and self._terminal[0][0] < horizon:
                self._terminal.popleft()
            outcomes = [status for _at, status in self._terminal]
        if not outcomes:
            return None
        return outcomes.count(Status.SUCCEEDED.value) / len(outcomes)


@dataclass
class ReplayResult:
    read: int = 0
    restored: int = 0
    skipped: int = 0


class ReplayError(PlatformError):
    """The decision log could not be read back; starting without it could repeat actions."""


def replay_actions(
    history: ActionHistory,
    *,
    settings: PlatformSettings,
    serde: AvroSerde,
    binding: Binding,
    keep: Callable[[ActionRecord], bool],
    lookback_s: float,
    timeout_s: float,
    group_id: str,
) -> ReplayResult:
    """Feed the records of the last ``lookback_s`` seconds of the bound topic that ``keep`` accepts.

    Reads up to the end offsets found at the start (read_committed). Raises
    :class:`ReplayError` when the topic cannot be read to its end within ``timeout_s``.
    """
    result = ReplayResult()
    if lookback_s <= 0:
        return result
    topic = binding.topic
    request_timeout = settings.request_timeout_s * 2
    consumer = Consumer(
        settings.consumer_config(group_id, client_id=f"{group_id}-replay", **{"enable.partition.eof": True})
    )
    try:
        since_ms = int((time.time() - lookback_s) * 1000)
        ranges = offsets_since(consumer, topic, since_ms, request_timeout)
        if ranges:
            consumer.assign([TopicPartition(topic, p, start) for p, (start, _end) in ranges.items()])
            ends = {p: end for p, (_start, end) in ranges.items()}
            _consume_until(consumer, history, serde, binding, keep, ends, timeout_s, result)
    except (KafkaException, KafkaUnavailable) as exc:
        raise ReplayError(f"replaying {topic} failed: {exc}") from exc
    finally:
        consumer.close()
    return result


def _consume_until(
    consumer: Consumer,
    history: ActionHistory,
    serde: AvroSerde,
    binding: Binding,
    keep: Callable[[ActionRecord], bool],
    ends: dict[int, int],
    timeout_s: float,
    result: ReplayResult,
) -> None:
    for msg in consume_to_end(consumer, binding.topic, ends, timeout_s):
        result.read += 1
        try:
            record = ActionRecord.from_value(
                serde.decode(binding.topic, msg.value(), schema_topic=binding.schema_topic)
            )
        except (PlatformError, KeyError, TypeError, ValueError) as exc:
            result.skipped += 1
            log.warning(
                "replay_record_skipped", partition=msg.partition(), offset=msg.offset(), error=str(exc)
            )
            continue
        if keep(record):
            history.add(record)
            result.restored += 1
