"""Data-quality issues: validation errors mapped to events, and the soft checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fraud_model.contract import transaction_payload
from fraud_model.generator import TransactionGenerator
from ingest.config import Settings
from ingest.models import TransactionCreate
from ingest.quality import (
    INVALID_VALUE,
    MISSING_FIELD,
    OUT_OF_RANGE,
    REJECTED,
    event_time_warnings,
    issues_from_validation,
    record_count,
    transaction_warnings,
)

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
SETTINGS = Settings()


def model(**changes: Any) -> TransactionCreate:
    record = transaction_payload(TransactionGenerator(seed=21).generate(1)[0])
    record.update({"amount": 50.0, "credit_limit": 2000.0, "amount_avg_30d": 40.0, **changes})
    return TransactionCreate.model_validate(record)


def warnings_of(txn: TransactionCreate) -> list[tuple[str, str]]:
    return [(w.field, w.issue_type) for w in transaction_warnings(txn, "t-1", 0, SETTINGS, NOW)]


def test_a_clean_transaction_has_no_warnings() -> None:
    assert warnings_of(model()) == []


def test_generated_traffic_rarely_warns() -> None:
    rows = TransactionGenerator(seed=8).generate(2000)
    warned = sum(
        bool(transaction_warnings(TransactionCreate.model_validate(r), "t", 0, SETTINGS, NOW)) for r in rows
    )
    assert warned < 20  # soft checks flag outliers, not normal traffic


def test_soft_checks() -> None:
    assert warnings_of(model(amount=2500.0, amount_avg_30d=2000.0)) == [("amount", OUT_OF_RANGE)]
    assert warnings_of(model(amount=1500.0, amount_avg_30d=20.0)) == [("amount", OUT_OF_RANGE)]
    assert warnings_of(model(country="XK", home_country="XK", currency="USD")) == [
        ("country", INVALID_VALUE),
        ("home_country", INVALID_VALUE),
    ]
    assert warnings_of(model(country="US", currency="ABC")) == [("currency", INVALID_VALUE)]
    mismatch = transaction_warnings(model(country="US", currency="EUR"), "t-1", 3, SETTINGS, NOW)
    assert [(w.field, w.record_id, w.index, w.rejected) for w in mismatch] == [("currency", "t-1", 3, False)]
    assert "differs from the currency of US (USD)" in mismatch[0].message
    future = model(country="US", currency="USD", event_time=NOW + timedelta(hours=1))
    assert warnings_of(future) == [("event_time", OUT_OF_RANGE)]
    assert warnings_of(model(country="US", currency="USD", event_time=NOW + timedelta(seconds=30))) == []


def test_event_time_warning_for_other_records() -> None:
    assert event_time_warnings("click", None, 0, SETTINGS, NOW) == []
    [issue] = event_time_warnings("click", NOW + timedelta(days=1), 0, SETTINGS, NOW)
    assert (issue.record_type, issue.field, issue.rejected) == ("click", "event_time", False)


def test_validation_errors_of_a_single_record() -> None:
    errors = [
        {"type": "missing", "loc": ("body", "channel"), "msg": "Field required", "input": {"x": 1}},
        {"type": "less_than_equal", "loc": ("body", "amount"), "msg": "too big", "input": 5e6},
        {"type": "unknown_category", "loc": ("body", "merchant_category"), "msg": "unknown", "input": "x"},
    ]
    issues = issues_from_validation(
        "transaction", errors, {"transaction_id": "t-9"}, id_field="transaction_id"
    )
    assert [(i.issue_type, i.field, i.value, i.record_id, i.index, i.rejected) for i in issues] == [
        (MISSING_FIELD, "channel", None, "t-9", 0, True),
        (OUT_OF_RANGE, "amount", "5000000.0", "t-9", 0, True),
        (INVALID_VALUE, "merchant_category", "x", "t-9", 0, True),
    ]
    assert issues[0].payload() == {
        "record_type": "transaction",
        "issue_type": MISSING_FIELD,
        "field": "channel",
        "value": None,
        "message": "Field required",
        "record_id": "t-9",
        "rejected": True,
    }


def test_validation_errors_of_a_batch() -> None:
    body = {"transactions": [{"transaction_id": "a"}, {"transaction_id": "b"}, "junk"]}
    errors = [
        {
            "type": "greater_than_equal",
            "loc": ("body", "transactions", 1, "amount"),
            "msg": "low",
            "input": -1,
        },
        {
            "type": "model_attributes_type",
            "loc": ("body", "transactions", 2),
            "msg": "not an object",
            "input": "junk",
        },
        {"type": "batch_too_large", "loc": ("body", "transactions"), "msg": "at most 2", "input": None},
    ]
    issues = issues_from_validation(
        "transaction", errors, body, batch_field="transactions", id_field="transaction_id"
    )
    assert [(i.issue_type, i.field, i.record_id, i.index) for i in issues] == [
        (OUT_OF_RANGE, "amount", "b", 1),
        (INVALID_VALUE, "body", None, 2),
        (REJECTED, "transactions", None, None),
    ]
    assert issues[0].message == "record 1: low"
    assert record_count(body, "transactions") == 3
    assert record_count("not json", "transactions") == 1
    assert record_count({"a": 1}, None) == 1


def test_long_values_are_truncated() -> None:
    errors = [{"type": "string_too_long", "loc": ("body", "user_id"), "msg": "long", "input": "x" * 5000}]
    [issue] = issues_from_validation("click", errors, {})
    assert issue.value is not None and len(issue.value) == 200
