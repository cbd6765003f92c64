"""The control plane's events as operator commands watch them (the demo, the scenario suite).

:class:`Timeline` follows the control-plane topics from a consumer of its own, remembers
every event with when it arrived, hands each to a callback, and walks causal chains back
through ``causation_id``; :func:`describe` turns an event into one human line.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer

from mlops_platform.contracts import Topic
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

CONTROL_TOPICS = [
    Topic.DATA_DRIFT_DETECTED,
    Topic.MODEL_PERFORMANCE_DEGRADED,
    Topic.MODEL_EVALUATION_COMPLETED,
    Topic.MODEL_TRAINING_STARTED,
    Topic.MODEL_TRAINING_COMPLETED,
    Topic.MODEL_DEPLOYED,
    Topic.SYSTEM_ALERTS,
    Topic.SYSTEM_ACTIONS,
    Topic.SYSTEM_SCALE_REQUESTED,
]


@dataclass(frozen=True)
class Seen:
    """One event the timeline saw: its topic, decoded value and arrival (``time.time()``)."""

    topic: str
    value: dict[str, Any]
    received_at: float

    @property
    def event_id(self) -> str:
        return str(self.value["envelope"]["event_id"])

    @property
    def causation_id(self) -> str | None:
        cause = self.value["envelope"].get("causation_id")
        return str(cause) if cause else None

    @property
    def event_time(self) -> float:
        """The envelope's event time in epoch seconds (arrival when it has none)."""
        stamp = self.value["envelope"].get("event_time")
        if isinstance(stamp, datetime):
            return stamp.timestamp()
        if isinstance(stamp, int | float):
            # Avro timestamp-millis decoded as a number.
            return float(stamp) / 1000.0
        return self.received_at


def short(value: object) -> str:
    return str(value)[:8] if value else "-"


def log(message: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')}  {message}", flush=True)


class Timeline(threading.Thread):
    """Prints every control-plane event and remembers them to walk causal chains."""

    def __init__(
        self,
        settings: PlatformSettings,
        on_event: Callable[[str, dict[str, Any]], None],
        topics: Sequence[str] = CONTROL_TOPICS,
    ) -> None:
        super().__init__(name="timeline", daemon=True)
        self.topics = [str(t) for t in topics]
        self.history: list[Seen] = []
        self.lock = threading.Lock()
        self.serde = AvroSerde(settings)
        self.consumer = Consumer(
            {
                **settings.common_kafka_config(),
                "group.id": f"demo-timeline-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.events: dict[str, tuple[str, dict[str, Any]]] = {}
        self.seen: dict[str, Seen] = {}
        self.on_event = on_event
        self.stop_event = threading.Event()
        self.assigned = threading.Event()
        #: Why the consumer stopped before it was asked to (``None`` while it runs or stopped cleanly).
        self.error: str | None = None

    def run(self) -> None:
        self.consumer.subscribe(self.topics, on_assign=lambda _c, _p: self.assigned.set())
        try:
            while not self.stop_event.is_set():
                for msg in self.consumer.consume(num_messages=100, timeout=0.5):
                    if msg.error() is None:
                        self._take(msg.topic() or "", msg.value())
        except BaseException as exc:
            # Whoever measures from this timeline must learn it went blind, not see silence.
            self.error = f"{type(exc).__name__}: {exc}"
            log(f"!! the timeline consumer stopped: {self.error}")
            raise
        finally:
            self.consumer.close()

    def _take(self, topic: str, raw: bytes | None) -> None:
        """Remember one record and hand it on; a bad record is shown and skipped."""
        try:
            value = self.serde.decode(topic, raw)
            seen = Seen(topic, value, time.time())
            with self.lock:
                self.events[seen.event_id] = (topic, value)
                self.seen[seen.event_id] = seen
                self.history.append(seen)
            self.on_event(topic, value)
        except Exception as exc:  # the demo shows the problem and carries on
            log(f"!! cannot take a {topic} record: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        """Raise when the consumer is no longer running (it stopped without being asked to)."""
        if not self.stop_event.is_set() and not self.is_alive():
            raise RuntimeError(f"the timeline consumer stopped: {self.error or 'no reason recorded'}")

    def since(self, start: float, end: float | None = None) -> list[Seen]:
        """Events that arrived at or after ``start`` (and before ``end``), oldest first."""
        with self.lock:
            return [
                s for s in self.history if s.received_at >= start and (end is None or s.received_at < end)
            ]

    def walk(self, event_id: str, causes: Iterable[str]) -> tuple[list[Seen], bool]:
        """The chain back from ``event_id`` to the first event on one of the ``causes`` topics.

        Returns the events walked, newest first, and whether the chain is complete: every
        ``causation_id`` on the way names an event this timeline saw, until an event of
        ``causes`` (the incident's first cause: a drift event, a heartbeat...). The cause's
        own cause (a prediction, a label) is data, not control plane, and is not followed.
        """
        stops = {str(topic) for topic in causes}
        chain: list[Seen] = []
        current: str | None = event_id
        with self.lock:
            while current is not None:
                seen = self.seen.get(current)
                if seen is None or seen in chain:
                    return chain, False
                chain.append(seen)
                # The event walked from is never its own cause (a rollback's model.deployed
                # goes back to the deployment it undoes, which is on the same topic).
                if seen.topic in stops and len(chain) > 1:
                    return chain, True
                current = seen.causation_id
        return chain, False

    def chain(self, event_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Follow causation ids back from ``event_id`` as far as the demo saw them."""
        chain: list[tuple[str, dict[str, Any]]] = []
        current: str | None = event_id
        while current and current in self.events:
            topic, value = self.events[current]
            chain.append((topic, value))
            current = value["envelope"].get("causation_id")
        return chain


def describe(topic: str, value: dict[str, Any]) -> str:
    """One human line for a control-plane event."""
    if topic == Topic.DATA_DRIFT_DETECTED:
        features = ", ".join(value["affected_features"][:6]) or "-"
        return (
            f"DRIFT {value['state']} severity={value['severity']} score={value['drift_score']:.2f} "
            f"model v{value['model_version']} features: {features}"
            + (f"  report: {value['report_url']}" if value.get("report_url") else "")
        )
    if topic == Topic.MODEL_PERFORMANCE_DEGRADED:
        return (
            f"DEGRADED v{value['model_version']} {value['metric']} {value['baseline_value']:.3f} -> "
            f"{value['current_value']:.3f} (drop {value['performance_drop']:.0%}, {value['severity']})"
        )
    if topic == Topic.MODEL_EVALUATION_COMPLETED:
        return (
            f"A/B EVALUATION champion v{value['champion_version']} "
            f"vs challenger v{value['challenger_version']}: "
            f"winner={value['winner']} p={value['p_value']:.4f} ({value['test_name']}, "
            f"{value['champion_samples']}/{value['challenger_samples']} samples)"
        )
    if topic == Topic.MODEL_TRAINING_STARTED:
        return f"TRAINING started ({value['reason']}) on {value['dataset_size']} labelled rows"
    if topic == Topic.MODEL_TRAINING_COMPLETED:
        metrics = value.get("metrics") or {}
        auc = metrics.get("auc_roc") or metrics.get("val_auc_roc")
        return (
            f"TRAINING {value['status']}: v{value.get('model_version')} alias={value.get('alias')} "
            + (f"AUC={auc:.3f} " if auc else "")
            + f"in {value['duration_s']:.1f}s"
            + (f" error={value['error']}" if value.get("error") else "")
        )
    if topic == Topic.MODEL_DEPLOYED:
        return (
            f"DEPLOYED @{value['alias']} -> v{value['version']} (was v{value.get('previous_version')}) "
            f"action={value['action']}: {value['reason']}"
        )
    if topic == Topic.SYSTEM_ALERTS:
        return f"ALERT [{value['severity']}] {value['title']} ({value['status']})"
    if topic == Topic.SYSTEM_ACTIONS:
        reason = f" ({value['suppressed_reason']})" if value.get("suppressed_reason") else ""
        reason += f" by {value['actor']}" if value.get("actor") else ""
        return (
            f"ACTION {value['action']} {value['status']}{reason} rule={value['rule_id']} "
            f"trigger={value['trigger_event_type']}: {value['outcome']}"
        )
    if topic == Topic.SYSTEM_SCALE_REQUESTED:
        return f"SCALE {value['service']} {value['current_instances']} -> {value['desired_instances']}"
    return topic
