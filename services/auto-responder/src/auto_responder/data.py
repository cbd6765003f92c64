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
from confluent_kafka import Consumer, KafkaException, TopicPartition

from fraud_model.contract import LABEL_KEY, TRANSACTION_FIELDS
from mlops_platform.bindings import Binding
from mlops_platform.errors import KafkaUnavailable, PlatformError
from mlops_platform.kafka import consume_to_end, offsets_since
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
    binding: Binding,
    since_ms: int,
    on_value: Callable[[dict[str, Any], int], None],
    timeout_s: float,
    group_id: str,
) -> int:
    """Decode every record of the bound topic from ``since_ms`` (record time) to the current end."""
    topic = binding.topic
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
        ranges = offsets_since(consumer, topic, since_ms, request_timeout)
        if not ranges:
            return 0
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _end) in ranges.items()])
        ends = {p: end for p, (_start, end) in ranges.items()}
        for msg in consume_to_end(consumer, topic, ends, timeout_s, batch_size=1000):
            try:
                value = serde.decode(topic, msg.value(), schema_topic=binding.schema_topic)
            except PlatformError as exc:
                log.debug("training_record_skipped", topic=topic, offset=msg.offset(), error=str(exc))
                continue
            on_value(value, msg.timestamp()[1])
            count += 1
    except (KafkaException, KafkaUnavailable) as exc:
        raise DataUnavailable(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()
    return count


def collect_labelled(
    settings: PlatformSettings,
    serde: AvroSerde,
    *,
    requests: Binding,
    feedback: Binding,
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
        feedback,
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
        requests,
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
