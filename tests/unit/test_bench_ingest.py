"""The benchmark's ingest plan (constellation.bench_ingest) without HTTP: which phases run."""

from __future__ import annotations

from typing import Any

import pytest

from constellation import bench_ingest
from constellation.bench_ingest import IngestResult, over_capacity


def test_a_rate_within_the_load_factor_of_saturation_runs() -> None:
    assert over_capacity(80.0, 100.0, "tx/s") is None
    assert over_capacity(5_000.0, None, "ev/s") is None


def test_a_rate_past_the_load_factor_of_saturation_is_skipped_with_the_capacity_in_the_note() -> None:
    note = over_capacity(81.0, 100.0, "tx/s")
    assert note == "skipped: above 80% of saturation (100 tx/s)"


def test_ingest_skips_the_fixed_rates_each_endpoint_cannot_sustain(monkeypatch: pytest.MonkeyPatch) -> None:
    saturation = {1: 120.0, 100: 6_000.0}
    ran: list[tuple[int, float | None]] = []

    async def phase(
        url: str, pool: Any, collector: Any, *, batch_size: int, rate: float | None, **_: Any
    ) -> IngestResult:
        ran.append((batch_size, rate))
        accepted = saturation[batch_size] if rate is None else rate
        return IngestResult(
            endpoint=bench_ingest.endpoint_name(batch_size),
            phase="saturation" if rate is None else f"rate={rate:g}",
            batch_size=batch_size,
            target_rate=rate,
            requests=10,
            sent=10,
            accepted=10,
            refused=0,
            errors=0,
            elapsed_seconds=1.0,
            accepted_per_s=accepted,
            received=10,
            client_cpu_s=0.1,
        )

    monkeypatch.setattr(bench_ingest, "_phase", phase)
    logged: list[str] = []
    results = bench_ingest.run_ingest(
        "http://ingest",
        pool=None,
        collector=None,  # type: ignore[arg-type]
        single_rates=[50, 100, 250],
        batch_rates=[1_000, 5_000],
        batch_size=100,
        duration_s=1.0,
        api_key=None,
        log=logged.append,
    )

    # Single endpoint: 120 tx/s at saturation, so 96 is the most it is driven at.
    assert ran == [(1, None), (1, 50), (100, None), (100, 1_000)]
    rows = {(r["endpoint"], r["phase"]): r for r in results}
    assert len(rows) == 7
    for key, capacity in [
        (("/transactions", "rate=100"), "120 tx/s"),
        (("/transactions", "rate=250"), "120 tx/s"),
        (("/transactions/batch (100/request)", "rate=5000"), "6000 tx/s"),
    ]:
        row = rows[key]
        assert row["requests"] == 0 and row["accepted_per_s"] == 0.0
        assert row["note"] == f"skipped: above 80% of saturation ({capacity})"
    assert rows[("/transactions", "rate=50")]["note"] == ""
    assert sum("skipped" in line for line in logged) == 3
