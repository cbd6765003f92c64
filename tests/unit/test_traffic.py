"""The traffic driver (constellation.traffic) without a broker: fake producers, mocked ingest."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from constellation import traffic
from fraud_model.contract import TRANSACTION_FIELDS
from fraud_model.generator import TransactionGenerator
from mlops_platform.contracts import Topic

REQUEST = Topic.PREDICTION_REQUEST.value
FEEDBACK = Topic.PREDICTION_FEEDBACK.value


class FakeProducer:
    """Records what an EventProducer would have sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(
        self, topic: str, value: dict[str, Any], key: str | None = None, *, schema_topic: str | None = None
    ) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, "schema_topic": schema_topic})

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0


def ingest(status: int, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"detail": "refused"} if status != 202 else {})

    return httpx.MockTransport(handle)


def test_transactions_are_contract_fields_with_unique_ids() -> None:
    txns = traffic.transactions(50, seed=3, prefix="run")
    assert [t["transaction_id"] for t in txns] == [f"run-{i}" for i in range(50)]
    assert all(set(t) == set(TRANSACTION_FIELDS) for t in txns)
    assert traffic.transactions(2)[0]["transaction_id"] != traffic.transactions(2)[0]["transaction_id"]


def test_a_pool_reuses_its_rows_under_fresh_ids() -> None:
    pool = traffic.TransactionPool.generate(3, seed=1)
    taken = list(pool.take(7, "p"))
    assert [t["transaction_id"] for t in taken] == [f"p-{i}" for i in range(7)]
    assert {k: v for k, v in taken[4].items() if k != "transaction_id"} == {
        k: v for k, v in pool.rows[1].items() if k != "transaction_id"
    }


def test_request_event_carries_the_scheduled_time() -> None:
    [txn] = traffic.transactions(1, prefix="e")
    event = traffic.request_event(txn, source="bench", event_time=1_700_000_000.5)
    assert event["envelope"]["source"] == "bench"
    assert event["envelope"]["event_time"] == datetime.fromtimestamp(1_700_000_000.5, UTC)
    assert event["transaction_id"] == "e-0"


def test_send_requests_keys_by_id_and_keeps_the_contract_on_private_topics() -> None:
    producer = FakeProducer()
    txns = traffic.transactions(3, prefix="k")
    events = traffic.send_requests(producer, REQUEST, txns)  # type: ignore[arg-type]
    traffic.send_requests(producer, "private.requests", txns[:1])  # type: ignore[arg-type]
    assert [s["key"] for s in producer.sent] == ["k-0", "k-1", "k-2", "k-0"]
    assert [s["schema_topic"] for s in producer.sent] == [None, None, None, REQUEST]
    assert [s["value"] for s in producer.sent[:3]] == events


def test_labels_go_to_feedback_once_due() -> None:
    producer = FakeProducer()
    labels = traffic.DelayedLabelSender(producer, (5.0, 5.0), drop_rate=0.0)  # type: ignore[arg-type]
    rows = TransactionGenerator(seed=2).generate(20)
    labels.schedule(rows, now=100.0)
    assert labels.send_due(now=104.0) == 0
    assert labels.send_due(now=105.0) == 20
    assert {s["topic"] for s in producer.sent} == {FEEDBACK}
    assert [s["value"]["is_fraud"] for s in producer.sent] == [bool(r["is_fraud"]) for r in rows]
    assert labels.sent == 20


def test_ingest_sender_posts_batches_and_counts_refusals() -> None:
    seen: list[httpx.Request] = []
    refusals: list[int] = []
    sender = traffic.IngestSender(
        "http://ingest",
        batch_size=2,
        transport=ingest(202, seen),
        on_refused=lambda s, _b: refusals.append(s),
    )
    prepared = sender.prepare([(t, 1_700_000_000.0) for t in traffic.transactions(5, prefix="i")])
    assert sender.send(prepared) == 5
    assert [len(json.loads(r.content)["transactions"]) for r in seen] == [2, 2, 1]
    assert json.loads(seen[0].content)["transactions"][0]["event_time"].startswith("2023-11-14T22:13:20")
    refusing = traffic.IngestSender(
        "http://ingest", transport=ingest(503, seen), on_refused=lambda s, _b: refusals.append(s)
    )
    assert refusing.send(prepared) == 0
    assert (refusing.failures, refusing.errors, refusals) == (5, 0, [503])


def test_live_traffic_schedules_labels_only_for_accepted_transactions() -> None:
    seen: list[httpx.Request] = []
    producer = FakeProducer()
    labels = traffic.DelayedLabelSender(producer, (0.0, 0.0), drop_rate=0.0)  # type: ignore[arg-type]
    live = traffic.LiveTraffic("http://ingest", 40.0, labels, transport=ingest(202, seen))
    live.tick(10)
    assert (live.counters.transactions, live.counters.labels, live.counters.interactions) == (10, 10, 2)
    assert [r.url.path for r in seen][0] == "/transactions/batch"
    assert {r.url.path for r in seen[1:]} <= {"/interactions", "/clicks"}
    refused = traffic.LiveTraffic("http://ingest", 40.0, labels, transport=ingest(503, []))
    refused.tick(10)
    assert (refused.counters.transactions, refused.counters.rejected, refused.counters.labels) == (0, 10, 0)
