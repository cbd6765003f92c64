"""The one traffic driver: the demo's live traffic, the benchmark's senders, the tests' requests.

Building
    :class:`TransactionPool` / :func:`transactions` turn ``fraud_model`` generator rows into
    contract transactions with fresh, unique ids; :func:`request_event` wraps one in a
    ``prediction.request`` event and :func:`encode_request` serialises it.
Sending
    :func:`send_requests` publishes request events through an :class:`EventProducer` (the
    tests), :class:`KafkaSender` produces pre-encoded requests straight onto a topic (the
    benchmark's hot path), :class:`IngestSender` posts them to ingest's HTTP API, and
    :func:`post_interactions` posts the recommender's interactions and clicks to ingest.
Delayed labels
    :class:`DelayedLabelSender` schedules the fraud label of each sent transaction and
    produces it onto ``prediction.feedback`` once due, straight to Kafka, as a chargeback
    system would.
Live traffic
    :class:`LiveTraffic` combines them at a steady rate in a thread (the demo).

A sender's ``prepare(batch)`` takes ``(transaction, event_time)`` pairs and does the costly
part (encoding) before the clock starts; ``send(prepared)`` only ships it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from confluent_kafka import Producer

from fraud_model.contract import transaction_payload
from fraud_model.generator import DelayedLabels, TransactionGenerator
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from recsys_data.generator import InteractionGenerator, SimEvent

REQUEST = Topic.PREDICTION_REQUEST.value
FEEDBACK = Topic.PREDICTION_FEEDBACK.value
SOURCE = "traffic"

#: A transaction with the time it is (or was scheduled to be) sent, in epoch seconds.
Timed = tuple[Mapping[str, Any], float]


# --------------------------------------------------------------------------- building


@dataclass
class TransactionPool:
    """Generator transactions (contract fields only), reused under fresh ids as often as needed."""

    rows: list[dict[str, Any]]

    @classmethod
    def generate(cls, count: int, seed: int) -> TransactionPool:
        return cls([transaction_payload(row) for row in TransactionGenerator(seed=seed).generate(count)])

    def take(self, count: int, prefix: str) -> Iterator[dict[str, Any]]:
        """``count`` transactions with ids ``PREFIX-0``, ``PREFIX-1``... (the pool's rows in turn)."""
        for i in range(count):
            yield {**self.rows[i % len(self.rows)], "transaction_id": f"{prefix}-{i}"}


def transactions(count: int, seed: int = 7, prefix: str | None = None) -> list[dict[str, Any]]:
    """Generator transactions (contract fields only) with fresh, unique transaction ids."""
    tag = prefix or f"t-{uuid.uuid4().hex[:8]}"
    return list(TransactionPool.generate(count, seed).take(count, tag))


def request_event(
    transaction: Mapping[str, Any], *, source: str = SOURCE, event_time: float | None = None
) -> dict[str, Any]:
    """A ``prediction.request`` event for ``transaction`` (event time: now, or ``event_time``)."""
    if event_time is None:
        return make_event(source, transaction)
    return make_event(source, transaction, event_time=datetime.fromtimestamp(event_time, UTC))


def encode_request(
    serde: AvroSerde, transaction: Mapping[str, Any], event_time: float, *, source: str = SOURCE
) -> bytes:
    """The Avro bytes of a request event, with the ``prediction.request`` contract."""
    event = request_event(transaction, source=source, event_time=event_time)
    return serde.encode(REQUEST, event, schema_topic=REQUEST)


# --------------------------------------------------------------------------- sending


def send_requests(
    producer: EventProducer, topic: str, txns: Iterable[Mapping[str, Any]], *, source: str = SOURCE
) -> list[dict[str, Any]]:
    """Produce one request event per transaction onto ``topic`` (keyed by id); returns the events.

    A topic other than ``prediction.request`` (a test's private one) carries the same contract.
    The caller flushes.
    """
    schema_topic = None if topic == REQUEST else REQUEST
    events = []
    for txn in txns:
        event = request_event(txn, source=source)
        producer.produce(topic, event, key=txn["transaction_id"], schema_topic=schema_topic)
        events.append(event)
        producer.poll(0)
    return events


class Sender(Protocol):
    """Where requests go: ``prepare`` before the clock starts, then ``send``."""

    failures: int

    def prepare(self, batch: Sequence[Timed]) -> list[Any]: ...

    def send(self, prepared: list[Any]) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class KafkaSender:
    """Request events produced straight onto a topic (the pipeline's input or a private one)."""

    def __init__(
        self, settings: PlatformSettings, topic: str, serde: AvroSerde, *, source: str = SOURCE
    ) -> None:
        self.topic = topic
        self.serde = serde
        self.source = source
        # linger 1 ms: a latency benchmark must not wait for batches to fill.
        self.producer = Producer(settings.producer_config(f"{source}-producer", **{"linger.ms": 1}))
        self.failures = 0

    def prepare(self, batch: Sequence[Timed]) -> list[tuple[bytes, bytes]]:
        return [
            (str(txn["transaction_id"]).encode(), encode_request(self.serde, txn, at, source=self.source))
            for txn, at in batch
        ]

    def send(self, prepared: list[tuple[bytes, bytes]]) -> int:
        for key, value in prepared:
            while True:
                try:
                    self.producer.produce(self.topic, value, key=key)
                    break
                except BufferError:
                    # Local queue full: serve delivery reports to make room, then retry.
                    self.producer.poll(0.01)
        self.producer.poll(0)
        return len(prepared)

    def flush(self) -> None:
        self.producer.flush(60)

    def close(self) -> None:
        self.producer.flush(60)


class IngestSender:
    """Transactions posted to ingest's ``POST /transactions/batch`` (202: Kafka acknowledged them).

    ``failures`` counts transactions not accepted: refused (any other status; ``on_refused``
    hears the status and body) or not delivered at all (connection errors, counted in ``errors``).
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 200,
        timeout_s: float = 60.0,
        on_refused: Callable[[int, str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        # Ingest wants a producer key (X-API-Key); None sends none (and gets 401).
        headers = {"X-API-Key": api_key} if api_key else {}
        self.client = httpx.Client(base_url=url, timeout=timeout_s, transport=transport, headers=headers)
        self.batch_size = batch_size
        self.on_refused = on_refused
        self.failures = 0
        self.errors = 0

    def prepare(self, batch: Sequence[Timed]) -> list[dict[str, Any]]:
        return [
            {**transaction_payload(txn), "event_time": datetime.fromtimestamp(at, UTC).isoformat()}
            for txn, at in batch
        ]

    def post(self, chunk: list[dict[str, Any]]) -> int | None:
        """One batch request: ingest's status (202: all accepted), ``None`` when it was not reached."""
        try:
            response = self.client.post("/transactions/batch", json={"transactions": chunk})
        except httpx.HTTPError:
            self.errors += len(chunk)
            self.failures += len(chunk)
            return None
        if response.status_code != 202:
            self.failures += len(chunk)
            if self.on_refused is not None:
                self.on_refused(response.status_code, response.text)
        return response.status_code

    def send(self, prepared: list[dict[str, Any]]) -> int:
        accepted = 0
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            accepted += len(chunk) if self.post(chunk) == 202 else 0
        return accepted

    def flush(self) -> None:
        """Nothing is buffered: a batch is acknowledged when its request returns."""

    def close(self) -> None:
        self.client.close()


def post_interactions(client: httpx.Client, events: Iterable[SimEvent]) -> tuple[int, int]:
    """Post generated interactions (``/interactions``) and clicks (``/clicks``) to ingest.

    Returns (accepted, transport errors).
    """
    accepted = errors = 0
    for event in events:
        path = "/clicks" if event.kind == "click" else "/interactions"
        payload = {k: v for k, v in event.payload().items() if v is not None}
        try:
            response = client.post(path, json=payload)
        except httpx.HTTPError:
            errors += 1
            continue
        accepted += response.status_code == 202
    return accepted, errors


# --------------------------------------------------------------------------- delayed labels


class DelayedLabelSender:
    """The fraud labels of sent transactions, produced onto ``prediction.feedback`` once due.

    Labels come from a back-office system (chargebacks, closed dispute windows), so they go
    straight onto the bus rather than through ingest. Times are ``time.monotonic()`` seconds
    unless given.
    """

    def __init__(
        self,
        producer: EventProducer,
        delay_s: tuple[float, float],
        *,
        drop_rate: float = 0.02,
        seed: int = 0,
        source: str = "chargeback-simulator",
        topic: str = FEEDBACK,
    ) -> None:
        self.producer = producer
        self.delay_s = delay_s
        self.drop_rate = drop_rate
        self.source = source
        self.topic = topic
        self.pending = DelayedLabels(seed=seed)
        self.sent = 0

    def schedule(self, rows: Iterable[Mapping[str, Any]], now: float | None = None) -> None:
        """Schedule the label of each generator row (it carries the hidden ``is_fraud``)."""
        at = time.monotonic() if now is None else now
        for row in rows:
            self.pending.add(row, at, self.delay_s, drop_rate=self.drop_rate)

    def send_due(self, now: float | None = None) -> int:
        """Produce every label that is due; returns how many."""
        due = self.pending.due(time.monotonic() if now is None else now)
        for label in due:
            event = make_event(self.source, label)
            self.producer.produce(self.topic, event, key=label["transaction_id"])
        self.producer.poll(0)
        self.sent += len(due)
        return len(due)


# --------------------------------------------------------------------------- live traffic


@dataclass
class Counters:
    """What live traffic sent so far (read from other threads)."""

    transactions: int = 0
    labels: int = 0
    interactions: int = 0
    rejected: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


class LiveTraffic(threading.Thread):
    """Transactions through ingest at a steady rate, their labels late on Kafka, interactions too.

    Four ticks a second: a batch of generator transactions (``rate`` per second) posted to
    ingest, the labels that fell due, and ``interactions_per_tick`` user interactions or clicks.
    :meth:`switch` changes the generator's scenario (drift) while it runs.
    """

    def __init__(
        self,
        ingest_url: str,
        rate: float,
        labels: DelayedLabelSender,
        *,
        seed: int = 2026,
        interactions_per_tick: int = 2,
        user_prefix: str = "demo-user",
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(name="traffic", daemon=True)
        self.sender = IngestSender(ingest_url, timeout_s=30, transport=transport, api_key=api_key)
        self.labels = labels
        self.rate = rate
        self.interactions_per_tick = interactions_per_tick
        self.generator = TransactionGenerator(seed=seed)
        users = InteractionGenerator(n_users=300, seed=seed, user_prefix=user_prefix)
        self.sessions = iter(users.generate(1_000_000))
        self.counters = Counters()
        self.stop_event = threading.Event()

    def switch(self, scenario: str) -> None:
        self.generator.scenario = scenario

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        batch = max(1, int(self.rate / 4))
        interval = batch / self.rate
        next_at = time.monotonic()
        try:
            while not self.stop_event.is_set():
                self.tick(batch)
                next_at += interval
                self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.sender.close()

    def tick(self, batch: int) -> None:
        """One round: transactions, due labels, interactions."""
        rows = self.generator.generate(batch)
        status = self.sender.post(self.sender.prepare([(row, time.time()) for row in rows]))
        if status == 202:
            self.counters.add(transactions=len(rows))
            self.labels.schedule(rows)
        elif status is None:
            self.counters.add(errors=1)
        else:
            self.counters.add(rejected=len(rows))
        self.counters.add(labels=self.labels.send_due())
        events = [next(self.sessions) for _ in range(self.interactions_per_tick)]
        accepted, failed = post_interactions(self.sender.client, events)
        self.counters.add(interactions=accepted, errors=failed)
