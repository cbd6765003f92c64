"""Recent labelled training data, read back from the topics.

Transactions travel on ``prediction.request`` (the contract fields the feature builder
needs) and their ground truth arrives later on ``prediction.feedback``. A retrain joins
the two by ``transaction_id`` over a recent window of event time: labels are read first
(from the window start to the current end), then requests of the same window are kept
when a label exists. The most recent ``max_rows`` labelled rows are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fraud_model.contract import LABEL_KEY, TRANSACTION_FIELDS
from mlops_platform.contracts import Topic
from mlops_platform.errors import PlatformError
from mlops_platform.logs import get_logger
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

log = get_logger(__name__)


class DataUnavailable(RuntimeError):
    """The window could not be read (Kafka down, timeout)."""


@dataclass
class LabelledData:
    frame: pd.DataFrame
    window_s: float
    requests_read: int
    labels_read: int

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def positives(self) -> int:
        if self.frame.empty:
            return 0
        return int(self.frame[LABEL_KEY].astype(bool).sum())


def read_window(
    settings: PlatformSettings,
    serde: AvroSerde,
    topic: str,
    schema_topic: str,
    since_ms: int,
    on_value: Callable[[dict[str, Any], int], None],
    timeout_s: float,
    group_id: str,
) -> int:
    """Decode every record of ``topic`` from ``since_ms`` (record time) to the current end."""
    request_timeout = settings.request_timeout_s * 2
    consumer = Consumer(
        settings.consumer_config(
            group_id,
            client_id=f"{group_id}-reader",
            **{"enable.partition.eof": True, "fetch.max.bytes": 52428800},
        )
    )
    count = 0
    try:
        metadata = consumer.list_topics(topic, timeout=request_timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise DataUnavailable(f"cannot read {topic}: {metadata.error if metadata else 'no such topic'}")
        partitions = sorted(metadata.partitions)
        starts = {
            tp.partition: tp.offset
            for tp in consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], timeout=request_timeout
            )
        }
        remaining: dict[int, int] = {}
        assign: list[TopicPartition] = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=request_timeout)
            start = starts.get(p, -1)
            start = high if start < 0 else max(start, low)
            if start < high:
                remaining[p] = high
                assign.append(TopicPartition(topic, p, start))
        if not assign:
            return 0
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise DataUnavailable(f"reading {topic} did not finish within {timeout_s:.0f}s")
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                partition = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.pop(partition, None)
                    elif err.fatal():
                        raise DataUnavailable(f"reading {topic}: {err}")
                    continue
                offset = msg.offset() or 0
                if partition not in remaining or offset >= remaining[partition]:
                    remaining.pop(partition, None)
                    continue
                try:
                    value = serde.decode(topic, msg.value(), schema_topic=schema_topic)
                except PlatformError as exc:
                    log.debug("training_record_skipped", topic=topic, offset=offset, error=str(exc))
                else:
                    on_value(value, msg.timestamp()[1])
                    count += 1
                if offset + 1 >= remaining.get(partition, 0):
                    remaining.pop(partition, None)
            if remaining:
                for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                    if tp.offset >= remaining.get(tp.partition, 0):
                        remaining.pop(tp.partition, None)
    except KafkaException as exc:
        raise DataUnavailable(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()
    return count


def collect_labelled(
    settings: PlatformSettings,
    serde: AvroSerde,
    *,
    request_topic: str,
    feedback_topic: str,
    window_s: float,
    max_rows: int,
    timeout_s: float,
    group_id: str,
    now_ms: int | None = None,
) -> LabelledData:
    """Labelled transactions of the last ``window_s`` seconds (most recent ``max_rows``)."""
    since_ms = int((now_ms if now_ms is not None else time.time() * 1000) - window_s * 1000)
    labels: dict[str, bool] = {}

    def on_label(value: dict[str, Any], _ts: int) -> None:
        labels[str(value["transaction_id"])] = bool(value["is_fraud"])

    labels_read = read_window(
        settings,
        serde,
        feedback_topic,
        Topic.PREDICTION_FEEDBACK,
        since_ms,
        on_label,
        timeout_s,
        group_id,
    )
    rows: list[dict[str, Any]] = []
    stamps: list[int] = []

    def on_request(value: dict[str, Any], ts: int) -> None:
        label = labels.get(str(value.get("transaction_id")))
        if label is None:
            return
        row = {name: value.get(name) for name in TRANSACTION_FIELDS}
        row[LABEL_KEY] = label
        rows.append(row)
        stamps.append(ts)

    requests_read = read_window(
        settings,
        serde,
        request_topic,
        Topic.PREDICTION_REQUEST,
        since_ms,
        on_request,
        timeout_s,
        group_id,
    )
    frame = pd.DataFrame.from_records(rows, columns=[*TRANSACTION_FIELDS, LABEL_KEY])
    if len(frame) > max_rows:
        frame["_ts"] = stamps
        frame = frame.sort_values("_ts").tail(max_rows).drop(columns="_ts").reset_index(drop=True)
    # A transaction published twice (client retry) is one training row.
    frame = frame.drop_duplicates(subset="transaction_id", keep="last").reset_index(drop=True)
    return LabelledData(frame=frame, window_s=window_s, requests_read=requests_read, labels_read=labels_read)
