"""Checkpointed handler state for exactly-once stream loops.

A handler that keeps state across records (windows, pending joins, counters) loses it
when its process dies, and an exactly-once loop replays from the committed offsets: the
state must be committed *with* those offsets, or the replay would count records twice
(state newer than the offsets) or forget them (state older). The owner of such a handler
implements :class:`Stateful`, and :class:`~mlops_platform.kafka.StreamLoop` (exactly-once
only, ``state=...``) then:

* on every transaction commit, writes ``snapshot()`` to a compacted state topic inside the
  same transaction as the outputs and the input offsets: all three become visible to
  read_committed readers together, or none does;
* when a transaction aborts (a transient failure, a failed commit, lost partitions),
  calls ``restore()`` with the last committed snapshot, because the handler already
  absorbed records that will now be consumed again;
* at start, before consuming, reads the latest committed snapshot for its key
  (``<group id>/<instance id>``: a restarted instance finds its own) and restores it
  (``restore(None)`` when there is none: start empty).

The snapshot bytes are the owner's (use a plain, versioned encoding, never pickle: the
topic outlives the code that wrote it). On the topic they are zlib-compressed and cut
into chunks below the default message size limit; a snapshot is chunks
``<key>#0 .. <key>#n-1``, each carrying a small header (format, sequence, index, count),
all written in one transaction; chunk keys a smaller snapshot no longer uses get
tombstones so compaction removes them.
"""

from __future__ import annotations

import struct
import time
import zlib
from typing import Protocol, runtime_checkable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from mlops_platform.errors import KafkaUnavailable
from mlops_platform.logs import get_logger
from mlops_platform.settings import PlatformSettings

from .admin import consume_to_end, create_topic

log = get_logger(__name__)

#: Format of the chunk header; bumped when the framing changes.
CHUNK_FORMAT = 1
#: Payload bytes per chunk: below the brokers' and producers' default 1 MB message limit.
DEFAULT_CHUNK_BYTES = 900_000
_HEADER = struct.Struct(">BQII")  # format, sequence, chunk index, chunk count


class StateError(Exception):
    """A stored snapshot cannot be read (unknown format, missing or inconsistent chunks)."""


@runtime_checkable
class Stateful(Protocol):
    """What the owner of a stateful handler implements for :class:`StreamLoop` checkpoints."""

    def snapshot(self) -> bytes:
        """The handler's whole state as bytes (called on the loop thread, between batches)."""
        ...

    def restore(self, snapshot: bytes | None) -> None:
        """Replace the state by a snapshot taken earlier; ``None``: the initial (empty) state."""
        ...


def state_key(group_id: str, instance_id: str) -> str:
    """Key of a loop's snapshots: its consumer group and the instance that runs it."""
    if not group_id or not instance_id:
        raise ValueError("a state key needs both a group id and an instance id")
    return f"{group_id}/{instance_id}"


def encode_chunks(payload: bytes, sequence: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[bytes]:
    """Compress ``payload`` and frame it as the chunks of snapshot number ``sequence``."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    packed = zlib.compress(payload, 6)
    parts = [packed[i : i + chunk_bytes] for i in range(0, len(packed), chunk_bytes)] or [b""]
    count = len(parts)
    return [_HEADER.pack(CHUNK_FORMAT, sequence, index, count) + part for index, part in enumerate(parts)]


def decode_chunks(chunks: dict[int, bytes]) -> tuple[int, bytes]:
    """``(sequence, payload)`` of a snapshot from its chunks by index (stale extra indexes are ignored)."""
    first = chunks.get(0)
    if first is None:
        raise StateError("snapshot has no first chunk")
    fmt, sequence, _, count = _header(first)
    parts: list[bytes] = []
    for index in range(count):
        chunk = chunks.get(index)
        if chunk is None:
            raise StateError(f"snapshot {sequence} lacks chunk {index} of {count}")
        c_fmt, c_seq, c_index, c_count = _header(chunk)
        if (c_fmt, c_seq, c_index, c_count) != (fmt, sequence, index, count):
            raise StateError(f"chunk {index} belongs to snapshot {c_seq}, not {sequence}")
        parts.append(chunk[_HEADER.size :])
    try:
        return sequence, zlib.decompress(b"".join(parts))
    except zlib.error as exc:
        raise StateError(f"snapshot {sequence} is corrupt: {exc}") from exc


def _header(chunk: bytes) -> tuple[int, int, int, int]:
    if len(chunk) < _HEADER.size:
        raise StateError("snapshot chunk shorter than its header")
    fmt, sequence, index, count = _HEADER.unpack_from(chunk)
    if fmt != CHUNK_FORMAT:
        raise StateError(f"unknown snapshot chunk format {fmt}")
    return fmt, sequence, index, count


class StateTopic:
    """A loop's snapshots on a compacted topic: create it, read the latest, write one in a transaction."""

    def __init__(
        self,
        settings: PlatformSettings,
        topic: str,
        key: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.key = key
        self.chunk_bytes = chunk_bytes
        self.sequence = 0
        self._chunks_written = 0  # of the latest snapshot (more keys than that get tombstones)
        self._pending: tuple[int, int, bytes | None] = (0, 0, None)
        #: the payload of the latest committed snapshot (what an abort restores)
        self.last_written: bytes | None = None

    def ensure(self) -> None:
        """Create the topic if missing: one partition, compacted, replicated like the catalogue's topics.

        The catalogue's largest replication factor, capped at the cluster's brokers (one
        on a laptop); with three replicas one may be lost (``min.insync.replicas`` 2).
        """
        if create_topic(self.settings, self.topic, 1, {"cleanup.policy": "compact"}):
            log.info("state_topic_created", topic=self.topic)

    def _chunk_key(self, index: int) -> bytes:
        return f"{self.key}#{index}".encode()

    def load(self, group_id: str) -> bytes | None:
        """The latest committed snapshot of this key (read_committed, to the end of the topic), or None."""
        timeout_s = self.settings.request_timeout_s * 6
        consumer = Consumer(
            self.settings.consumer_config(
                group_id,
                f"{self.key}-state-reader",
                **{"enable.partition.eof": True, "isolation.level": "read_committed"},
            )
        )
        prefix = f"{self.key}#".encode()
        chunks: dict[int, bytes] = {}
        try:
            partition = TopicPartition(self.topic, 0)
            _, high = consumer.get_watermark_offsets(partition, timeout=timeout_s)
            if high <= 0:
                return None
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            started = time.monotonic()
            for msg in consume_to_end(consumer, self.topic, {0: high}, timeout_s):
                key = msg.key() or b""
                if not key.startswith(prefix):
                    continue
                index = int(key[len(prefix) :])
                value = msg.value()
                if value is None:
                    chunks.pop(index, None)
                else:
                    chunks[index] = value
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read state topic {self.topic}: {exc}") from exc
        finally:
            consumer.close()
        if not chunks:
            return None
        self.sequence, payload = decode_chunks(chunks)
        self._chunks_written = max(chunks) + 1
        self.last_written = payload
        log.info(
            "state_loaded",
            topic=self.topic,
            key=self.key,
            sequence=self.sequence,
            bytes=len(payload),
            seconds=round(time.monotonic() - started, 3),
        )
        return payload

    def write(self, producer: Producer, payload: bytes) -> int:
        """Produce a snapshot into ``producer``'s open transaction; returns its sequence.

        The sequence only counts as written once the transaction commits
        (:meth:`committed`); an aborted write leaves the stored one in force.
        """
        sequence = self.sequence + 1
        chunks = encode_chunks(payload, sequence, self.chunk_bytes)
        for index, chunk in enumerate(chunks):
            self._produce(producer, self._chunk_key(index), chunk)
        for index in range(len(chunks), self._chunks_written):
            self._produce(producer, self._chunk_key(index), None)
        self._pending = (sequence, len(chunks), payload)
        return sequence

    def committed(self) -> None:
        """The transaction holding the last :meth:`write` committed."""
        self.sequence, self._chunks_written, self.last_written = self._pending

    def _produce(self, producer: Producer, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                producer.produce(self.topic, value=value, key=key, partition=0)
                return
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain it
