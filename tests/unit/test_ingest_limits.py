"""Ingest's quotas and limits: token buckets, idempotency keys, body and batch size."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ingest.app import build_app
from ingest.config import Settings
from ingest.limits import IdempotencyConflict, IdempotencyStore, RateLimiter, TokenBucket, fingerprint
from ingest.service import IngestService
from mlops_platform.auth import Role
from mlops_platform.health import CheckResult
from tests.support.keys import KeyedClient, headers
from tests.support.service_apps import transaction
from tests.unit.test_ingest_api import FakePublisher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- token bucket


def test_a_bucket_pays_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=20, tokens=20, updated=0.0)
    assert bucket.take(15, 0.0) == 0
    assert bucket.take(10, 0.0) == pytest.approx(0.5)  # 5 left, 5 missing at 10/s
    assert bucket.take(10, 0.5) == 0  # refused requests take nothing: 5 + 5 refilled
    assert bucket.take(1, 100.0) == 0 and bucket.tokens == 19  # refills up to the capacity only


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket() -> None:
    bucket = TokenBucket(rate=10, capacity=20, tokens=0, updated=0.0)
    assert bucket.take(500, 0.0) == pytest.approx(2.0)
    assert bucket.take(500, 2.0) == 0


def test_each_key_has_its_own_bucket_and_retry_after_is_whole_seconds() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock, max_keys=2)
    assert limiter.take("a", 2) == 0
    assert limiter.take("a", 1) == pytest.approx(1.0)
    assert limiter.take("b", 2) == 0  # another key is not affected
    assert limiter.retry_after(0.01) == "1" and limiter.retry_after(2.2) == "3"
    limiter.take("c", 1)
    assert len(limiter._buckets) == 2  # bounded: the least recently used bucket went


# --------------------------------------------------------------------------- idempotency store


async def test_the_same_key_and_body_get_the_first_answer_another_body_a_conflict() -> None:
    store = IdempotencyStore(window_s=60, max_entries=10)
    assert await store.begin("p", "k", "print-1") is None
    store.finish("p", "k", {"event_ids": ["e1"]})
    assert await store.begin("p", "k", "print-1") == {"event_ids": ["e1"]}
    with pytest.raises(IdempotencyConflict):
        await store.begin("p", "k", "print-2")
    assert await store.begin("other-producer", "k", "print-2") is None  # keys are per API key


async def test_an_abandoned_request_may_be_retried_and_concurrent_duplicates_wait() -> None:
    store = IdempotencyStore(window_s=60, max_entries=10)
    assert await store.begin("p", "k", "x") is None
    store.abandon("p", "k")
    assert await store.begin("p", "k", "x") is None  # the first attempt failed: do the work again
    duplicate = asyncio.ensure_future(store.begin("p", "k", "x"))
    await asyncio.sleep(0)
    assert not duplicate.done()
    store.finish("p", "k", {"ok": True})
    assert await duplicate == {"ok": True}


async def test_entries_expire_after_the_window_and_the_store_is_bounded() -> None:
    clock = Clock()
    store = IdempotencyStore(window_s=10, max_entries=2, clock=clock)
    for key in ("a", "b", "c"):
        assert await store.begin("p", key, "x") is None
        store.finish("p", key, {"key": key})
    assert await store.begin("p", "c", "x") == {"key": "c"}
    assert len(store) <= 3
    assert await store.begin("p", "a", "x") is None  # the oldest was forgotten (bound)
    store.abandon("p", "a")
    clock.now += 11
    assert await store.begin("p", "c", "x") is None  # past its window


def test_fingerprints_depend_on_path_and_body_not_on_key_order() -> None:
    assert fingerprint("/t", {"a": 1, "b": 2}) == fingerprint("/t", {"b": 2, "a": 1})
    assert fingerprint("/t", {"a": 1}) != fingerprint("/u", {"a": 1})
    assert fingerprint("/t", {"a": 1}) != fingerprint("/t", {"a": 2})


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def http() -> Iterator[tuple[KeyedClient, FakePublisher]]:
    settings = Settings(
        max_batch_size=5,
        rate_limit_per_s=1,
        rate_limit_burst=6,
        max_body_bytes=64 * 1024,
        log_format="console",
    )
    health = {"kafka": CheckResult(True, "ok"), "schema_registry": CheckResult(True, "ok")}
    publisher = FakePublisher()
    service = IngestService(
        settings, publisher=publisher, checks={n: (lambda n=n: health[n]) for n in health}
    )  # type: ignore[arg-type]
    with KeyedClient(build_app(settings, service=service), "ingest") as client:
        yield client, publisher


def batch(start: int, size: int) -> dict[str, Any]:
    return {"transactions": [transaction(i, transaction_id=f"t-{i}") for i in range(start, start + size)]}


def test_over_the_quota_answers_429_with_retry_after_and_publishes_nothing(http: Any) -> None:
    client, publisher = http
    assert client.post("/transactions/batch", json=batch(0, 5)).status_code == 202
    refused = client.post("/transactions/batch", json=batch(5, 5))
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "quota" in refused.json()["detail"]
    assert len(publisher.published) == 1
    # Authentication comes first: a key without the producer role is refused, not rate limited.
    assert client.post("/transactions", json=transaction(), headers=headers(Role.OPERATOR)).status_code == 403


def test_a_retried_request_with_the_same_idempotency_key_is_published_once(http: Any) -> None:
    client, publisher = http
    key = {"Idempotency-Key": "retry-1"}
    first = client.post("/transactions/batch", json=batch(0, 2), headers=key)
    again = client.post("/transactions/batch", json=batch(0, 2), headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(publisher.published) == 1
    other = client.post("/transactions/batch", json=batch(2, 2), headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert len(publisher.published) == 1


def test_a_request_refused_for_its_quota_may_be_retried_with_its_key(http: Any) -> None:
    client, publisher = http
    assert client.post("/transactions/batch", json=batch(0, 5)).status_code == 202
    key = {"Idempotency-Key": "after-429"}
    assert client.post("/transactions/batch", json=batch(5, 5), headers=key).status_code == 429
    service: IngestService = client.app.state.ingest  # type: ignore[attr-defined]
    service.quota.take("test-producer", -100)  # refill (time passing)
    assert client.post("/transactions/batch", json=batch(5, 5), headers=key).status_code == 202
    assert len(publisher.published) == 2


def test_an_oversized_body_is_413_and_a_large_batch_422(http: Any) -> None:
    client, publisher = http
    huge = json.dumps({"transactions": [transaction(0)] * 200})
    response = client.post("/transactions/batch", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    too_many = client.post("/transactions/batch", json=batch(0, 6))
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["type"] == "batch_too_large"
    assert publisher.published == []


def test_data_ingested_names_the_producer_key(http: Any) -> None:
    client, publisher = http
    assert client.post("/transactions", json=transaction()).status_code == 202
    [summary] = [o for o in publisher.published[0] if o.topic == "data.ingested"]
    assert summary.value["producer"] == "test-producer"
