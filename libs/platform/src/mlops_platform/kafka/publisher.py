"""Publishing from request/response front doors (HTTP handlers): answer only once Kafka has the events.

Two publishers share the :class:`FrontDoorPublisher` interface:

- :class:`TransactionalPublisher`: every request's events go into a Kafka transaction,
  run by a few worker threads that each own a transactional producer (concurrent
  requests share a transaction: group commit). A request is answered after the commit,
  and a failure aborts the transaction, so ``read_committed`` consumers never see part
  of a request.
- :class:`AcknowledgedPublisher`: the idempotent ``acks=all`` producer, awaiting every
  acknowledgement. Cheaper, but a failure in the middle of a request may leave its
  first records published.

Both encode every event before producing anything, so an event that breaks its
contract fails the request with nothing written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mlops_platform.errors import KafkaUnavailable, PublishError
from mlops_platform.logs import get_logger
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

from .producer import Encoded, EventProducer, Output, encode_all, kafka_error

log = get_logger(__name__)

FailureReport = Callable[[str, str], None]


class FrontDoorPublisher(Protocol):
    """How a request handler gets its events onto Kafka."""

    async def publish(self, outputs: Sequence[Output]) -> None:
        """Publish every event; return once Kafka stored all of them, raise otherwise."""
        ...

    def emit(self, outputs: Sequence[Output]) -> None:
        """Best effort: enqueue without waiting (blocking only to encode)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- acknowledged


class AcknowledgedPublisher:
    """Awaitable publishing on the idempotent producer.

    The producer serves its delivery reports on a background thread; each publish
    resolves once the broker acknowledged every record (``acks=all``).
    """

    def __init__(
        self,
        producer: EventProducer,
        timeout_s: float | None = None,
        on_emit_failure: FailureReport | None = None,
    ) -> None:
        self.producer = producer
        self.timeout_s = timeout_s if timeout_s is not None else producer.timeout_s
        self.on_emit_failure = on_emit_failure
        producer.serve_delivery_reports()

    async def publish(self, outputs: Sequence[Output]) -> None:
        await self.publish_acknowledged(outputs)

    async def publish_acknowledged(self, outputs: Sequence[Output]) -> list[tuple[int, int]]:
        """Publish and return (partition, offset) per event, in order."""
        loop = asyncio.get_running_loop()
        # Encoding may wait on the registry (first use of a subject): off the event loop.
        encoded = await asyncio.to_thread(encode_all, self.producer, outputs)
        futures: list[asyncio.Future[tuple[int, int]]] = []
        for record in encoded:
            future: asyncio.Future[tuple[int, int]] = loop.create_future()

            def done(
                err: KafkaError | None, msg: Message, future: asyncio.Future[tuple[int, int]] = future
            ) -> None:
                if err is None:
                    result: Any = (msg.partition() or 0, msg.offset() or 0)
                else:
                    result = PublishError(f"publishing to {msg.topic()} failed: {err}")
                loop.call_soon_threadsafe(_settle, future, result)

            self.producer.produce_encoded(record, done)
            futures.append(future)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s))
        except TimeoutError as exc:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge {len(futures)} records within {self.timeout_s:g}s"
            ) from exc

    def emit(self, outputs: Sequence[Output]) -> None:
        self.producer.emit_best_effort(outputs, self.on_emit_failure)

    def close(self) -> None:
        """Nothing of its own to release: the producer's owner closes it."""


def _settle(future: asyncio.Future[tuple[int, int]], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


# --------------------------------------------------------------------------- transactional


class _TransactionalMember:
    """One transactional producer, initialised on first use and rebuilt after a fatal error."""

    def __init__(
        self, settings: PlatformSettings, service: str, serde: AvroSerde, transactional_id: str
    ) -> None:
        self.settings = settings
        self.service = service
        self.serde = serde
        self.transactional_id = transactional_id
        self._producer: EventProducer | None = None
        self._initialised = False

    def _ready(self, timeout_s: float) -> tuple[EventProducer, Producer]:
        if self._producer is None:
            self._producer = EventProducer(
                self.settings,
                self.service,
                self.serde,
                transactional_id=self.transactional_id,
                **{"client.id": f"{self.service}-{self.transactional_id}", "linger.ms": 0},
            )
            self._initialised = False
        if not self._initialised:
            try:
                # Registers the transactional.id with the coordinator: fences an older
                # producer with the same id and aborts whatever it left open.
                self._producer.raw.init_transactions(timeout_s)
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is not None and error.fatal():
                    self._discard()
                raise KafkaUnavailable(f"cannot start a Kafka transaction: {error or exc}") from exc
            self._initialised = True
            log.info("transactional_producer_ready", transactional_id=self.transactional_id)
        return self._producer, self._producer.raw

    def run(self, records: Sequence[Encoded], timeout_s: float) -> None:
        """Produce ``records`` in one transaction and commit it; abort and raise on any failure."""
        try:
            producer, raw = self._ready(timeout_s)
        except KafkaException as exc:  # the client could not even be created (configuration)
            raise KafkaUnavailable(
                f"cannot create a transactional producer: {kafka_error(exc) or exc}"
            ) from exc
        failures: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        try:
            raw.begin_transaction()
        except KafkaException as exc:
            # Only possible when the producer is in a bad state (e.g. a previous abort failed).
            self._discard()
            raise KafkaUnavailable(f"cannot begin a Kafka transaction: {kafka_error(exc) or exc}") from exc
        try:
            for record in records:
                producer.produce_encoded(record, delivered)
            remaining = raw.flush(timeout_s)
            if remaining:
                raise KafkaUnavailable(
                    f"Kafka did not acknowledge {remaining} of {len(records)} records within {timeout_s:g}s"
                )
            if failures:
                raise PublishError(
                    f"Kafka refused {len(failures)} of {len(records)} records: {failures[0].str()}"
                )
            self._commit(raw, timeout_s)
        except KafkaException as exc:
            self._abort(raw, timeout_s)
            raise KafkaUnavailable(f"Kafka transaction failed: {kafka_error(exc) or exc}") from exc
        except BaseException:
            self._abort(raw, timeout_s)
            raise

    @staticmethod
    def _commit(raw: Producer, timeout_s: float) -> None:
        try:
            raw.commit_transaction(timeout_s)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is None or not error.retriable():
                raise
            # librdkafka: a retriable commit error (e.g. a timeout) may simply be retried.
            raw.commit_transaction(timeout_s)

    def _abort(self, raw: Producer, timeout_s: float) -> None:
        try:
            raw.abort_transaction(timeout_s)
        except KafkaException as exc:
            # The coordinator is unreachable or the producer is fenced: start afresh. The new
            # producer's init_transactions aborts whatever this one left open.
            log.warning("transaction_abort_failed", transactional_id=self.transactional_id, error=str(exc))
            self._discard()

    def _discard(self) -> None:
        if self._producer is not None:
            try:
                self._producer.raw.purge()
            except KafkaException as exc:
                log.debug("purge_failed", error=str(exc))
        self._producer = None
        self._initialised = False

    def close(self, timeout_s: float) -> None:
        if self._producer is not None:
            self._producer.raw.flush(timeout_s)
            self._producer = None


@dataclass
class _Pending:
    """A request waiting for its transaction."""

    records: list[Encoded]
    done: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class TransactionalPublisher:
    """Requests published in Kafka transactions by a few worker threads (group commit).

    Each worker owns one transactional producer (ids ``<prefix>-<n>``). A free worker
    takes the oldest waiting request *and every request queued behind it* (up to
    ``MAX_RECORDS_PER_TRANSACTION`` records) into one transaction: under light load every
    request gets its own transaction at once; under heavy load the commit round trip is
    shared instead of serialising requests behind it. A request is still all-or-nothing,
    since the transaction holding it is; if that transaction fails, every request in it fails.
    """

    #: Records one transaction may gather from queued requests (a larger request runs alone).
    MAX_RECORDS_PER_TRANSACTION: Final = 5000

    def __init__(
        self,
        settings: PlatformSettings,
        service: str,
        serde: AvroSerde,
        *,
        transactional_ids: Sequence[str],
        side_producer: EventProducer,
        timeout_s: float,
        on_emit_failure: FailureReport | None = None,
    ) -> None:
        self.service = service
        self.side_producer = side_producer
        self.timeout_s = timeout_s
        self.on_emit_failure = on_emit_failure
        self._members = [_TransactionalMember(settings, service, serde, tid) for tid in transactional_ids]
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()  # orders "enqueue a request" against "enqueue the stop"
        self._workers = [
            threading.Thread(target=self._work, args=(member,), name=f"txn-{index}", daemon=True)
            for index, member in enumerate(self._members)
        ]
        for worker in self._workers:
            worker.start()

    async def publish(self, outputs: Sequence[Output]) -> None:
        # Encoding may wait on the registry (first use of a subject): off the event loop.
        pending = _Pending(await asyncio.to_thread(encode_all, self.side_producer, outputs))
        with self._lock:
            if self._closed:
                raise KafkaUnavailable("the service is shutting down")
            self._queue.put(pending)
        # Every step of a transaction is bounded by the publish timeout, so this resolves.
        await asyncio.wrap_future(pending.done)

    def _take(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` plus the requests queued behind it; True when shutdown was requested."""
        group, records, stop = [first], len(first.records), False
        while records < self.MAX_RECORDS_PER_TRANSACTION:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            group.append(item)
            records += len(item.records)
        # A request whose caller went away before its transaction started is skipped;
        # once running it can no longer be cancelled, so its outcome is always settled.
        return [p for p in group if p.done.set_running_or_notify_cancel()], stop

    def _work(self, member: _TransactionalMember) -> None:
        # A new thread starts with an empty logging context: name the service again.
        structlog.contextvars.bind_contextvars(service=self.service)
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            group, stop = self._take(first)
            if not group:
                continue
            try:
                member.run([record for pending in group for record in pending.records], self.timeout_s)
            except BaseException as exc:
                for pending in group:
                    pending.done.set_exception(exc)
            else:
                for pending in group:
                    pending.done.set_result(None)
        member.close(self.timeout_s)

    def emit(self, outputs: Sequence[Output]) -> None:
        self.side_producer.emit_best_effort(outputs, self.on_emit_failure)

    def close(self) -> None:
        """Finish the queued requests, then stop the workers and their producers."""
        with self._lock:
            self._closed = True
            for _ in self._workers:
                self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=self.timeout_s * 4)
