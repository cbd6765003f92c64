"""Offset bookkeeping of the recommender's Faust consumer, correct for transactional input.

Topics written by transactional producers hold a control record (commit or abort marker)
after every transaction. It occupies an offset but is never delivered, so the offsets a
consumer sees have gaps. faust-streaming 0.15 mishandles them in two ways:

* ``Consumer._drain_messages`` calls ``_add_gap(tp, last_read + 1, offset)`` with the offset
  of the record it is *about to deliver*, and ``_add_gap`` stores the interval up to and
  including ``offset_to``. Once that record is acked its offset is in the acked list twice
  (once from the gap, once from the ack), and ``_new_offset`` only commits the first run of
  consecutive numbers: every duplicate ends a run. A commit then moves past one transaction
  while dozens arrive, the acked list grows without bound, and the committed offset trails
  further and further (upstream: faust-streaming/faust#606 "Wrong offset commit in case of
  gaps"; the duplicates are described in robinhood/faust#559). The gap also covers a record
  that is not processed yet, which an agent with concurrency > 1 would commit past.
* A partition whose last record is followed by a marker is never committed past it: the
  commit stops at the marker's offset, one short of the end, so the group's lag never
  reaches zero and every restart re-fetches from there. Kafka Streams commits the
  consumer's position for the same reason (KAFKA-6607, apache/kafka#8040).

:class:`MarkerAwareConsumer` fixes both: a gap holds only the offsets that were skipped,
and when everything the fetcher returned for a partition was delivered and acked, the
commit moves on to the fetcher's position (past the trailing markers, which it skipped).
It never commits past a record that was returned but not yet acked.

A third one is guarded against: Faust's own commit (``_new_offset``) accepts acked offsets
that start one past the committed offset, so a record at the committed offset that was
delivered but never acked (dropped from a stream queue when the flow resumes, see
:mod:`recommender.recovery`) is committed past by the records after it. The consumer
keeps the offsets the fetcher returned until a stream acks them, and a commit never passes
the oldest of them: such a record holds the partition's commit (the lag shows it, and a
warning names it) and is processed again after the next restart or rebalance instead of
being lost.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from mlops_platform.logs import get_logger
from recommender.metrics import recommender_metrics

log = get_logger(__name__)


class ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The thread running the aiokafka consumer, reading only committed transactions.

    Faust reads ``read_committed`` only when its own processing is exactly once; outside
    that it would hand the stream the records of transactions that were aborted (ingest
    killed in the middle of one, whose client then sends the event again) or are still open.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands the isolation level to its fetcher when the consumer starts.
        consumer._isolation_level = "read_committed"
        return consumer


class MarkerAwareConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with gap handling fixed for transaction markers (see module doc).

    It reads committed transactions only (:class:`ReadCommittedConsumerThread`); the records
    of aborted ones are skipped like the markers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_marker_bookkeeping()

    def _init_marker_bookkeeping(self) -> None:
        # Offset of the last record the fetcher handed over per partition. Read and written
        # on the app's event loop only, and kept across rebalances: a stale value only holds
        # the position back (until records are fetched again), never lets it run ahead.
        self._returned: dict[TP, int] = {}
        # The fetcher's position per partition as it was when the last fetch returned: past
        # the records returned then and the markers it skipped. (Read while a fetch is under
        # way, the position may already count records not handed over yet; an idle consumer
        # is inside a fetch most of the time, waiting for records.)
        self._fetched_to: dict[TP, int] = {}
        # A fetch was abandoned (cancelled or failed): records may have advanced the position
        # without ever being handed over, so no commit follows the position until the next
        # assignment.
        self._position_unsure = False
        # Offsets the fetcher returned that no stream had acked at the last commit, per
        # partition (acked partitions only): a commit never passes the oldest.
        self._unacked: defaultdict[TP, set[int]] = defaultdict(set)
        # The (partition, offset) a held commit was last reported for: one warning each.
        self._held_reported: dict[TP, int] = {}
        # Offsets the broker accepted, per partition (what the group's lag is measured from).
        self.broker_committed: dict[TP, int] = {}

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # ------------------------------------------------------------------ gaps

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the record being delivered as ``offset_to`` and stores
        # the interval including it (faust-streaming/faust#606): keep only the skipped offsets.
        await super()._add_gap(tp, offset_from, offset_to - 1)

    def _new_offset(self, tp: TP) -> int | None:
        unacked = self._unacked.get(tp)
        if unacked:
            # Acked since they were returned. (Read here rather than in ``ack``: Faust's
            # compiled stream iterator acks without calling it; the acked index keeps an
            # offset until the commit below takes it.)
            unacked.difference_update(self._acked_index.get(tp, ()))
        offset = super()._new_offset(tp)
        position = self._position_past_markers(tp, offset)
        return self._held_back(tp, offset if position is None else position)

    def _held_back(self, tp: TP, offset: int | None) -> int | None:
        """``offset``, or the oldest returned record no stream acked when it is below it."""
        unacked = self._unacked.get(tp)
        if offset is None or not unacked:
            return offset
        committed = self._committed_offset.get(tp)
        if committed is not None:
            # Below the committed offset: acked before and returned again after a seek.
            unacked.difference_update([pending for pending in unacked if pending < committed])
        oldest = min(unacked, default=None)
        if oldest is None or offset <= oldest:
            return offset
        if not self._in_flight(tp, oldest) and self._held_reported.get(tp) != oldest:
            self._held_reported[tp] = oldest
            log.warning(
                "commit_held_by_unprocessed_record",
                topic=tp.topic,
                partition=tp.partition,
                offset=oldest,
                acked_up_to=offset,
                reason=(
                    "returned by the fetcher but never acked by a stream; "
                    "processed after the next restart or rebalance"
                ),
            )
        return oldest

    def _in_flight(self, tp: TP, offset: int) -> bool:
        """Whether the record at ``offset`` is still on its way through a stream."""
        return any(message.tp == tp and message.offset == offset for message in list(self._unacked_messages))

    def note_returned(self, tp: TP, offsets: Iterable[int]) -> None:
        """Remember the records the fetcher returned for ``tp`` until a stream acks them."""
        if not self._acks_enabled(tp):
            return
        committed = self._committed_offset.get(tp)
        acked = self._acked_index.get(tp, ())
        self._unacked[tp].update(
            offset for offset in offsets if (committed is None or offset >= committed) and offset not in acked
        )

    def _position_past_markers(self, tp: TP, offset: int | None) -> int | None:
        """The fetcher's position when it is past only undelivered offsets (markers), else None.

        ``offset`` is what the acks allow committing (None: nothing new). The position
        counts when every record the fetcher returned for ``tp`` was acked and is covered
        by the commit, and no acked offset is left behind a gap: the offsets between the
        last record returned and the position are then ones the fetcher skipped (control
        records), which stays true whatever happened since (a log does not change).
        """
        if self._position_unsure or self._acked.get(tp):
            return None
        if not self._acks_enabled(tp):
            return None  # changelog partitions: their offsets are not the group's business
        base = offset if offset is not None else self._committed_offset.get(tp)
        if base is None:
            return None
        returned = self._returned.get(tp)
        if returned is not None and base != returned + 1:
            return None
        position = self._fetched_to.get(tp)
        if position is None or position <= base:
            return None
        return position

    def _acks_enabled(self, tp: TP) -> bool:
        return bool(self.app.topics.acks_enabled_for(tp.topic))

    def _fetch_position(self, tp: TP) -> int | None:
        """The aiokafka fetcher's position of ``tp`` (None: not assigned or not known yet).

        Read without a call into the consumer thread, right after a fetch returned: the
        position moves while a fetch runs (or when the partition is assigned again).
        """
        consumer = self._thread._consumer
        if consumer is None:
            return None
        subscription = consumer._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        state = assignment.state_value(tp) if assignment is not None else None
        if state is None or not state.has_valid_position:
            return None
        return int(state.position)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        # Also the partitions that were assigned at a marker and received nothing since:
        # their position may be past it.
        tps = set(super()._filter_tps_with_pending_acks(topics))
        for tp, committed in list(self._committed_offset.items()):
            if committed is not None and (topics is None or tp in topics or tp.topic in topics):
                tps.add(tp)
        return iter(tps)

    # ------------------------------------------------------------------ fetches and assignment

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # A copy: Faust hands over its live set of active partitions, which the fetch in the
        # consumer thread reads again whenever data arrives. When the last active partition
        # is paused meanwhile (the changelogs once a restore is done) the set is empty, and
        # aiokafka takes an empty set for "every partition": the stream partitions' records
        # come back, Faust drops them as not active, and the fetch position has moved past
        # them.
        partitions = set(active_partitions) if active_partitions is not None else None
        try:
            records = await super()._getmany(partitions, timeout)
        except BaseException:
            self._position_unsure = True
            raise
        # Synchronously, before anything else runs on this loop (the next fetch is only
        # started by the fetch loop, once it handed these records over).
        for tp, batch in records.items():
            if batch:
                self._returned[tp] = int(batch[-1].offset)
                self.note_returned(tp, (int(record.offset) for record in batch))
        for tp in partitions if partitions is not None else self.assignment():
            position = self._fetch_position(tp)
            if position is not None:
                self._fetched_to[tp] = position
        return records

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # Where the group stands on the broker when partitions are (re)assigned.
        self.broker_committed.update(
            {tp: offset for tp, offset in self._committed_offset.items() if offset is not None}
        )

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self.broker_committed.pop(tp, None)
            self._unacked.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # Partitions get new fetch states (their position restarts at the committed offset,
        # and whatever was returned before is fetched again).
        self._position_unsure = False
        for tp in assigned:
            self._unacked.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    # ------------------------------------------------------------------ commits

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        # Timed: the flush before the commit waits for every queued table write.
        started = time.perf_counter()
        try:
            return await super()._commit_tps(tps, start_new_transaction)
        finally:
            recommender_metrics().commit_seconds.observe(time.perf_counter() - started)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        committed = await super()._commit(offsets)
        if committed:
            assigned = self.assignment()
            self.broker_committed.update({tp: offset for tp, offset in offsets.items() if tp in assigned})
        return committed


class MarkerAwareTransport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer is :class:`MarkerAwareConsumer`."""

    Consumer = MarkerAwareConsumer
