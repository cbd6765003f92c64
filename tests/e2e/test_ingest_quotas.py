"""Ingest's quota and idempotency keys, end to end: nothing accepted is lost, nothing is scored twice.

Ingest runs with a small quota (20 records/s, bursts of 50) next to a predictor with its own
model; a burst over the quota gets 429s with Retry-After, and every transaction that got a
202 yields exactly one ``prediction.completed`` (the refused ones none). A request retried
with the same ``Idempotency-Key`` yields one prediction per transaction too.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from tests.e2e.test_scoring_path import champion, predictor, provisioned  # noqa: F401 - fixtures
from tests.support.processes import ServiceLauncher, ServiceProcess, connection_env
from tests.support.scoring import COMPLETED, transactions
from tests.support.topics import TopicTail

pytestmark = pytest.mark.e2e

RATE, BURST = 20, 50


@pytest.fixture(scope="module")
def limited_ingest(
    provisioned: AvroSerde,  # noqa: F811
    platform_settings: PlatformSettings,
    service_launcher: ServiceLauncher,
) -> ServiceProcess:
    env = {
        **connection_env(platform_settings),
        "INGEST_INSTANCE_ID": f"e2e-quota-{uuid.uuid4().hex[:8]}",
        "INGEST_RATE_LIMIT_PER_S": str(RATE),
        "INGEST_RATE_LIMIT_BURST": str(BURST),
    }
    return service_launcher.start("ingest", "INGEST_", env)


def predictions(
    tail: TopicTail, model_name: str, wanted: set[str], expected: int, timeout_s: float = 180
) -> dict[str, int]:
    """Predictions of ``model_name`` per wanted id, once ``expected`` arrived (and a grace poll)."""
    counts: dict[str, int] = {}

    def take(records: list[Any]) -> None:
        for record in records:
            if record.key in wanted and record.value["model_name"] == model_name:
                counts[record.key] = counts.get(record.key, 0) + 1

    deadline = time.monotonic() + timeout_s
    while sum(counts.values()) < expected and time.monotonic() < deadline:
        take(tail.poll(1))
    take(tail.poll(5))  # a duplicate would arrive right behind
    return counts


def test_a_burst_over_the_quota_gets_429s_and_loses_nothing_it_accepted(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    champion: tuple[str, str],  # noqa: F811
    predictor: ServiceProcess,  # noqa: F811
    limited_ingest: ServiceProcess,
) -> None:
    prefix = f"quota-{uuid.uuid4().hex[:8]}"
    batches = [transactions(10, prefix=f"{prefix}-{n}") for n in range(12)]  # 120 records at once
    tail = TopicTail(platform_settings, serde, [COMPLETED])
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(
                pool.map(lambda b: limited_ingest.post("/transactions/batch", {"transactions": b}), batches)
            )
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {202, 429}, statuses
        assert 429 in statuses and 202 in statuses, statuses
        assert all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 429)
        accepted = {
            t["transaction_id"]
            for b, a in zip(batches, answers, strict=True)
            if a.status_code == 202
            for t in b
        }
        refused = {
            t["transaction_id"]
            for b, a in zip(batches, answers, strict=True)
            if a.status_code == 429
            for t in b
        }
        assert len(accepted) <= BURST + RATE * 5  # the quota held
        counts = predictions(tail, champion[0], accepted | refused, len(accepted))
    finally:
        tail.close()
    assert set(counts) == accepted, (
        f"missing {len(accepted - set(counts))}, unexpected {set(counts) - accepted}"
    )
    assert set(counts.values()) == {1}, "a transaction was scored more than once"


def test_a_retried_request_with_the_same_idempotency_key_is_scored_once(
    platform_settings: PlatformSettings,
    serde: AvroSerde,
    champion: tuple[str, str],  # noqa: F811
    predictor: ServiceProcess,  # noqa: F811
    limited_ingest: ServiceProcess,
) -> None:
    time.sleep(BURST / RATE)  # a full bucket again after the burst test
    batch = transactions(3, prefix=f"idem-{uuid.uuid4().hex[:8]}")
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    tail = TopicTail(platform_settings, serde, [COMPLETED])
    try:
        first = limited_ingest.post("/transactions/batch", {"transactions": batch}, headers=key)
        assert first.status_code == 202, first.text
        # The client timed out and retries, twice (once concurrently with another retry).
        with ThreadPoolExecutor(max_workers=2) as pool:
            retries = list(
                pool.map(
                    lambda _: limited_ingest.post(
                        "/transactions/batch", {"transactions": batch}, headers=key
                    ),
                    range(2),
                )
            )
        for retry in retries:
            assert retry.status_code == 202 and retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json()["event_ids"] == first.json()["event_ids"]
        other = limited_ingest.post("/transactions/batch", {"transactions": batch[:1]}, headers=key)
        assert other.status_code == 422
        wanted = {t["transaction_id"] for t in batch}
        counts = predictions(tail, champion[0], wanted, len(wanted))
    finally:
        tail.close()
    assert counts == dict.fromkeys(wanted, 1)
