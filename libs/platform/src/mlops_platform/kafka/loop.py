"""The one consume → handle → produce loop every consuming service runs.

Each poll is a checkpoint. The handler receives the batch's decoded records and an
:class:`~mlops_platform.kafka.Outbox` for what it produces; the loop owns those
outputs and confirms them before the input offsets move:

- ``Guarantee.AT_LEAST_ONCE``: the outbox (outputs and dead letters) is delivered and
  acknowledged, then the offsets are committed. A crash in between replays the batch.
- ``Guarantee.EXACTLY_ONCE``: outputs, dead letters and the consumed offsets are one
  Kafka transaction (``send_offsets_to_transaction``). A crash aborts it; read_committed
  readers never see partial output and the batch is consumed again. With
  ``commit_max_records`` / ``commit_interval_s`` a transaction spans several polls while
  a backlog is drained (committed once it holds that many records or is that old, or as
  soon as a poll comes back short, i.e. the loop caught up): a commit costs several
  broker round trips, so at saturation fewer, larger transactions carry more events per
  second, and a flowing stream below capacity still commits every poll. Partitions about
  to be revoked commit the open transaction first. Whether a poll closes its transaction
  is known as soon as it is polled, so the offsets go to the transaction
  (``send_offsets_to_transaction``, two coordinator round trips) while the handler works
  on the poll, not after it: a stream below capacity waits for the commit only. Right
  after a commit the coordinator still completes it and refuses the same transactional
  id's next transaction for a moment: several producers taking turns avoid that, and a
  single one (in a loop without checkpointed state) produces a new transaction's outputs
  only once its offsets are in (``StreamLoop._next_turn``, ``StreamLoop._await_coordinator``).

A **stateful** handler (its owner implements :class:`~mlops_platform.kafka.state.Stateful`,
``state=...``, ``state_topic=...``; exactly-once only) has its state checkpointed with
every transaction: the snapshot goes to a compacted state topic in the same transaction
as the outputs and the input offsets, an abort restores the last committed snapshot
(the handler absorbed records that are consumed again), and the loop restores its
latest snapshot before it consumes. Snapshots cost more than offsets, so a stateful
loop commits at most every ``state_interval_s`` (and on stop or revocation), not on
every short poll. A failing batch cannot simply be re-run record by record there (the
handler already absorbed the records before the failing one): the transaction is
aborted, the state restored, and the batch's records are handled one at a time when
they come again. See :mod:`mlops_platform.kafka.state`.

A record that cannot be decoded, or that makes the handler raise, goes to the
service's dead-letter topic with the reason in its headers: a failed batch is replayed
one record at a time so only the records that really fail are dead-lettered.
Transient failures (:class:`RetryableError`, the registry or Kafka unavailable) drop
the batch's outputs, rewind, and retry after a back-off: nothing is lost or skipped.
On stop (SIGTERM) the loop finishes the batch at hand, commits, and closes.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaException, Message

from mlops_platform.bindings import Binding
from mlops_platform.errors import (
    KafkaUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
    SerializationError,
)
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

from .consumer import GroupConsumer, Record, StopSignal, next_offsets
from .dead_letters import DeadLetters
from .producer import EventProducer, Outbox, kafka_error
from .state import Stateful, StateTopic, state_key

log = get_logger(__name__)

Handler = Callable[[list[Record], Outbox], None]


class Guarantee(StrEnum):
    """What a loop promises about its outputs relative to its inputs."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class RetryableError(Exception):
    """Raised by a handler when the failure is transient (a dependency is down).

    The loop neither commits nor dead-letters: it rewinds to the batch start and
    tries again after a back-off, so no record is lost or skipped.
    """


_TRANSIENT = (RetryableError, SchemaRegistryUnavailable, KafkaUnavailable, PublishError)


class _Retry(Exception):
    pass


class _WedgedProducer(Exception):
    """A transactional producer call outlived its deadline (the client is stuck)."""


class _Isolate(Exception):
    """A stateful handler failed on a batch: abort, restore, and handle those records one by one."""

    def __init__(self, records: Sequence[Record]) -> None:
        super().__init__(f"{len(records)} records to isolate")
        self.last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            self.last[key] = max(self.last.get(key, -1), record.offset)


class _OffsetsCall:
    """``send_offsets_to_transaction`` running in a helper thread, with a deadline the client cannot ignore.

    librdkafka may block in this call past its timeout, for good, when the group
    coordinator's broker was dropped from the metadata while it was down (a single
    broker restarted): it keeps waiting on the stale coordinator (confluentinc/librdkafka
    #5456, #5511). A call that does not return in time leaves the producer wedged, and
    the loop replaces it, with the other producers of its turn. Running in a thread also
    lets the loop handle the batch while the offsets travel to the coordinator.
    """

    def __init__(
        self, service: str, producer: Any, offsets: list[Any], metadata: Any, timeout_s: float
    ) -> None:
        self.timeout_s = timeout_s
        self._error: BaseException | None = None
        self._finished = threading.Event()

        def call() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, timeout_s)
            except BaseException as exc:  # handed to the loop thread by result()
                self._error = exc
            finally:
                self._finished.set()

        threading.Thread(target=call, name=f"{service}-send-offsets", daemon=True).start()

    def result(self, grace_s: float) -> None:
        """Wait for the call; raises its error, or ``_WedgedProducer`` past timeout + grace."""
        if not self._finished.wait(self.timeout_s + grace_s):
            raise _WedgedProducer(f"send_offsets_to_transaction did not return within {self.timeout_s:.0f}s")
        if self._error is not None:
            raise self._error


class _OpenTransaction:
    """An exactly-once loop's transaction in progress: the polls it holds and what it produced."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.messages: list[Message] = []
        self.produced: Counter[str] = Counter()


class StreamLoop:
    """A consumer-group member that hands batches to a handler and checkpoints its outputs.

    ``producer`` (at-least-once only) lets loops share the service's idempotent
    producer; an exactly-once loop always owns a transactional producer
    (``transactional_id``, stable per instance so a restart fences its predecessor).
    ``transactional_producers`` > 1 gives it that many, taking turns transaction by
    transaction (ids ``<transactional_id>``, ``<transactional_id>-1`` ...): a
    transaction then never waits for the coordinator to finish the one before it.
    """

    def __init__(
        self,
        *,
        settings: PlatformSettings,
        service: str,
        group_id: str,
        inputs: Sequence[Binding],
        handler: Handler,
        serde: AvroSerde,
        guarantee: Guarantee = Guarantee.AT_LEAST_ONCE,
        producer: EventProducer | None = None,
        transactional_id: str | None = None,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        retry_backoff_s: float = 2.0,
        dead_letter_topic: str | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
        stop: StopSignal | None = None,
        commit_max_records: int | None = None,
        commit_interval_s: float = 0.0,
        state: Stateful | None = None,
        state_topic: str | None = None,
        state_interval_s: float = 5.0,
        instance_id: str | None = None,
        transactional_producers: int = 1,
    ) -> None:
        self.settings = settings
        self.service = service
        self.handler = handler
        self.guarantee = Guarantee(guarantee)
        self.retry_backoff_s = retry_backoff_s
        self.stop_signal = stop or StopSignal()
        self.metrics = platform_metrics()
        self.consumer = GroupConsumer(
            settings,
            service=service,
            group_id=group_id,
            inputs=inputs,
            serde=serde,
            batch_size=batch_size,
            poll_timeout_s=poll_timeout_s,
            overrides=consumer_overrides,
        )
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            if not transactional_id:
                raise ValueError("an exactly-once loop needs a transactional_id")
            if transactional_producers < 1:
                raise ValueError("transactional_producers must be at least 1")
            # Right after a commit the coordinator answers the next transaction with
            # CONCURRENT_TRANSACTIONS; librdkafka's default 100 ms retry back-off would
            # then cap a loop at about ten transactions a second.
            transactional_overrides = {"retry.backoff.ms": 5, **dict(producer_overrides or {})}
            # Producers taking turns (see ``_next_turn``); the first keeps the plain id.
            self._transactional_ids = [transactional_id] + [
                f"{transactional_id}-{turn}" for turn in range(1, transactional_producers)
            ]

            def transactional_producer(turn: int) -> EventProducer:
                """A new producer with the transactional id of ``turn``."""
                return EventProducer(
                    settings,
                    service,
                    serde,
                    transactional_id=self._transactional_ids[turn],
                    **transactional_overrides,
                )

            self._new_transactional_producer = transactional_producer
            self._turn = 0
            self._producers: list[EventProducer] = [
                transactional_producer(turn) for turn in range(transactional_producers)
            ]
            self.producer = self._producers[0]
            self._owns_producer = True
        else:
            self.producer = producer or EventProducer(
                settings, service, serde, **dict(producer_overrides or {})
            )
            self._producers = [self.producer]
            self._turn = 0
            self._owns_producer = producer is None
        self.dead_letters = DeadLetters(service, dead_letter_topic)
        self.batch_size = batch_size
        # Exactly-once only: how large / old a transaction may grow over several polls.
        self.commit_max_records = max(commit_max_records or batch_size, 1)
        self.commit_interval_s = commit_interval_s
        self._open: _OpenTransaction | None = None
        # Stateful handlers: snapshots committed with the offsets (see the module docstring).
        self.state = state
        self.state_interval_s = state_interval_s
        self.state_topic: StateTopic | None = None
        self._committed_state: bytes | None = None
        self._isolate: dict[tuple[str, int], int] = {}
        if state is not None:
            if self.guarantee is not Guarantee.EXACTLY_ONCE:
                raise ValueError("checkpointed state needs an exactly-once loop")
            if not state_topic:
                raise ValueError("a stateful loop needs a state_topic")
            instance = instance_id or getattr(settings, "instance_id", None)
            if not instance:
                raise ValueError("a stateful loop needs an instance_id (its snapshots' key)")
            if state_interval_s <= 0:
                raise ValueError("state_interval_s must be positive")
            self.state_topic = StateTopic(settings, state_topic, state_key(group_id, str(instance)))
        self.checkpoints = 0
        # How long past the client's own timeout a transactional call may block before the
        # loop replaces the producer (see ``_OffsetsCall``).
        self.wedged_grace_s = 5.0
        self.producer_replacements = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._kafka_timeout_s = settings.request_timeout_s * 6
        # Offsets normally reach the coordinator in milliseconds. A call this late is most
        # likely wedged (see ``_OffsetsCall``), and each second waited is a second nothing is
        # scored after a broker restart; replacing a producer that was only slow costs a
        # fenced transaction consumed again, never a duplicate.
        self._offsets_timeout_s = settings.request_timeout_s * 2

    # ------------------------------------------------------------------ lifecycle

    @property
    def group_id(self) -> str:
        return self.consumer.group_id

    @property
    def topics(self) -> list[str]:
        return self.consumer.topics

    @property
    def transactions_committed(self) -> int:
        """Checkpoints committed (transactions, for an exactly-once loop)."""
        return self.checkpoints

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close."""
        self.stop_signal.set()

    def start_in_thread(self) -> threading.Thread:
        """Run the loop in a daemon thread (for services whose main thread serves HTTP)."""
        self._thread = threading.Thread(target=self._run_guarded, name=f"{self.service}-loop", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def lag(self) -> int:
        """Total lag over the assignment as last measured by the loop (-1 before the first report)."""
        return self.consumer.lag_total

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # the owner decides what a dead loop means (readiness fails)
            self.error = exc
            log.error("stream_loop_crashed", error=repr(exc), traceback=traceback.format_exc())

    def run(self) -> None:
        """Consume until stopped (blocking)."""
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            # Fences a predecessor with our transactional ids and aborts its open
            # transactions, so the state read next is the last one really committed.
            for producer in self._producers:
                producer.raw.init_transactions(self._kafka_timeout_s)
        if self.state is not None and self.state_topic is not None:
            self.state_topic.ensure()
            self._committed_state = self.state_topic.load(self.group_id)
            self.state.restore(self._committed_state)
        self.consumer.subscribe(on_revoke=self._before_revoke, on_lost=self._on_lost)
        self.ready.set()
        log.info(
            "stream_loop_started", group=self.group_id, topics=self.topics, guarantee=self.guarantee.value
        )
        try:
            while not self.stop_signal.is_set():
                messages = self.consumer.poll()
                self.consumer.report_lag()
                if messages:
                    self._checkpoint(messages)
                elif self._open is not None and self._idle_commit_due():
                    self._commit_open()
            if self._open is not None:
                self._commit_open()
        finally:
            if self._owns_producer:
                self._producers[self._turn] = self.producer
                for producer in self._producers:
                    producer.flush()
            self.consumer.close()
            log.info("stream_loop_stopped", group=self.group_id)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            self._add_to_transaction(messages, started)
            return
        if self._checkpoint_acknowledged(messages):
            self._count_done(messages, time.perf_counter() - started)

    def _count_done(self, messages: Sequence[Message], seconds: float) -> None:
        self.checkpoints += 1
        # One labelled increment per topic, not one per record.
        for topic, count in Counter(msg.topic() or "" for msg in messages).items():
            self.metrics.events_consumed.labels(self.service, topic).inc(count)
        self.metrics.processing_seconds.labels(self.service, messages[0].topic() or "").observe(seconds)

    def _checkpoint_acknowledged(self, messages: list[Message]) -> bool:
        outbox = Outbox(self.producer)
        try:
            self._handle(messages, outbox)
            outbox.deliver(self._kafka_timeout_s)
        except (_Retry, *_TRANSIENT) as exc:
            outbox.discard()
            log.warning("batch_retrying", error=str(exc), size=len(messages))
            self.consumer.rewind(messages)
            self.stop_signal.wait(self.retry_backoff_s)
            return False
        try:
            self.consumer.commit(messages)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.fatal():
                raise
            # Outputs are stored; replaying the batch after a failed commit is the at-least-once contract.
            log.warning("commit_failed_replaying", error=str(exc))
            self.consumer.rewind_to_committed()
            return False
        return True

    def _add_to_transaction(self, messages: list[Message], started: float) -> None:
        """Handle a poll inside the open transaction (begun here if none is); commit when due."""
        producer = self.producer.raw
        # A single producer's new transaction waits for the coordinator (see
        # ``_await_coordinator``); a stateful loop's does not: its commits are seconds apart,
        # and its handler may read its group's committed offsets, which Kafka holds back
        # while the group has offsets pending in an open transaction.
        awaits_coordinator = self._open is None and len(self._producers) == 1 and self.state is None
        if self._open is None:
            producer.begin_transaction()
            self._open = _OpenTransaction(started)
        due = self._commit_due(messages) or self.stop_signal.is_set()
        # The offsets this commit will carry are known before the handler runs. (A transaction
        # that waits for the coordinator sends its first poll's offsets at once even if it
        # grows; the commit then sends them again.) Not a stateful loop's: its handler may
        # read the group's committed offsets, which the broker refuses
        # (UNSTABLE_OFFSET_COMMIT, retried until the timeout) while this very transaction
        # has offsets of the group pending; its commit sends them, after the handler.
        early = (due and self.state is None) or awaits_coordinator
        offsets = self._start_send_offsets(producer, [*self._open.messages, *messages]) if early else None
        outbox = Outbox(self.producer)
        try:
            self._handle(messages, outbox)
            if awaits_coordinator:
                self._await_coordinator(offsets)
            self._open.produced.update(outbox.send())
        except (_Retry, *_TRANSIENT) as exc:
            outbox.discard()
            if self._settle(offsets):
                self._abort_and_rewind(f"transient failure: {exc}")
                self.stop_signal.wait(self.retry_backoff_s)
            return
        except KafkaException as exc:
            outbox.discard()
            if self._settle(offsets):
                self._fail_transaction(exc)
            return
        except _Isolate as isolate:
            outbox.discard()
            self._isolate.update(isolate.last)
            if self._settle(offsets):
                self._abort_and_rewind("a batch failed: its records are handled one by one")
            return
        except _WedgedProducer as exc:
            outbox.discard()
            self._replace_wedged_producers(str(exc))
            return
        except BaseException:
            self._settle(offsets)
            raise
        self._open.messages.extend(messages)
        if due or self.stop_signal.is_set():
            self._commit_open(offsets)

    def _await_coordinator(self, offsets: _OffsetsCall | None) -> None:
        """Hold a single producer's new transaction's outputs until the coordinator took its offsets.

        Right after a commit the coordinator is still completing it (writing the markers)
        and answers the same transactional id's next requests CONCURRENT_TRANSACTIONS.
        librdkafka retries AddOffsetsToTxn after ``retry.backoff.ms`` (a millisecond or
        two here) but AddPartitionsToTxn, which the first produced record triggers, after
        a fixed 20 ms: on back-to-back transactions about one in fifteen paid those 20 ms.
        Once the offsets are in, the previous commit is complete and the partitions
        register at the first try. Producers taking turns (``transactional_producers`` > 1)
        are not refused in the first place, and produce at once: waiting would stall the
        loop thread for two round trips per transaction.
        Raises the offsets call's error (the caller aborts) or ``_WedgedProducer``.
        """
        if offsets is not None:
            offsets.result(self.wedged_grace_s)

    def _commit_due(self, messages: list[Message]) -> bool:
        """Whether the open transaction commits once this poll is handled."""
        assert self._open is not None
        age = time.perf_counter() - self._open.started
        if self.state is not None:
            # Each commit writes a snapshot: bounded by time, not by polls or records.
            return age >= self.state_interval_s
        caught_up = len(messages) < self.batch_size
        return (
            caught_up
            or len(self._open.messages) + len(messages) >= self.commit_max_records
            or age >= self.commit_interval_s
        )

    def _settle(self, offsets: _OffsetsCall | None) -> bool:
        """Let an early offsets call finish before the transaction is aborted.

        Its outcome no longer matters (the abort drops the offsets too), but an abort
        must not race it. False: the call wedged the producer, which was replaced.
        """
        if offsets is None:
            return True
        try:
            offsets.result(self.wedged_grace_s)
        except _WedgedProducer as exc:
            self._replace_wedged_producers(str(exc))
            return False
        except KafkaException:
            pass
        return True

    def _idle_commit_due(self) -> bool:
        """An empty poll with a transaction open: commit now (stateful loops: once it is old enough)."""
        if self.state is None or self._open is None:
            return True
        return time.perf_counter() - self._open.started >= self.state_interval_s

    def _commit_open(self, offsets: _OffsetsCall | None = None) -> bool:
        """Commit the open transaction: its outputs with the offsets of every poll it holds.

        ``offsets``: the offsets call already started for exactly these polls.
        """
        txn, producer = self._open, self.producer.raw
        if txn is None:
            return True
        try:
            if self.state is not None and self.state_topic is not None:
                self.state_topic.write(producer, self.state.snapshot())
            if offsets is None and txn.messages:
                offsets = self._start_send_offsets(producer, txn.messages)
            if offsets is not None:
                offsets.result(self.wedged_grace_s)
            producer.commit_transaction(self._kafka_timeout_s)
        except KafkaException as exc:
            self._fail_transaction(exc)
            return False
        except _WedgedProducer as exc:
            self._replace_wedged_producers(str(exc))
            return False
        self._open = None
        self._next_turn()
        if self.state_topic is not None:
            self.state_topic.committed()
            self._committed_state = self.state_topic.last_written
        if txn.messages:
            for topic, count in txn.produced.items():
                self.metrics.events_produced.labels(self.service, topic).inc(count)
            self._count_done(txn.messages, time.perf_counter() - txn.started)
        return True

    def _next_turn(self) -> None:
        """After a commit, the next transaction goes to the next producer of the turn.

        The coordinator completes a commit (writes its markers) after answering it, and
        until then refuses the same transactional id's next transaction
        (CONCURRENT_TRANSACTIONS, retried): a producer whose last commit finished a
        transaction earlier is not refused. Commits stay in poll order, since the loop
        commits one transaction before it begins the next, so committed offsets only
        move forward (the group coordinator keeps the latest TxnOffsetCommit).
        """
        if len(self._producers) == 1:
            return
        self._producers[self._turn] = self.producer
        self._turn = (self._turn + 1) % len(self._producers)
        self.producer = self._producers[self._turn]

    def _start_send_offsets(self, producer: Any, messages: Sequence[Message]) -> _OffsetsCall:
        """Start adding the offsets after ``messages`` to the open transaction."""
        return _OffsetsCall(
            self.service,
            producer,
            next_offsets(messages),
            self.consumer.kafka.consumer_group_metadata(),
            self._offsets_timeout_s,
        )

    def _replace_wedged_producers(self, reason: str) -> None:
        """Give up the stuck producer, and the others of the turn with it: new ones fence them.

        The cause, a group coordinator that went stale while its broker was down, is in
        every producer that was connected then: left alone, the others would wedge too,
        one after the other at their next turn, each after the whole deadline (a broker
        restart stalled the loop once per producer). The others are idle (one transaction
        is open at a time), so replacing them costs an ``init_transactions`` each.
        ``init_transactions`` of a new producer aborts the stuck one's open transaction
        at the coordinator, so nothing of it becomes visible; its records are consumed
        again from the committed offsets. The old producers are only dropped, not
        closed: closing would wait on the same stale coordinator.
        """
        log.error("transactional_producer_wedged", reason=reason, group=self.group_id)
        self.producer_replacements += 1
        self._open = None
        self._producers = [self._new_transactional_producer(turn) for turn in range(len(self._producers))]
        self.producer = self._producers[self._turn]
        for producer in self._producers:
            producer.raw.init_transactions(self._kafka_timeout_s)
        if self.state is not None:
            self.state.restore(self._committed_state)
        self.consumer.rewind_to_committed()

    def _fail_transaction(self, exc: KafkaException) -> None:
        error = kafka_error(exc)
        if error is not None and error.fatal():
            self._open = None
            raise exc  # fenced by a newer instance with our transactional.id: stop
        self._abort_and_rewind(f"kafka error: {exc}")

    def _before_revoke(self, _partitions: Sequence[Any]) -> None:
        # The open transaction holds outputs of partitions about to move: commit them
        # while this member still owns them (a failed commit aborts and rewinds).
        if self._open is not None:
            self._commit_open()

    def _on_lost(self, _partitions: Sequence[Any]) -> None:
        # Another member may already own them: the open transaction must not commit.
        if self._open is not None:
            self._abort_and_rewind("partitions lost")

    def _abort_and_rewind(self, reason: str) -> None:
        self._open = None
        log.warning("transaction_aborted", reason=reason)
        try:
            self.producer.raw.abort_transaction(self._kafka_timeout_s)
        except KafkaException as exc:
            log.warning("abort_failed", error=str(exc))
        if self.state is not None:
            # The handler absorbed the aborted records; they are consumed again.
            self.state.restore(self._committed_state)
        self.consumer.rewind_to_committed()

    # ------------------------------------------------------------------ handling

    def _handle(self, messages: list[Message], outbox: Outbox) -> None:
        """Decode, handle, isolate failures; raises ``_Retry`` on a transient failure."""
        records: list[Record] = []
        for msg in messages:
            try:
                records.append(self.consumer.decode(msg))
            except SchemaRegistryUnavailable as exc:
                raise _Retry(str(exc)) from exc
            except SerializationError as exc:
                self.dead_letters.route(outbox, msg, exc, stage="deserialize")
        if not records:
            return
        if not self._isolated(records):
            mark = outbox.mark()
            try:
                self.handler(records, outbox)
                return
            except _TRANSIENT as exc:
                raise _Retry(str(exc)) from exc
            except Exception as batch_error:
                outbox.rollback(mark)
                if len(records) == 1:
                    self._dead_letter(outbox, records[0], batch_error)
                    return
                log.warning("batch_failed_isolating", error=repr(batch_error), size=len(records))
                if self.state is not None:
                    raise _Isolate(records) from batch_error
        for record in records:
            mark = outbox.mark()
            try:
                with bind_event(record.envelope):
                    self.handler([record], outbox)
            except _TRANSIENT as exc:
                raise _Retry(str(exc)) from exc
            except Exception as exc:
                outbox.rollback(mark)
                self._dead_letter(outbox, record, exc)

    def _isolated(self, records: Sequence[Record]) -> bool:
        """True when a record of the batch failed in a batch before (stateful loops): one at a time."""
        if not self._isolate:
            return False
        hit = False
        for record in records:
            key = (record.topic, record.partition)
            last = self._isolate.get(key)
            if last is None:
                continue
            hit = hit or record.offset <= last
            if record.offset >= last:
                del self._isolate[key]
        return hit

    def _dead_letter(self, outbox: Outbox, record: Record, error: BaseException) -> None:
        assert record.message is not None
        self.dead_letters.route(outbox, record.message, error, stage="process")
