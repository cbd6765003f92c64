"""The chaos tier's ledger: what a fault scenario sent, what came out (by id), and how long recovery took.

A scenario makes one :class:`Ledger` (the ``ledger`` fixture of ``tests/chaos/conftest.py``
names it after the test), records the ids it sent, feeds it the ids it read back from the
output topics (read with ``isolation.level=read_committed``, e.g. :func:`committed_ids`) and
marks the moments of each fault::

    ledger = chaos_ledger("predictor SIGKILL")      # the fixture; Ledger("...") works anywhere
    start = positions(settings, "prediction.completed")
    ledger.sent(txn["transaction_id"] for txn in batch)
    recovery = ledger.fault("predictor")            # just before the SIGKILL
    predictor.kill(); predictor.restart()
    predictor.wait_for("/ready"); recovery.ready()
    ledger.observe(ids_read_back)                   # as they arrive: marks the first output
    ledger.recount(committed_ids(settings, start, key_id))  # at the end: everything, committed
    ledger.assert_exactly_once()                    # 0 lost, 0 duplicated, nothing unexpected

Every ledger made in a run is kept in :data:`LEDGERS`; the chaos tier's
``pytest_terminal_summary`` prints one row per ledger (sent, completed once, lost, duplicated,
recovery times), whether its test passed or not. Recovery times are reported, never
asserted: tests do not judge speed.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from mlops_platform.settings import PlatformSettings

IdOf = Callable[[Message], str | None]


@dataclass
class Recovery:
    """The timeline of one fault: injected, the component ready again, its first output after it.

    Times are ``time.monotonic()`` seconds; the durations are ``None`` until the moment was marked.
    """

    component: str
    injected_at: float = field(default_factory=time.monotonic)
    injected_wall: float = field(default_factory=time.time)
    restarted_at: float | None = None
    ready_at: float | None = None
    first_output_at: float | None = None

    def restarted(self) -> None:
        """Mark now as the moment the component was started again (or came back by itself)."""
        self.restarted_at = time.monotonic()

    def ready(self) -> None:
        """Mark now as the moment the component answered ready again."""
        self.ready_at = time.monotonic()

    def first_output(self, at: float | None = None) -> None:
        """Mark the first output after the fault (only the first call counts)."""
        if self.first_output_at is None:
            self.first_output_at = time.monotonic() if at is None else at

    def output_at(self, timestamps: Iterable[float]) -> None:
        """Mark the first output from record timestamps (epoch seconds): the earliest one after the fault."""
        after = [ts for ts in timestamps if ts >= self.injected_wall]
        if after and self.first_output_at is None:
            self.first_output_at = self.injected_at + (min(after) - self.injected_wall)

    @property
    def ready_s(self) -> float | None:
        """Seconds from the fault to ready again."""
        return None if self.ready_at is None else self.ready_at - self.injected_at

    @property
    def first_output_s(self) -> float | None:
        """Seconds from the fault to the first output seen after it."""
        return None if self.first_output_at is None else self.first_output_at - self.injected_at

    def describe(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}s"

        return f"{self.component}: ready {seconds(self.ready_s)}, output {seconds(self.first_output_s)}"


class Ledger:
    """Counts, by id, what a scenario sent and what came out: completed once, lost, duplicated.

    ``sent`` ids are the ones the scenario knows were accepted (e.g. answered 202); ``observe``
    takes every output id as read, duplicates included, so that a record written twice is
    counted twice. Output ids never sent (not ours, or invented) are counted as ``unexpected``.
    """

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.notes: list[str] = []
        self.recoveries: list[Recovery] = []
        self._sent: dict[str, None] = {}  # insertion-ordered set
        self._seen: Counter[str] = Counter()
        self.outcome = "running"
        LEDGERS.append(self)

    # -- recording

    def sent(self, ids: Iterable[str] | str) -> None:
        """Record ids the system accepted (a single id or an iterable of them)."""
        for one in [ids] if isinstance(ids, str) else ids:
            self._sent[one] = None

    def observe(self, ids: Iterable[str | None] | str) -> int:
        """Record output ids as read (each occurrence counts); returns how many ids were new.

        New output marks the first output of every fault that has none yet.
        """
        before = len(self._seen)
        for one in [ids] if isinstance(ids, str) else ids:
            if one is not None:
                self._seen[one] += 1
        arrived = len(self._seen) - before
        if arrived:
            for recovery in self.recoveries:
                recovery.first_output()
        return arrived

    def recount(self, ids: Iterable[str | None]) -> None:
        """Replace everything observed so far by ``ids`` (a complete re-read of the outputs).

        Marks no first output: pass the records' timestamps to :meth:`output_times` for that.
        """
        self._seen = Counter(one for one in ids if one is not None)

    def output_times(self, timestamps: Iterable[float]) -> None:
        """Output record timestamps (epoch seconds, e.g. from :func:`committed_ids`): each fault's first
        output is the earliest after it (more precise than the moment the test happened to read it)."""
        stamps = list(timestamps)
        for recovery in self.recoveries:
            recovery.output_at(stamps)

    def fault(self, component: str) -> Recovery:
        """Start the timeline of a fault injected now into ``component``."""
        recovery = Recovery(component)
        self.recoveries.append(recovery)
        return recovery

    def note(self, text: str) -> None:
        """Add a remark to the scenario's row (e.g. how many requests were retried)."""
        self.notes.append(text)

    # -- counts

    @property
    def sent_count(self) -> int:
        return len(self._sent)

    @property
    def sent_ids(self) -> list[str]:
        """The sent ids, in the order they were sent."""
        return list(self._sent)

    def times(self, one: str) -> int:
        """How often ``one`` came out."""
        return self._seen.get(one, 0)

    @property
    def completed_once(self) -> int:
        """Sent ids that came out exactly once."""
        return sum(1 for one in self._sent if self._seen.get(one) == 1)

    @property
    def lost(self) -> list[str]:
        """Sent ids that never came out."""
        return [one for one in self._sent if one not in self._seen]

    @property
    def duplicated(self) -> list[str]:
        """Sent ids that came out more than once."""
        return [one for one in self._sent if self._seen.get(one, 0) > 1]

    @property
    def unexpected(self) -> list[str]:
        """Output ids that were never sent."""
        return [one for one in self._seen if one not in self._sent]

    def complete(self) -> bool:
        """Whether every sent id came out (for polling with ``wait_until``)."""
        return all(one in self._seen for one in self._sent)

    def summary(self) -> str:
        """One line: the counts and a few of the offending ids."""
        lost, duplicated, unexpected = self.lost, self.duplicated, self.unexpected
        return (
            f"{self.scenario}: sent {self.sent_count}, completed once {self.completed_once}, "
            f"lost {len(lost)} {lost[:5]}, duplicated {len(duplicated)} "
            f"{[(one, self._seen[one]) for one in duplicated[:5]]}, unexpected {len(unexpected)} "
            f"{unexpected[:5]}"
        )

    def assert_exactly_once(self, *, allow_unexpected: bool = False) -> None:
        """Fail unless every sent id came out exactly once (and, by default, nothing else came out)."""
        assert self.sent_count > 0, f"{self.scenario}: nothing was sent"
        assert not self.lost and not self.duplicated, self.summary()
        if not allow_unexpected:
            assert not self.unexpected, self.summary()

    def row(self) -> dict[str, Any]:
        """The scenario's row of the summary table."""
        return {
            "scenario": self.scenario,
            "outcome": self.outcome,
            "sent": self.sent_count,
            "completed_once": self.completed_once,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "recovery": "; ".join(r.describe() for r in self.recoveries) or "-",
            "notes": "; ".join(self.notes),
        }


LEDGERS: list[Ledger] = []
"""Every ledger made in this run, in order (the chaos tier's terminal summary prints them)."""

COLUMNS = ("scenario", "outcome", "sent", "completed_once", "lost", "duplicated", "recovery", "notes")


def table(ledgers: Iterable[Ledger]) -> list[str]:
    """The summary table's lines (a header and one row per ledger), columns aligned."""
    rows = [[str(ledger.row()[column]) for column in COLUMNS] for ledger in ledgers]
    header = [column.replace("_", " ") for column in COLUMNS]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    return [
        " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]


def committed_ids(
    settings: PlatformSettings,
    start: Iterable[TopicPartition],
    id_of: IdOf,
    *,
    timeout_s: float = 60.0,
    timestamps: list[float] | None = None,
) -> list[str]:
    """Every id on the partitions of ``start`` from their offsets to the end, as committed.

    Reads with ``isolation.level=read_committed`` up to the partitions' current ends (the last
    stable offsets), so aborted transactions' records are never counted. ``id_of`` maps a record
    to its id (``None``: not one of ours, skipped); duplicates are kept. Fails if the end is not
    reached within ``timeout_s``. ``timestamps``, if given, receives each counted record's
    timestamp (epoch seconds), for :meth:`Ledger.output_times`.
    """
    consumer = Consumer(
        {
            **settings.common_kafka_config(),
            "group.id": f"chaos-ledger-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = list(start)
        ends: dict[tuple[str, int], int] = {}
        for tp in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            ends[(tp.topic, tp.partition)] = int(high)
        pending = {key for key, end in ends.items() if end > 0}
        found: list[str] = []
        consumer.assign([TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in partitions])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                key = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and (msg.offset() or 0) >= ends[key]:
                        pending.discard(key)
                    continue
                if (msg.offset() or 0) + 1 >= ends[key]:
                    pending.discard(key)
                one = id_of(msg)
                if one is not None:
                    found.append(one)
                    if timestamps is not None:
                        timestamps.append(msg.timestamp()[1] / 1000)
        assert not pending, f"could not read {sorted(pending)} to their ends {ends} within {timeout_s:.0f}s"
        return found
    finally:
        consumer.close()


def positions(settings: PlatformSettings, *topics: str, beginning: bool = False) -> list[TopicPartition]:
    """The current end of every partition of ``topics``: where a scenario's output starts.

    With ``beginning``: offset 0 of every partition (a fresh topic, read in full).
    """
    consumer = Consumer({**settings.common_kafka_config(), "group.id": f"chaos-pos-{uuid.uuid4().hex[:8]}"})
    try:
        found = []
        for topic in topics:
            for partition in sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions):
                if beginning:
                    found.append(TopicPartition(topic, partition, 0))
                    continue
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                found.append(TopicPartition(topic, partition, int(high)))
        return found
    finally:
        consumer.close()


def key_id(msg: Message) -> str | None:
    """A record's key as its id (records keyed by transaction id, user id, ...)."""
    key = msg.key()
    return key.decode(errors="replace") if key else None
