"""The chaos tier's ledger counts by id: completed once, lost, duplicated, unexpected."""

from __future__ import annotations

import pytest

from tests.support.chaos import LEDGERS, Ledger, table


def test_counts_by_id() -> None:
    ledger = Ledger("unit")
    ledger.sent(["a", "b", "c", "d"])
    ledger.sent("e")
    ledger.observe(["a", "b", "b", None, "x"])
    ledger.observe("c")
    assert ledger.sent_count == 5
    assert ledger.completed_once == 2
    assert ledger.lost == ["d", "e"]
    assert ledger.duplicated == ["b"]
    assert ledger.unexpected == ["x"]
    assert not ledger.complete()
    with pytest.raises(AssertionError, match="lost 2"):
        ledger.assert_exactly_once()
    ledger.recount(["a", "b", "c", "d", "e"])
    ledger.assert_exactly_once()
    assert ledger in LEDGERS
    LEDGERS.remove(ledger)


def test_first_output_after_a_fault_is_marked_once() -> None:
    ledger = Ledger("unit-recovery")
    ledger.sent(["a", "b"])
    recovery = ledger.fault("predictor")
    assert recovery.first_output_s is None and recovery.ready_s is None
    recovery.ready()
    assert ledger.observe(["a"]) == 1
    first = recovery.first_output_at
    assert first is not None
    ledger.observe(["b"])
    assert recovery.first_output_at == first
    row = ledger.row()
    assert row["recovery"].startswith("predictor: ready ") and row["lost"] == 0
    header, line = table([ledger])
    assert "completed once" in header and "unit-recovery" in line
    LEDGERS.remove(ledger)
