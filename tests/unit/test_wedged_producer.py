"""An exactly-once loop whose producer is stuck in ``send_offsets_to_transaction`` replaces it.

librdkafka can block in that call past its timeout, for good, after the group coordinator's
broker was restarted. The loop must neither hang with it nor commit anything of the stuck
transaction: it drops the producer, fences it with a new one of the same transactional id,
restores the committed state and consumes again from the committed offsets.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from mlops_platform.kafka import Guarantee, StreamLoop
from mlops_platform.kafka.loop import _OpenTransaction
from mlops_platform.settings import PlatformSettings


class StuckProducer:
    """The raw transactional producer: ``send_offsets_to_transaction`` never returns (or fails)."""

    def __init__(self, error: KafkaException | None = None) -> None:
        self.release = threading.Event()
        self.error = error
        self.committed = 0

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        if self.error is not None:
            raise self.error
        # Bounded only so that a loop calling it without a deadline fails instead of hanging.
        if not self.release.wait(10):
            raise AssertionError("send_offsets_to_transaction was waited for without a deadline")

    def commit_transaction(self, timeout: float) -> None:
        self.committed += 1

    def abort_transaction(self, timeout: float) -> None:
        pass


class Holder:
    """The loop's view of an EventProducer: only ``raw`` is used on this path."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw


class FreshProducer:
    def __init__(self) -> None:
        self.raw = self
        self.initialised = 0

    def init_transactions(self, timeout: float) -> None:
        self.initialised += 1


class Message:
    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


class State:
    def __init__(self) -> None:
        self.restored: list[bytes | None] = []

    def snapshot(self) -> bytes:
        return b"now"

    def restore(self, snapshot: bytes | None) -> None:
        self.restored.append(snapshot)


@pytest.fixture
def loop() -> StreamLoop:
    built = StreamLoop(
        settings=PlatformSettings(kafka_bootstrap_servers="127.0.0.1:1"),
        service="test",
        group_id="g",
        inputs=[],
        handler=lambda records, outbox: None,
        serde=None,  # type: ignore[arg-type]  # nothing is decoded here
        guarantee=Guarantee.EXACTLY_ONCE,
        transactional_id="test-1",
    )
    built._kafka_timeout_s = 0.2
    built._offsets_timeout_s = 0.2
    built.wedged_grace_s = 0.1
    return built


def open_transaction(loop: StreamLoop, raw: StuckProducer) -> list[str]:
    """Put a stuck producer and an open transaction of one message in place; returns the rewinds."""
    rewinds: list[str] = []
    loop.producer.close()
    loop.producer = Holder(raw)  # type: ignore[assignment]
    loop.consumer.rewind_to_committed = lambda: rewinds.append("rewind")  # type: ignore[method-assign]
    loop._open = _OpenTransaction(0.0)
    loop._open.messages.append(Message())  # type: ignore[arg-type]
    return rewinds


def test_a_stuck_offsets_call_replaces_the_producer_and_consumes_again(loop: StreamLoop) -> None:
    stuck = StuckProducer()
    fresh = FreshProducer()
    loop._new_transactional_producer = lambda _turn: fresh  # type: ignore[assignment,return-value]
    rewinds = open_transaction(loop, stuck)

    assert loop._commit_open() is False
    stuck.release.set()

    assert stuck.committed == 0, "nothing of the stuck transaction is committed"
    assert loop.producer is fresh and fresh.initialised == 1, "a new producer fences the stuck one"
    assert loop._open is None
    assert rewinds == ["rewind"]
    assert loop.producer_replacements == 1


def test_the_replacement_restores_the_last_committed_state(loop: StreamLoop) -> None:
    state = State()
    loop.state = state
    loop._committed_state = b"committed"
    loop._new_transactional_producer = lambda _turn: FreshProducer()  # type: ignore[assignment,return-value]
    open_transaction(loop, StuckProducer())

    loop._replace_wedged_producers("test")

    assert state.restored == [b"committed"]


def test_an_error_of_the_call_is_the_usual_abort_not_a_replacement(loop: StreamLoop) -> None:
    failing = StuckProducer(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    loop._new_transactional_producer = lambda _turn: pytest.fail("the producer is not stuck")  # type: ignore[assignment]
    rewinds = open_transaction(loop, failing)

    assert loop._commit_open() is False

    assert loop.producer.raw is failing, "an answered error keeps the producer"
    assert rewinds == ["rewind"] and loop.producer_replacements == 0
