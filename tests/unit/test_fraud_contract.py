"""Contract of the transaction record and its data-quality checks."""

from __future__ import annotations

import math

import pytest

from fraud_model.contract import (
    CHANNELS,
    COUNTRIES,
    COUNTRY_CURRENCY,
    DEVICE_TYPES,
    FEEDBACK_FIELDS,
    FIELD_TYPES,
    LABEL_KEY,
    MERCHANT_CATEGORIES,
    RANGES,
    TRANSACTION_FIELDS,
    feedback_label,
    find_quality_issues,
    transaction_payload,
)
from fraud_model.generator import TransactionGenerator

EXPECTED_FIELDS = (
    "transaction_id account_id merchant_id amount currency merchant_category channel device_type country "
    "home_country hour_of_day day_of_week account_age_days customer_age card_present is_new_device "
    "distance_from_home_km txn_count_1h txn_count_24h amount_sum_24h amount_avg_30d days_since_last_txn "
    "failed_logins_24h merchant_risk_score ip_risk_score email_domain_age_days credit_limit "
    "installment_months"
).split()


@pytest.fixture
def record() -> dict:
    return TransactionGenerator(seed=3).generate(1)[0]


def test_fields_and_types_match_the_wire_contract() -> None:
    assert list(TRANSACTION_FIELDS) == EXPECTED_FIELDS
    assert FIELD_TYPES["card_present"] is bool and FIELD_TYPES["is_new_device"] is bool
    assert FIELD_TYPES["hour_of_day"] is int and FIELD_TYPES["amount"] is float
    assert LABEL_KEY not in TRANSACTION_FIELDS
    assert FEEDBACK_FIELDS == ("transaction_id", "is_fraud", "label_source")


def test_vocabularies() -> None:
    assert MERCHANT_CATEGORIES == (
        "grocery",
        "restaurant",
        "fuel",
        "retail",
        "electronics",
        "travel",
        "entertainment",
        "online_gaming",
        "crypto_exchange",
        "money_transfer",
        "jewelry",
        "pharmacy",
    )
    assert CHANNELS == ("pos", "online", "atm", "mobile_app")
    assert DEVICE_TYPES == ("mobile", "desktop", "tablet", "pos_terminal", "atm")
    assert all(len(c) == 2 and c.isupper() for c in COUNTRIES)
    assert set(COUNTRY_CURRENCY) == set(COUNTRIES)


def test_ranges_cover_numeric_fields_only() -> None:
    assert set(RANGES) <= {f for f, t in FIELD_TYPES.items() if t in (int, float)}
    assert RANGES["hour_of_day"] == (0, 23)
    assert RANGES["day_of_week"] == (0, 6)
    assert RANGES["merchant_risk_score"] == (0.0, 1.0)
    assert RANGES["amount"][0] > 0


def test_clean_record_has_no_issues(record: dict) -> None:
    assert find_quality_issues(record) == []


def test_missing_and_null_fields(record: dict) -> None:
    del record["amount"]
    record["country"] = None
    issues = {(i.field, i.kind) for i in find_quality_issues(record)}
    assert issues == {("amount", "missing"), ("country", "missing")}


def test_range_type_vocabulary_and_consistency(record: dict) -> None:
    record |= {
        "hour_of_day": 24,
        "ip_risk_score": 1.5,
        "amount": math.nan,
        "txn_count_24h": True,  # bool is not an int here
        "channel": "carrier_pigeon",
        "customer_age": 30.5,
    }
    issues = {(i.field, i.kind) for i in find_quality_issues(record)}
    assert issues == {
        ("hour_of_day", "range"),
        ("ip_risk_score", "range"),
        ("amount", "range"),
        ("txn_count_24h", "type"),
        ("channel", "vocabulary"),
        ("customer_age", "type"),
    }


def test_velocity_inconsistency(record: dict) -> None:
    record |= {"txn_count_1h": 5, "txn_count_24h": 2}
    issues = find_quality_issues(record)
    assert [(i.field, i.kind) for i in issues] == [("txn_count_1h", "inconsistent")]
    assert issues[0].as_dict()["kind"] == "inconsistent"


def test_payload_drops_label_and_feedback_shape(record: dict) -> None:
    payload = transaction_payload(record | {"extra": 1})
    assert list(payload) == list(TRANSACTION_FIELDS)
    label = feedback_label(record["transaction_id"], True, "chargeback")
    assert label == {
        "transaction_id": record["transaction_id"],
        "is_fraud": True,
        "label_source": "chargeback",
    }
