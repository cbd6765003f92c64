"""Framing of state snapshots on the state topic: compressed, chunked, checked when read back."""

from __future__ import annotations

import os

import pytest

from mlops_platform.kafka import StateError, decode_chunks, encode_chunks, state_key


def test_a_large_snapshot_is_cut_into_chunks_and_read_back() -> None:
    payload = os.urandom(50_000) + b"x" * 200_000  # some incompressible bytes
    chunks = encode_chunks(payload, sequence=7, chunk_bytes=16_000)
    assert len(chunks) > 3 and all(len(c) <= 16_000 + 32 for c in chunks)
    assert decode_chunks(dict(enumerate(chunks))) == (7, payload)


def test_stale_chunks_of_a_larger_older_snapshot_are_ignored() -> None:
    old = encode_chunks(os.urandom(40_000), sequence=1, chunk_bytes=10_000)
    new = encode_chunks(b"small", sequence=2, chunk_bytes=10_000)
    stored = {**dict(enumerate(old)), **dict(enumerate(new))}
    assert len(stored) > len(new)
    assert decode_chunks(stored) == (2, b"small")


def test_inconsistent_or_missing_chunks_are_errors() -> None:
    a = encode_chunks(os.urandom(30_000), sequence=1, chunk_bytes=10_000)
    b = encode_chunks(os.urandom(30_000), sequence=2, chunk_bytes=10_000)
    with pytest.raises(StateError, match="belongs to snapshot 1"):
        decode_chunks({0: b[0], 1: a[1], 2: b[2]})
    with pytest.raises(StateError, match="lacks chunk 1"):
        decode_chunks({0: b[0], 2: b[2]})
    with pytest.raises(StateError, match="no first chunk"):
        decode_chunks({1: b[1]})
    with pytest.raises(StateError, match="format"):
        decode_chunks({0: b"\x09" + b[0][1:]})


def test_state_key_needs_group_and_instance() -> None:
    assert state_key("drift-detector", "a@host") == "drift-detector/a@host"
    with pytest.raises(ValueError):
        state_key("drift-detector", "")
