"""How an exactly-once loop orders a transaction's calls, and how its producers take turns.

Right after a commit the coordinator is still completing it and refuses the same
transactional id's next transaction (CONCURRENT_TRANSACTIONS). librdkafka retries a refused
AddOffsetsToTxn after ``retry.backoff.ms`` but a refused AddPartitionsToTxn (sent for the
first produced record) only after a fixed 20 ms, so a single producer enqueues a new
transaction's outputs only once its offsets are in; with several transactional producers
each transaction goes to the next one, whose last transaction the coordinator completed
long ago
(producing at once: it is not refused). The broker side of both is exercised by the
integration and chaos tests; here the order of the calls is checked against recording fakes
whose offsets call takes a while.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from mlops_platform.kafka import Guarantee, Outbox, Record, RetryableError, StreamLoop
from mlops_platform.settings import PlatformSettings


@dataclass
class EncodedStub:
    """What the loop's outbox hands to ``enqueue``: only the topic is read on this path."""

    topic: str


class RecordingProducer:
    """A transactional producer (the loop's ``EventProducer`` and its ``raw`` in one) that logs its calls."""

    def __init__(self, name: str, journal: list[tuple[str, str]], offsets_delay_s: float = 0.0) -> None:
        self.name = name
        self.raw = self
        self.journal = journal
        self.offsets_delay_s = offsets_delay_s

    def _log(self, call: str) -> None:
        self.journal.append((call, self.name))

    def init_transactions(self, timeout: float) -> None:
        self._log("init")

    def begin_transaction(self) -> None:
        self._log("begin")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        time.sleep(self.offsets_delay_s)  # the coordinator's answer takes a while
        self._log("offsets")

    def enqueue(self, record: EncodedStub) -> None:
        self._log("produce")

    def commit_transaction(self, timeout: float) -> None:
        self._log("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._log("abort")

    def flush(self, timeout_s: float | None = None) -> int:
        return 0


class Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class GroupMetadata:
    def consumer_group_metadata(self) -> object:
        return object()


def emit_one(records: list[Record], outbox: Outbox) -> None:
    for _record in records:
        outbox.emit_encoded(EncodedStub("out"))  # type: ignore[arg-type]


def build_loop(
    journal: list[tuple[str, str]], producers: int, handler: Any = emit_one, offsets_delay_s: float = 0.02
) -> StreamLoop:
    loop = StreamLoop(
        settings=PlatformSettings(kafka_bootstrap_servers="127.0.0.1:1"),
        service="svc",
        group_id="g",
        inputs=[],
        handler=handler,
        serde=None,  # type: ignore[arg-type]  # nothing is decoded here
        guarantee=Guarantee.EXACTLY_ONCE,
        transactional_id="svc-1",
        transactional_producers=producers,
        batch_size=100,  # every poll below is short: each commits at once
        retry_backoff_s=0.0,
    )
    for real in loop._producers:
        real.close()
    fakes = [RecordingProducer(chr(ord("A") + turn), journal, offsets_delay_s) for turn in range(producers)]
    loop._producers = fakes  # type: ignore[assignment]
    loop.producer = fakes[0]  # type: ignore[assignment]
    loop.consumer.kafka = GroupMetadata()  # type: ignore[assignment]
    loop.consumer.decode = lambda msg: Record("in", 0, msg.offset(), None, {}, 0, message=msg)  # type: ignore[method-assign]
    loop.consumer.rewind_to_committed = lambda: journal.append(("rewind", "-"))  # type: ignore[method-assign]
    return loop


def spans_two_polls(loop: StreamLoop) -> None:
    """Polls of two records are full (the transaction stays open); the second one closes it."""
    loop.batch_size = 2
    loop.commit_max_records = 4
    loop.commit_interval_s = 60.0


def calls_of(journal: list[tuple[str, str]], name: str) -> list[str]:
    return [call for call, producer in journal if producer == name]


def test_a_single_producer_enqueues_a_new_transactions_outputs_only_after_its_offsets_are_in() -> None:
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=1, offsets_delay_s=0.05)

    loop._checkpoint([Message(0), Message(1)])  # type: ignore[list-item]

    assert [call for call, _ in journal] == ["begin", "offsets", "produce", "produce", "commit"]


def test_a_single_producers_transaction_spanning_polls_registers_on_its_first_poll() -> None:
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=1, offsets_delay_s=0.02)
    spans_two_polls(loop)

    loop._checkpoint([Message(0), Message(1)])  # type: ignore[list-item]
    assert [call for call, _ in journal] == ["begin", "offsets", "produce", "produce"]
    loop._checkpoint([Message(2), Message(3)])  # type: ignore[list-item]

    # The second poll closes the transaction: its outputs need not wait (the transaction is
    # registered), its offsets (all four records) go again, and the commit waits for them.
    assert [call for call, _ in journal][4:] == ["produce", "produce", "offsets", "commit"]


class State:
    def snapshot(self) -> bytes:
        return b"state"

    def restore(self, snapshot: bytes | None) -> None:
        pass


def test_a_stateful_loop_sends_its_offsets_only_with_its_commit() -> None:
    # Its handler may read the group's committed offsets, which the broker holds back
    # (UNSTABLE_OFFSET_COMMIT) while offsets of the group are pending in an open transaction.
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=1)
    loop.state = State()  # type: ignore[assignment]
    loop.state_interval_s = 60.0

    loop._checkpoint([Message(0)])  # type: ignore[list-item]
    assert [call for call, _ in journal] == ["begin", "produce"]
    loop._commit_open()

    assert [call for call, _ in journal] == ["begin", "produce", "offsets", "commit"]


def test_a_stateful_loop_whose_commit_is_due_handles_before_its_offsets_go() -> None:
    # The same, when the poll already closes the transaction: an offsets call started
    # alongside the handler would hold back the handler's read of the group's offsets.
    journal: list[tuple[str, str]] = []
    offsets_started = threading.Event()
    seen_while_handling: list[bool] = []

    class Watched(RecordingProducer):
        def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
            offsets_started.set()
            super().send_offsets_to_transaction(offsets, metadata, timeout)

    def reads_committed_offsets(records: list[Record], outbox: Outbox) -> None:
        # Long enough for an offsets call started before the handler to have begun.
        seen_while_handling.append(offsets_started.wait(0.5))
        emit_one(records, outbox)

    loop = build_loop(journal, producers=1, handler=reads_committed_offsets)
    loop._producers = [Watched("A", journal)]  # type: ignore[list-item]
    loop.producer = loop._producers[0]
    loop.state = State()  # type: ignore[assignment]
    loop.state_interval_s = 0.0  # due at once

    loop._checkpoint([Message(0)])  # type: ignore[list-item]

    assert seen_while_handling == [False], "offsets were pending while the handler ran"
    assert [call for call, _ in journal] == ["begin", "produce", "offsets", "commit"]


def test_transactions_take_turns_between_the_producers_and_commit_in_order() -> None:
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=2)

    for offset in range(3):
        loop._checkpoint([Message(offset)])  # type: ignore[list-item]

    assert loop._transactional_ids == ["svc-1", "svc-1-1"]
    assert [(call, name) for call, name in journal if call in ("begin", "commit")] == [
        ("begin", "A"),
        ("commit", "A"),
        ("begin", "B"),
        ("commit", "B"),
        ("begin", "A"),
        ("commit", "A"),
    ]
    assert calls_of(journal, "B") == ["begin", "produce", "offsets", "commit"]


def test_producers_taking_turns_produce_without_waiting_for_the_offsets() -> None:
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=2, offsets_delay_s=0.05)
    spans_two_polls(loop)

    loop._checkpoint([Message(0), Message(1)])  # type: ignore[list-item]
    loop._checkpoint([Message(2), Message(3)])  # type: ignore[list-item]

    # No early offsets call: the offsets go once, with the poll that closes the transaction.
    assert [call for call, _ in journal] == [
        "begin",
        "produce",
        "produce",
        "produce",
        "produce",
        "offsets",
        "commit",
    ]


def test_an_aborted_transaction_keeps_the_turn() -> None:
    journal: list[tuple[str, str]] = []
    failures = iter([None, RetryableError("registry down"), None])

    def flaky(records: list[Record], outbox: Outbox) -> None:
        failure = next(failures)
        if failure is not None:
            raise failure
        emit_one(records, outbox)

    loop = build_loop(journal, producers=2, handler=flaky)

    for offset in range(3):
        loop._checkpoint([Message(offset)])  # type: ignore[list-item]

    # B's transaction is aborted and its records consumed again, by B, which then commits.
    assert calls_of(journal, "B") == ["begin", "offsets", "abort", "begin", "produce", "offsets", "commit"]
    assert ("rewind", "-") in journal
    assert loop.checkpoints == 2


def test_a_wedged_producer_is_replaced_with_the_others_of_its_turn_and_the_turn_is_kept() -> None:
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=2)
    loop._checkpoint([Message(0)])  # type: ignore[list-item]  # A commits; B's turn
    fresh = {turn: RecordingProducer(f"{name}2", journal, 0.02) for turn, name in enumerate("AB")}
    loop._new_transactional_producer = fresh.__getitem__  # type: ignore[assignment]

    # The others would wedge on the same stale coordinator at their next turn: all go at once.
    loop._replace_wedged_producers("test")
    loop._checkpoint([Message(0)])  # type: ignore[list-item]
    loop._checkpoint([Message(1)])  # type: ignore[list-item]

    assert loop._producers == [fresh[0], fresh[1]]
    assert calls_of(journal, "B2") == ["init", "begin", "produce", "offsets", "commit"]
    assert calls_of(journal, "A2") == ["init", "begin", "produce", "offsets", "commit"]
    assert journal.index(("init", "A2")) < journal.index(("begin", "B2")), "every new id is fenced first"
    assert calls_of(journal, "A") == ["begin", "produce", "offsets", "commit"], "the old A is dropped"
    assert calls_of(journal, "B") == [], "the wedged B is dropped"


def test_at_least_one_transactional_producer() -> None:
    with pytest.raises(ValueError, match="transactional_producers"):
        build_loop([], producers=0)


def test_a_starting_loop_fences_every_transactional_id_of_its_instance() -> None:
    journal: list[tuple[str, str]] = []
    loop = build_loop(journal, producers=3)
    loop.consumer.subscribe = lambda **_callbacks: None  # type: ignore[method-assign]
    loop.consumer.close = lambda: None  # type: ignore[method-assign]
    loop.stop()  # run() starts, fences, and stops at once

    loop.run()

    # A predecessor killed mid-transaction on any of its producers is aborted at start,
    # not after transaction.timeout.ms: every id is initialised before anything is consumed.
    assert [entry for entry in journal if entry[0] == "init"] == [("init", "A"), ("init", "B"), ("init", "C")]
    assert loop._transactional_ids == ["svc-1", "svc-1-1", "svc-1-2"]
