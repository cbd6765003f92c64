"""The recommender consumer's offset bookkeeping on input with transaction markers, without a broker.

:class:`Partition` plays the part of Faust's fetch loop and agents for one partition: it
hands records over the way ``Consumer._drain_messages`` does (a gap is recorded when the
delivered offset jumps), acks them the way ``Consumer.ack`` does, and commits the way the
commit timer does (``_new_offset`` then ``_should_commit``). The fetcher's position is what
aiokafka reports after skipping control records.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from weakref import WeakSet

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree

from recommender.config import Settings
from recommender.offsets import MarkerAwareConsumer
from recommender.recovery import SeekFirstRecovery
from recommender.service import build_faust_app

TOPIC_PARTITION = TP("business.user.interaction", 0)


class Record:
    """What ``Consumer.ack`` reads of a message."""

    def __init__(self, tp: TP, offset: int) -> None:
        self.tp = tp
        self.topic = tp.topic
        self.offset = offset
        self.acked = False


class Partition:
    """One partition of a transactional topic, consumed by a :class:`MarkerAwareConsumer`."""

    def __init__(self, consumer: MarkerAwareConsumer | None = None) -> None:
        consumer = consumer or MarkerAwareConsumer.__new__(MarkerAwareConsumer)
        consumer._gap = defaultdict(IntervalTree)
        consumer._acked = defaultdict(list)
        consumer._acked_index = defaultdict(set)
        consumer._read_offset = defaultdict(lambda: None)
        consumer._committed_offset = defaultdict(lambda: None)
        consumer._unacked_messages = WeakSet()
        consumer._n_acked = 0
        consumer._init_marker_bookkeeping()
        consumer.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        consumer._acks_enabled = lambda tp: True  # type: ignore[method-assign]
        consumer._fetch_position = lambda tp: self.position  # type: ignore[method-assign]
        self.consumer = consumer
        self.tp = TOPIC_PARTITION
        self.end = 0  # the log end offset
        self.position = 0  # the fetcher's position: past the records returned and the markers after them
        self.records: list[int] = []  # offsets of the records (not the markers), in order

    def transaction(self, records: int = 1) -> list[int]:
        """Append a committed transaction: its records, then its commit marker."""
        offsets = list(range(self.end, self.end + records))
        self.records.extend(offsets)
        self.end += records + 1
        return offsets

    def fetch(self, *offsets: int, past_markers: bool = True) -> None:
        """The fetcher returns these records (and skips the markers after them)."""
        self.consumer._returned[self.tp] = offsets[-1]
        self.consumer.note_returned(self.tp, offsets)
        self.position = self.end if past_markers else offsets[-1] + 1
        self.consumer._fetched_to[self.tp] = self.position

    async def deliver(self, offset: int) -> None:
        """What ``_drain_messages`` does with a record before handing it to the stream."""
        consumer = self.consumer
        last = consumer._read_offset[self.tp]
        if last is not None and last and offset - last > 1:
            await consumer._add_gap(self.tp, last + 1, offset)
        consumer._read_offset[self.tp] = offset

    def ack(self, offset: int) -> None:
        """The stream is done with a record: the consumer's own ``ack``."""
        self.consumer.ack(Record(self.tp, offset))  # type: ignore[arg-type]

    async def process(self, *offsets: int) -> None:
        for offset in offsets:
            await self.deliver(offset)
            self.ack(offset)

    def commit(self) -> int | None:
        """One commit round for the partition; the committed offset after it."""
        consumer = self.consumer
        offset = consumer._new_offset(self.tp)
        if offset is not None and consumer._should_commit(self.tp, offset):
            consumer._committed_offset[self.tp] = offset
        committed: int | None = consumer._committed_offset[self.tp]
        return committed


async def test_each_commit_reaches_the_last_processed_record_of_many_small_transactions() -> None:
    partition = Partition()
    # (Faust records no gap after a record at offset 0: start the partition with two records.)
    first = partition.transaction(2)
    partition.fetch(*first, past_markers=False)
    await partition.process(*first)
    assert partition.commit() == 2
    for _round in range(20):
        offsets = [offset for _ in range(25) for offset in partition.transaction(1)]
        partition.fetch(*offsets, past_markers=False)
        await partition.process(*offsets)
        assert partition.commit() == offsets[-1] + 1
        assert not partition.consumer._acked[partition.tp]  # nothing left behind to sort again


async def test_faust_alone_falls_one_transaction_per_commit_behind() -> None:
    # The defect this module works around (faust-streaming/faust#606), on the same input:
    # the delivered record is part of its own gap, so it is acked twice and every duplicate
    # ends the run of offsets a commit may take.
    partition = Partition()
    faust_consumer = SimpleNamespace(
        _gap=partition.consumer._gap,
        _acked=partition.consumer._acked,
        _acked_index=partition.consumer._acked_index,
        _committed_offset=partition.consumer._committed_offset,
    )
    committed = []
    for _round in range(5):
        offsets = [offset for _ in range(25) for offset in partition.transaction(1)]
        for offset in offsets:
            last = partition.consumer._read_offset[partition.tp]
            if last and offset - last > 1:
                await FaustConsumer._add_gap(faust_consumer, partition.tp, last + 1, offset)  # type: ignore[arg-type]
            partition.consumer._read_offset[partition.tp] = offset
            partition.ack(offset)
        new = FaustConsumer._new_offset(faust_consumer, partition.tp)  # type: ignore[arg-type]
        if new is not None and FaustConsumer._should_commit(faust_consumer, partition.tp, new):  # type: ignore[arg-type]
            faust_consumer._committed_offset[partition.tp] = new
        committed.append(faust_consumer._committed_offset[partition.tp])
    assert committed[-1] < partition.end // 4


async def test_a_gap_never_covers_the_record_being_delivered() -> None:
    # Records 0, 1, marker 2, records 3, 4, marker 5: with concurrency > 1 record 4 may
    # finish before record 3. Faust's gap would be 2..3 and the commit would pass record 3.
    partition = Partition()
    first = partition.transaction(2)
    later = partition.transaction(2)
    partition.fetch(*first, *later)
    await partition.process(*first)
    await partition.deliver(later[0])
    await partition.deliver(later[1])
    partition.ack(later[1])
    assert partition.commit() == later[0]  # record 3 is not done: the commit stops before it
    partition.ack(later[0])
    assert partition.commit() == partition.end  # then past the last marker


async def test_commits_past_the_trailing_marker_once_everything_returned_is_processed() -> None:
    partition = Partition()
    offsets = [offset for _ in range(3) for offset in partition.transaction(2)]
    partition.fetch(*offsets)
    await partition.process(*offsets)
    assert partition.commit() == partition.end


async def test_never_commits_past_a_record_returned_but_not_processed() -> None:
    partition = Partition()
    first = partition.transaction(2)
    second = partition.transaction(2)
    partition.fetch(*first, *second)
    await partition.process(*first, second[0])
    assert partition.commit() == second[0] + 1  # second[1] is still in the stream
    await partition.process(second[1])
    assert partition.commit() == partition.end


async def test_position_not_trusted_after_an_abandoned_fetch_until_the_next_assignment() -> None:
    partition = Partition()
    offsets = partition.transaction(3)
    partition.fetch(*offsets)
    await partition.process(*offsets)
    partition.consumer._position_unsure = True
    assert partition.commit() == offsets[-1] + 1
    partition.consumer._position_unsure = False
    assert partition.commit() == partition.end


async def test_the_position_counts_as_of_the_last_fetch_not_as_it_moves_during_the_next() -> None:
    partition = Partition()
    first = partition.transaction(2)
    partition.fetch(*first)
    await partition.process(*first)
    partition.transaction(2)  # being fetched: the live position is past them, unreturned
    partition.position = partition.end
    assert partition.commit() == first[-1] + 2  # past the first marker only


async def test_a_partition_assigned_at_a_marker_moves_past_it_without_new_records() -> None:
    # After a restart the group's offset is the marker's; the fetcher skips it and returns nothing.
    partition = Partition()
    partition.transaction(4)
    partition.consumer._committed_offset[partition.tp] = partition.end - 1
    partition.consumer._fetched_to[partition.tp] = partition.end  # a fetch returned nothing
    assert partition.tp in set(partition.consumer._filter_tps_with_pending_acks())
    assert partition.commit() == partition.end


async def test_fetches_record_what_they_returned_and_the_position_then_and_remember_abandoned_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    partition = Partition()
    consumer = partition.consumer
    returned = {partition.tp: [SimpleNamespace(offset=7), SimpleNamespace(offset=9)]}
    active = {partition.tp}

    async def getmany(self: object, active_partitions: set[TP], timeout: float) -> object:
        # The fetch gets its own copy of the active partitions: pausing the last of them
        # while it waits must not leave it an empty set (aiokafka: every partition).
        assert active_partitions == {partition.tp} and active_partitions is not active
        active.clear()
        assert active_partitions == {partition.tp}
        partition.position = 11  # skipped the marker at 10
        return returned

    monkeypatch.setattr("faust.transport.consumer.ThreadDelegateConsumer._getmany", getmany)
    assert await consumer._getmany(active, 1.0) is returned
    assert consumer._returned[partition.tp] == 9
    assert consumer._fetched_to[partition.tp] == 11

    async def cancelled(self: object, active_partitions: object, timeout: float) -> object:
        partition.position = 20
        raise asyncio.CancelledError

    monkeypatch.setattr("faust.transport.consumer.ThreadDelegateConsumer._getmany", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await consumer._getmany({partition.tp}, 1.0)
    assert consumer._position_unsure
    assert consumer._fetched_to[partition.tp] == 11


async def test_a_record_dropped_before_its_ack_holds_the_commit_where_faust_commits_past_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The record at the committed offset is handed to a stream and cleared from its queue
    # (Faust resuming the flow): the records after it are acked, it never is.
    partition = Partition()
    first = partition.transaction(2)
    partition.fetch(*first)
    await partition.process(*first)
    assert partition.commit() == partition.end  # 3, past the marker at 2
    later = partition.transaction(4)  # records 3..6
    partition.fetch(*later, past_markers=False)
    dropped, *processed = later
    await partition.deliver(dropped)
    await partition.process(*processed)
    consumer = partition.consumer
    # Faust's own bookkeeping would move past it: acked offsets may start one past the committed one.
    assert (
        FaustConsumer._new_offset(
            SimpleNamespace(  # type: ignore[arg-type]
                _gap=defaultdict(IntervalTree),
                _acked=defaultdict(list, {partition.tp: list(consumer._acked[partition.tp])}),
                _acked_index=defaultdict(set),
                _committed_offset=consumer._committed_offset,
            ),
            partition.tp,
        )
        == processed[-1] + 1
    )
    assert partition.commit() == dropped  # the commit stops at the dropped record
    assert partition.commit() == dropped
    assert consumer._unacked[partition.tp] == {dropped}
    # The record comes back (a restart or rebalance seeks to the committed offset) and is processed.
    partition.fetch(dropped, *processed, past_markers=False)
    await partition.process(dropped, *processed)
    assert partition.commit() == processed[-1] + 1
    assert not consumer._unacked[partition.tp]


async def test_records_returned_again_below_the_commit_or_already_acked_hold_nothing() -> None:
    partition = Partition()
    offsets = partition.transaction(3)
    partition.fetch(*offsets, past_markers=False)
    await partition.process(*offsets[:2])
    partition.fetch(*offsets[:2], past_markers=False)  # returned again after a seek, already acked
    assert partition.commit() == offsets[2]  # the third is still in its stream
    assert partition.consumer._unacked[partition.tp] == {offsets[2]}
    await partition.process(offsets[2])
    assert partition.commit() == offsets[-1] + 1
    partition.fetch(*offsets, past_markers=False)  # below the committed offset now
    assert not partition.consumer._unacked[partition.tp]


def test_the_service_app_consumes_with_the_marker_aware_consumer(tmp_path: Path) -> None:
    app = build_faust_app(Settings(data_dir=tmp_path))
    assert app.transport.Consumer is MarkerAwareConsumer  # what app.consumer is built from
    assert isinstance(app.tables.recovery, SeekFirstRecovery)
