"""Scale-out of the drift detector: partial histograms per instance, summed by one merger.

Pure tests with the detector and the merger driven by plain records: PSI of summed counts is
the single-instance PSI, a bucket completes only when every partition passed it, late rows
are counted once, an instance leaving mid-window (its partitions moved to the other) changes
nothing, and a merger hand-over continues from the committed state without loss or repeats.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drift_detector.config import Settings
from drift_detector.detector import DriftDetector
from drift_detector.merge import MergeHandler
from drift_detector.psi import fit_binning, psi_from_counts
from drift_detector.scaleout import (
    BucketWindow,
    ClosedBucket,
    Merger,
    PartialCollector,
    dense_counts,
    sparse_counts,
)
from drift_detector.windows import WindowManager
from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import TransactionGenerator
from mlops_platform.contracts import Topic
from mlops_platform.kafka import Record, RetryableError
from tests.unit.test_drift_detector import (
    FakeOutbox,
    FakeRegistry,
    Feed,
    Harness,
    reference_frame,
    registry,
    settings,
)

__all__ = ["registry", "settings"]  # fixtures shared with test_drift_detector

PARTITIONS = 6
BUCKET_MS = 5_000


@pytest.fixture
def scaled(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "scale_out": True,
            "merge_bucket_s": BUCKET_MS / 1000,
            "merge_lateness_s": 1.0,
            "merge_idle_s": 60.0,
            "repeat_interval_s": 0.001,  # every drifted window is an event: windows are countable
            "instance_id": "unit-a",
        }
    )


# --------------------------------------------------------------------------- helpers


def partitioned(feed: Feed, rows: list[dict[str, Any]], **kwargs: Any) -> list[Record]:
    """Prediction records spread over the partitions by transaction id, offsets per partition."""
    records = feed.predictions(rows, **kwargs)
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    out = []
    for record in records:
        partition = zlib.crc32(record.value["transaction_id"].encode()) % PARTITIONS
        record.partition, record.offset = partition, offsets[partition]
        offsets[partition] += 1
        out.append(record)
    return out


class Instance:
    """One scaled-out detector under an exactly-once loop: its partials become durable on commit."""

    def __init__(self, settings: Settings, registry: FakeRegistry, name: str, *, first: bool = False) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.outbox = FakeOutbox(self.published)
        self.detector = DriftDetector(
            settings.model_copy(update={"instance_id": name}),
            registry=registry,
        )
        self.detector.partials = PartialCollector(BUCKET_MS)
        self.detector.partition_count = lambda: PARTITIONS
        self.first = first
        self.detector.owns_first_partition = lambda: self.first

    def handle(self, records: list[Record]) -> None:
        self.detector.handle(records, self.outbox)
        self.outbox.commit()

    def take(self, topic: str) -> list[dict[str, Any]]:
        found = [e for t, e in self.published if t == topic]
        self.published[:] = [(t, e) for t, e in self.published if t != topic]
        return found


class MergeSide:
    """Merge handlers of several instances over one partials log, as the merge group hands it out.

    A commit stores the active handler's snapshot under the shared key together with the group's
    committed offset; offsets skip one after each transaction, like Kafka's commit markers.
    """

    def __init__(self, settings: Settings, registry: FakeRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.log: list[Record] = []
        self.next_offset = 0
        self.committed_state: bytes | None = None
        self.committed_offset = -1
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.outbox = FakeOutbox(self.published)

    def handler(self) -> MergeHandler:
        handler = MergeHandler(
            self.settings,
            registry=self.registry,
            load_committed=lambda: self.committed_state,
            committed_offsets=lambda topics: {t: self.committed_offset for t in topics},
            wall=lambda: 0.0,  # no partition falls silent: the merge depends on the log alone
        )
        handler.restore(self.committed_state)  # what the loop does at start
        return handler

    def append(self, partials: list[dict[str, Any]]) -> None:
        """Partials of one producer transaction land in the log, followed by its commit marker."""
        for value in partials:
            self.log.append(
                Record(
                    self.settings.partials_topic,
                    0,
                    self.next_offset,
                    None,
                    value,
                    0,
                    contract=Topic.DRIFT_DETECTOR_PARTIALS,
                )
            )
            self.next_offset += 1
        self.next_offset += 1

    def consume(self, handler: MergeHandler, *, batch: int = 7, upto: int | None = None) -> None:
        """The merge loop of ``handler``'s instance from the committed offset: handle, commit each batch."""
        start = self.committed_offset if self.committed_offset >= 0 else 0
        pending = [r for r in self.log if r.offset >= start and (upto is None or r.offset < upto)]
        for i in range(0, len(pending), batch):
            chunk = pending[i : i + batch]
            handler.handle(chunk, self.outbox)
            self.outbox.commit()
            self.committed_state = handler.snapshot()
            self.committed_offset = chunk[-1].offset + 1

    def events(self) -> list[dict[str, Any]]:
        return [e for t, e in self.published if t == self.settings.drift_topic]


def drifting_stream(feed: Feed, stable: int = 3000, shifted: int = 5000) -> list[Record]:
    gen = TransactionGenerator(seed=2)
    rows = gen.generate(stable)
    gen.scenario = "night_shift"
    rows += gen.generate(shifted)
    return partitioned(feed, rows)


def handle_by_owner(
    instances: dict[str, Instance], records: list[Record], owner: Callable[[int], str], batch: int = 120
) -> None:
    """Each instance gets, in poll-sized batches, the records of the partitions it owns."""
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        for name, instance in instances.items():
            mine = [r for r in chunk if owner(r.partition) == name]
            if mine:
                instance.handle(mine)


def payload_of(event: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in event.items() if k != "envelope"}, sort_keys=True, default=str)


# --------------------------------------------------------------------------- counts


def test_sparse_counts_round_trip_and_refuse_what_does_not_fit() -> None:
    counts = np.zeros((3, 4), dtype=np.int64)
    counts[0, 1], counts[2, 3] = 5, 7
    cells, values = sparse_counts(counts)
    assert (cells, values) == ([1, 11], [5, 7])
    assert np.array_equal(dense_counts(cells, values, 3, 4), counts)
    with pytest.raises(ValueError, match="outside"):
        dense_counts([12], [1], 3, 4)
    with pytest.raises(ValueError, match="cells but"):
        dense_counts([1, 2], [1], 3, 4)
    with pytest.raises(ValueError, match="negative"):
        dense_counts([1], [-1], 3, 4)


def test_psi_of_summed_partial_counts_is_the_single_instance_psi() -> None:
    reference = reference_frame()
    binning = fit_binning(reference, list(FEATURE_NAMES))
    gen = TransactionGenerator(seed=5)
    rows = gen.generate(1500)
    gen.scenario = "night_shift"
    rows += gen.generate(1500)
    values = build_features(rows).astype(np.float32)
    times = np.arange(len(values), dtype=np.int64) * 20  # 60 s of event time: twelve buckets
    single = WindowManager(list(FEATURE_NAMES), len(values), len(values), len(values))
    single.set_binning(binning)
    [expected] = list(single.feed(values, times))

    merger = Merger(BUCKET_MS, lateness_ms=0, idle_s=60)
    partition = np.random.default_rng(1).integers(0, PARTITIONS, len(values))
    for instance, owned in (("a", (0, 1, 2)), ("b", (3, 4, 5))):
        for part in np.array_split(np.flatnonzero(np.isin(partition, owned)), 7):  # seven polls each
            collector = PartialCollector(BUCKET_MS)
            collector.add("data", binning, values[part], times[part])
            for i in part:
                collector.mark(int(partition[i]), int(i), int(times[i]))
            payload = collector.payload(
                model_name="m", instance_id=instance, reference_version="1", partition_count=PARTITIONS
            )
            assert payload is not None
            merger.add(json.loads(json.dumps(payload)), now=0.0)  # plain data, as decoded from Avro
    # Every partition passed the last bucket's start by now: all but that bucket are complete.
    closed = merger.close(now=0.0)
    assert [b.start_ms for b in closed] == list(range(0, 55_000, BUCKET_MS))
    merger.add({**partial(dict.fromkeys(range(PARTITIONS), 10**6)), "buckets": []}, now=0.0)  # time moves on
    closed += merger.close(now=0.0)

    window = BucketWindow()
    results = [window.push(b, len(values), len(values), binning) for b in closed]
    assert results[:-1] == [None] * (len(closed) - 1)
    merged = results[-1]
    assert merged is not None and merged.size == len(values) == expected.size
    assert merged.feature_psi == expected.feature_psi  # the same integer counts: the same PSI, exactly
    total = binning.count_matrix(binning.assign(values))
    direct = psi_from_counts(binning, total, len(values))
    assert merged.feature_psi == {n: float(v) for n, v in zip(FEATURE_NAMES, direct, strict=True)}
    assert max(merged.feature_psi.values()) > 0.25  # the half shifted: a real difference to find


# --------------------------------------------------------------------------- completeness


def partial(partitions: dict[int, int], bucket: int = 0, rows: int = 1, version: str = "1") -> dict[str, Any]:
    """A partial with ``rows`` in bucket ``bucket`` (start ms) and each partition's watermark."""
    return {
        "model_name": "m",
        "instance_id": "x",
        "reference_version": version,
        "partition_count": PARTITIONS,
        "bucket_ms": BUCKET_MS,
        "partitions": [
            {"partition": p, "rows": 1, "first_offset": 0, "last_offset": 0, "watermark_ms": t}
            for p, t in partitions.items()
        ],
        "buckets": [
            {
                "drift_type": "data",
                "start_ms": bucket,
                "rows": rows,
                "n_features": 1,
                "width": 2,
                "cells": [0],
                "counts": [rows],
            }
        ],
    }


def test_a_bucket_completes_once_every_partition_passed_its_end() -> None:
    merger = Merger(BUCKET_MS, lateness_ms=1000, idle_s=60)
    merger.add(partial(dict.fromkeys(range(PARTITIONS - 1), 9_000)), now=0)
    assert merger.close(now=1) == [], "partition 5 may still send rows of the first bucket"
    merger.add(partial({PARTITIONS - 1: 5_500}, rows=2), now=2)
    assert merger.close(now=2) == [], "partition 5 is not past the end by the lateness yet"
    merger.add(partial({PARTITIONS - 1: 6_000}, bucket=5_000), now=3)
    [bucket] = merger.close(now=3)
    assert (bucket.start_ms, bucket.end_ms, bucket.rows) == (0, 5_000, 3)
    assert merger.closed_until == 5_000 and merger.open_rows() == 1


def test_a_lagging_partition_holds_buckets_back_and_only_a_silent_one_does_not() -> None:
    merger = Merger(BUCKET_MS, lateness_ms=1000, idle_s=60)
    merger.add(partial({**dict.fromkeys(range(PARTITIONS - 1), 64_999), PARTITIONS - 1: 1_000}), now=0)
    for now in (30, 61):  # partition 5 lags a minute behind, but it is heard of: wait for it
        marks = {**dict.fromkeys(range(PARTITIONS - 1), 64_999 + now), PARTITIONS - 1: 1_000 + now}
        merger.add(partial(marks, bucket=60_000, rows=0), now=now)
        assert merger.close(now=now) == []
    merger.add(partial({PARTITIONS - 1: 6_500}, bucket=5_000), now=62)
    assert [b.start_ms for b in merger.close(now=62)] == [0]
    # Partition 5 falls silent: after a minute the others are no longer held back by it.
    merger.add(partial(dict.fromkeys(range(PARTITIONS - 1), 70_000), bucket=65_000), now=100)
    assert merger.close(now=100) == []
    merger.add(partial(dict.fromkeys(range(PARTITIONS - 1), 71_000), bucket=65_000), now=123)
    assert [b.start_ms for b in merger.close(now=123)] == [5_000, 60_000, 65_000]


def test_a_partition_never_heard_of_is_waited_for_until_it_is_silent_too_long() -> None:
    merger = Merger(BUCKET_MS, lateness_ms=0, idle_s=60)
    merger.add(partial(dict.fromkeys(range(PARTITIONS - 1), 20_000)), now=0)
    assert merger.close(now=59) == []
    merger.add(partial(dict.fromkeys(range(PARTITIONS - 1), 20_000), bucket=15_000), now=60)
    assert [b.start_ms for b in merger.close(now=60)] == [0, 15_000]


def test_a_merger_taking_over_waits_for_every_partition_again() -> None:
    merger = Merger(BUCKET_MS, lateness_ms=0, idle_s=60)
    merger.add(partial(dict.fromkeys(range(PARTITIONS), 4_000)), now=0)
    restarted = Merger(BUCKET_MS, lateness_ms=0, idle_s=60)
    restarted.from_state(merger.to_state())
    restarted.taken_over(now=300)  # down for five minutes: that is not the partitions' silence
    restarted.add(partial({0: 20_000}, bucket=15_000), now=301)
    assert restarted.close(now=301) == [], "partitions 1-5 are waited for again"
    assert [b.start_ms for b in restarted.close(now=361)] == [0, 15_000]


def test_late_rows_are_counted_once_in_the_oldest_open_bucket() -> None:
    merger = Merger(BUCKET_MS, lateness_ms=0, idle_s=60)
    merger.add(partial(dict.fromkeys(range(PARTITIONS), 12_000), bucket=0, rows=4), now=0)
    assert [b.rows for b in merger.close(now=0)] == [4]
    assert merger.closed_until == 10_000
    merger.add(partial({0: 12_500}, bucket=0, rows=3), now=0)  # bucket 0 is closed: into the one at 10 s
    assert merger.rows_late == 3 and merger.rows_added == {"data": 7}
    merger.add(partial(dict.fromkeys(range(PARTITIONS), 15_000), bucket=10_000, rows=1), now=0)
    [bucket] = merger.close(now=0)
    assert (bucket.start_ms, bucket.rows) == (10_000, 4)


def test_partials_of_another_bucket_length_are_refused_clearly() -> None:
    merger = Merger(2 * BUCKET_MS, 0, 1)
    with pytest.raises(ValueError, match="DRIFT_MERGE_BUCKET_S"):
        merger.add(partial({0: 1}), now=0)


def test_the_window_keeps_the_fewest_latest_buckets_holding_its_size() -> None:
    binning = fit_binning({"x": np.arange(100, dtype=np.float32)}, ["x"], n_bins=4)
    width = binning.max_bins
    window = BucketWindow()
    results = []
    for i in range(6):
        counts = np.zeros((1, width), dtype=np.int64)
        counts[0, i % width] = 40
        bucket = ClosedBucket("data", i * BUCKET_MS, (i + 1) * BUCKET_MS, "1", 40, counts)
        results.append(window.push(bucket, size=100, step=80, binning=binning))
    sizes = [None if r is None else (r.size, r.start_ms) for r in results]
    # 120 rows (three buckets) hold the 100; then every second bucket is 80 new rows.
    assert sizes == [None, None, (120, 0), None, (120, 2 * BUCKET_MS), None]
    assert len(window.buckets) == 3 and window.rows_seen == 240


# --------------------------------------------------------------------------- detector + merger


def scaled_log(
    scaled: Settings, registry: FakeRegistry, records: list[Record], owner: Callable[[int, int], str]
) -> tuple[MergeSide, dict[str, Instance]]:
    """Instances ``a`` and ``b`` take the records (``owner(partition, index)``) poll by poll; their
    partials land in the log in the order their transactions commit."""
    instances = {name: Instance(scaled, registry, name, first=name == "a") for name in ("a", "b")}
    side = MergeSide(scaled, registry)
    batch = 120
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        for name, instance in instances.items():
            mine = [r for r in chunk if owner(r.partition, i) == name]
            if mine:
                instance.handle(mine)
                side.append(instance.take(scaled.partials_topic))
    return side, instances


def run_scaled(
    scaled: Settings, registry: FakeRegistry, records: list[Record], owner: Callable[[int, int], str]
) -> tuple[MergeSide, dict[str, Instance]]:
    """:func:`scaled_log`, merged by one merger throughout."""
    side, instances = scaled_log(scaled, registry, records, owner)
    side.consume(side.handler())
    return side, instances


def test_instances_publish_partials_and_no_drift_events_of_their_own(
    scaled: Settings, registry: FakeRegistry
) -> None:
    records = drifting_stream(Feed())
    side, instances = run_scaled(scaled, registry, records, lambda p, _i: "a" if p < 3 else "b")
    for instance in instances.values():
        topics = {t for t, _ in instance.published}
        assert scaled.drift_topic not in topics
        assert instance.detector.drift_view()["window"]["rows_seen"] == 0  # no window of its own
    sent = sum(i.detector.partials.rows_sent for i in instances.values() if i.detector.partials)
    assert sent == len(records)
    events = side.events()
    assert events, "the merged windows drift"
    assert {e["drift_type"] for e in events} >= {"data"}


def test_an_instance_leaving_mid_window_changes_no_merged_window(
    scaled: Settings, registry: FakeRegistry
) -> None:
    records = drifting_stream(Feed())
    alone, _ = run_scaled(scaled, registry, records, lambda _p, _i: "a")
    half = len(records) // 2 + 37  # mid-bucket, mid-window
    # Scale-down: b owned partitions 3-5 and leaves; a takes them from b's committed offsets.
    side, _ = run_scaled(scaled, registry, records, lambda p, i: "b" if p >= 3 and i < half else "a")
    view = side.handler().view()
    assert view["rows_added"]["data"] == len(records), "every prediction counted once"
    events, expected = side.events(), alone.events()
    assert len(expected) >= 3, "several drifted windows to compare"
    assert [payload_of(e) for e in events] == [payload_of(e) for e in expected]


def test_every_drift_event_carries_the_psi_of_all_the_rows_of_its_window(
    scaled: Settings, registry: FakeRegistry
) -> None:
    records = drifting_stream(Feed())
    side, _ = run_scaled(scaled, registry, records, lambda p, _i: "a" if p % 2 else "b")
    binning = fit_binning(reference_frame(), list(FEATURE_NAMES))
    times = np.array([int(r.envelope["event_time"].timestamp() * 1000) for r in records])
    values = np.array([[r.value["features"][n] for n in FEATURE_NAMES] for r in records], dtype=np.float32)
    data = [e for e in side.events() if e["drift_type"] == "data"]
    assert len(data) >= 3
    for event in data:
        start = int(event["window_start"].timestamp() * 1000)
        end = int(event["window_end"].timestamp() * 1000)
        inside = (times >= start) & (times <= end)
        assert int(inside.sum()) == event["window_size"]
        counts = binning.count_matrix(binning.assign(values[inside]))
        psi = psi_from_counts(binning, counts, int(inside.sum()))
        assert event["feature_psi"] == pytest.approx(dict(zip(FEATURE_NAMES, psi.tolist(), strict=True)))


def test_merger_hand_over_continues_from_the_committed_state(
    scaled: Settings, registry: FakeRegistry
) -> None:
    records = drifting_stream(Feed())
    alone, _ = run_scaled(scaled, registry, records, lambda p, _i: "a" if p < 3 else "b")

    side, _ = scaled_log(scaled, registry, records, lambda p, _i: "a" if p < 3 else "b")
    first = side.handler()  # the merger at first
    side.consume(first, upto=side.log[len(side.log) // 4].offset)
    second = side.handler()  # another instance: its state restored at its start, stale from then on
    side.consume(first, upto=side.log[len(side.log) // 2].offset)
    taken_over_at = side.committed_offset
    side.consume(second)  # the first merger left: the second gets the partition at the committed offset
    assert second.state_reloads == 1
    assert side.committed_offset > taken_over_at
    assert second.view()["rows_added"]["data"] == len(records), "every prediction counted once"
    assert [payload_of(e) for e in side.events()] == [payload_of(e) for e in alone.events()]

    # A batch handed out again (an aborted transaction) adds nothing twice.
    replayed = side.log[-5:]
    before = second.snapshot()
    second.handle(replayed, side.outbox)
    assert second.snapshot() == before


def test_quality_verdicts_come_only_from_the_owner_of_partition_zero(
    scaled: Settings, registry: FakeRegistry
) -> None:
    rng = np.random.default_rng(3)
    feed = Feed()
    rows = TransactionGenerator(seed=3, fraud_rate=0.05).generate(2500)
    # A model no better than chance: the champion's live quality is far below its baseline.
    records = partitioned(feed, rows, scorer=lambda x: rng.random(len(x)))
    labels = [feed.label(r["transaction_id"], bool(r["is_fraud"])) for r in rows]
    for record, label in zip(records, labels, strict=True):
        label.partition = record.partition
    single = Harness(scaled.model_copy(update={"scale_out": False}), registry)
    single.run([*records, *labels])
    quality = {scaled.degraded_topic, scaled.evaluation_topic}
    expected = [payload_of(e) for t, e in single.published if t in quality]
    assert expected, "the single instance finds the degradation"

    published = {}
    for first in (True, False):
        instance = Instance(scaled, registry, "a", first=first)
        for i in range(0, len(records) + len(labels), 300):
            instance.handle([*records, *labels][i : i + 300])
        instance.take(scaled.partials_topic)
        published[first] = instance.published
    assert [payload_of(e) for t, e in published[True] if t in quality] == expected
    assert published[False] == []


def test_predictions_wait_for_a_reference_to_be_binned_with(scaled: Settings) -> None:
    instance = Instance(scaled, FakeRegistry(), "a")
    records = partitioned(Feed(), TransactionGenerator(seed=2).generate(10))
    with pytest.raises(RetryableError, match="no reference"):
        instance.handle(records)
