"""The ingest request models: the transaction contract, hard checks and their messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from fraud_model.contract import (
    CHANNELS,
    DEVICE_TYPES,
    LABEL_SOURCES,
    MERCHANT_CATEGORIES,
    RANGES,
    TRANSACTION_FIELDS,
    find_quality_issues,
    transaction_payload,
)
from fraud_model.generator import SCENARIOS, TransactionGenerator
from ingest.models import (
    ClickCreate,
    FeedbackCreate,
    InteractionCreate,
    LabelFeedbackCreate,
    TransactionBatchCreate,
    TransactionCreate,
)


def txn(**changes: Any) -> dict[str, Any]:
    record = transaction_payload(TransactionGenerator(seed=11).generate(1)[0])
    record.update(changes)
    return record


def errors_of(model: Any, data: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [dict(error) for error in info.value.errors()]


def test_transaction_model_mirrors_the_contract() -> None:
    schema = TransactionCreate.model_json_schema()
    properties = schema["properties"]
    assert set(properties) == {*TRANSACTION_FIELDS, "event_time"}
    # Everything but the optional id and time is required.
    assert set(schema["required"]) == set(TRANSACTION_FIELDS) - {"transaction_id"}
    for field, (low, high) in RANGES.items():
        assert (properties[field]["minimum"], properties[field]["maximum"]) == (low, high), field
    assert properties["merchant_category"]["enum"] == list(MERCHANT_CATEGORIES)
    assert properties["channel"]["enum"] == list(CHANNELS)
    assert properties["device_type"]["enum"] == list(DEVICE_TYPES)
    assert LabelFeedbackCreate.model_json_schema()["properties"]["label_source"]["enum"] == list(
        LABEL_SOURCES
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_generated_transactions_are_valid(scenario: str) -> None:
    rows = TransactionGenerator(seed=5, scenario=scenario).generate(500)
    for row in rows:
        assert find_quality_issues(row) == []
        model = TransactionCreate.model_validate(row)  # the hidden label is an ignored extra key
        assert model.model_dump(exclude={"event_time"}) == transaction_payload(row)


@pytest.mark.parametrize(
    ("changes", "field", "error_type", "fragment"),
    [
        ({"amount": 0.0}, "amount", "greater_than_equal", "0.01"),
        ({"amount": 2_000_000.0}, "amount", "less_than_equal", "1000000"),
        ({"amount": float("nan")}, "amount", "finite_number", "finite"),
        ({"amount": "12.5"}, "amount", "float_type", "valid number"),
        ({"hour_of_day": 24}, "hour_of_day", "less_than_equal", "23"),
        ({"hour_of_day": 3.5}, "hour_of_day", "int_type", "integer"),
        ({"customer_age": 12}, "customer_age", "greater_than_equal", "18"),
        ({"merchant_risk_score": 1.5}, "merchant_risk_score", "less_than_equal", "1"),
        ({"card_present": 1}, "card_present", "bool_type", "boolean"),
        (
            {"merchant_category": "casino"},
            "merchant_category",
            "unknown_category",
            "expected one of: grocery",
        ),
        ({"channel": "fax"}, "channel", "unknown_category", "pos, online"),
        ({"country": "usa"}, "country", "invalid_code", "ISO 3166-1 alpha-2"),
        ({"home_country": "us"}, "home_country", "invalid_code", "upper-case"),
        ({"currency": "EURO"}, "currency", "invalid_code", "ISO 4217"),
        ({"account_id": "  "}, "account_id", "string_too_short", "at least 1"),
        ({"transaction_id": "has space"}, "transaction_id", "string_pattern_mismatch", "pattern"),
        (
            {"txn_count_1h": 9, "txn_count_24h": 3},
            "txn_count_24h",
            "inconsistent",
            "at least txn_count_1h (9)",
        ),
    ],
)
def test_invalid_values_are_refused_with_field_reasons(
    changes: dict[str, Any], field: str, error_type: str, fragment: str
) -> None:
    errors = errors_of(TransactionCreate, txn(**changes))
    assert [(e["loc"], e["type"]) for e in errors] == [((field,), error_type)]
    assert fragment in errors[0]["msg"]


def test_missing_fields_are_each_reported() -> None:
    record = txn()
    del record["amount"], record["channel"]
    errors = errors_of(TransactionCreate, record)
    assert {(e["loc"], e["type"]) for e in errors} == {(("amount",), "missing"), (("channel",), "missing")}


def test_transaction_id_and_event_time_are_optional() -> None:
    record = txn()
    del record["transaction_id"]
    model = TransactionCreate.model_validate({**record, "event_time": "2026-03-01T12:00:00"})
    assert model.transaction_id is None
    # A naive time is read as UTC; an aware one is converted to UTC.
    assert model.event_time == datetime(2026, 3, 1, 12, tzinfo=UTC)
    aware = TransactionCreate.model_validate({**record, "event_time": "2026-03-01T14:00:00+02:00"})
    assert aware.event_time == datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"])
def test_an_event_time_outside_utcs_range_is_a_validation_error(moment: str) -> None:
    # Both parse as aware datetimes; only their conversion to UTC overflows.
    for model, data in (
        (TransactionCreate, txn()),
        (InteractionCreate, {"user_id": "u-1", "item_id": "i-1", "interaction_type": "view"}),
    ):
        errors = errors_of(model, {**data, "event_time": moment})
        assert [(e["loc"], e["type"]) for e in errors] == [(("event_time",), "value_error")]
        assert "outside the years 1 to 9999 in UTC" in errors[0]["msg"]


def test_batch_needs_records_and_unique_ids() -> None:
    assert errors_of(TransactionBatchCreate, {"transactions": []})[0]["type"] == "too_short"
    first, second = txn(transaction_id="t-1"), txn(transaction_id="t-1")
    errors = errors_of(TransactionBatchCreate, {"transactions": [first, second]})
    assert errors[0]["type"] == "duplicate_id"
    assert "'t-1' at positions 0 and 1" in errors[0]["msg"]
    # Server-assigned ids cannot collide: records without an id are fine.
    del first["transaction_id"], second["transaction_id"]
    assert len(TransactionBatchCreate.model_validate({"transactions": [first, second]}).transactions) == 2


def test_interaction_rules() -> None:
    base = {"user_id": "u1", "item_id": "i1"}
    assert InteractionCreate.model_validate({**base, "interaction_type": "view"}).rating is None
    assert (
        InteractionCreate.model_validate({**base, "interaction_type": "rating", "rating": 4.5}).rating == 4.5
    )
    assert errors_of(InteractionCreate, {**base, "interaction_type": "rating"})[0]["loc"] == ("rating",)
    assert (
        "only accepted with interaction_type 'rating'"
        in (errors_of(InteractionCreate, {**base, "interaction_type": "like", "rating": 3.0})[0]["msg"])
    )
    assert errors_of(InteractionCreate, {**base, "interaction_type": "rating", "rating": 6.0})[0]["type"] == (
        "less_than_equal"
    )
    assert (
        errors_of(InteractionCreate, {**base, "interaction_type": "stare"})[0]["type"] == "unknown_category"
    )
    assert errors_of(InteractionCreate, {**base, "interaction_type": "view", "context": {"page": 3}})[0][
        "loc"
    ] == ("context", "page")


def test_click_label_and_feedback_rules() -> None:
    click = {"user_id": "u", "item_id": "i", "recommendation_id": "r", "strategy": "popular", "position": 0}
    assert ClickCreate.model_validate(click).position == 0
    assert errors_of(ClickCreate, {**click, "position": -1})[0]["loc"] == ("position",)

    label = {"transaction_id": "t-1", "is_fraud": True, "label_source": "chargeback"}
    assert LabelFeedbackCreate.model_validate(label).is_fraud is True
    assert errors_of(LabelFeedbackCreate, {**label, "is_fraud": "yes"})[0]["type"] == "bool_type"
    assert (
        errors_of(LabelFeedbackCreate, {**label, "label_source": "rumour"})[0]["type"] == "unknown_category"
    )

    assert FeedbackCreate.model_validate({"user_id": "u", "feedback_type": "thumbs_up"}).item_id is None
    assert errors_of(FeedbackCreate, {"user_id": "u", "feedback_type": "rating"})[0]["loc"] == ("rating",)
    assert errors_of(FeedbackCreate, {"user_id": "u", "feedback_type": "comment", "comment": " "})[0][
        "loc"
    ] == ("comment",)
