"""The transaction record as it travels on ``prediction.request``, and its label.

Records are plain dicts (the Avro serde of the platform adds the envelope); this
module is the single source of truth for field names, Python types, categorical
vocabularies and the value ranges the ingest service checks.

The *order* of the vocabularies is part of the model contract: the feature builder
encodes categories by their index, so new values may only be appended.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

MERCHANT_CATEGORIES: Final[tuple[str, ...]] = (
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

CHANNELS: Final[tuple[str, ...]] = ("pos", "online", "atm", "mobile_app")

DEVICE_TYPES: Final[tuple[str, ...]] = ("mobile", "desktop", "tablet", "pos_terminal", "atm")

#: ISO 3166-1 alpha-2 codes of the countries the platform sees traffic from.
COUNTRIES: Final[tuple[str, ...]] = (
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "KR",
    "JP",
    "CN",
    "SG",
    "IN",
    "AU",
    "CA",
    "BR",
    "MX",
    "AE",
    "ZA",
    "NG",
    "RU",
)

#: Presentment currency per country. ``amount`` itself is always expressed in the
#: settlement currency (USD-equivalent), so amounts are comparable across countries.
COUNTRY_CURRENCY: Final[dict[str, str]] = {
    "US": "USD",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "NL": "EUR",
    "KR": "KRW",
    "JP": "JPY",
    "CN": "CNY",
    "SG": "SGD",
    "IN": "INR",
    "AU": "AUD",
    "CA": "CAD",
    "BR": "BRL",
    "MX": "MXN",
    "AE": "AED",
    "ZA": "ZAR",
    "NG": "NGN",
    "RU": "RUB",
}

CURRENCIES: Final[tuple[str, ...]] = tuple(dict.fromkeys(COUNTRY_CURRENCY.values()))

#: Python type of every field of a transaction, in Avro schema order.
FIELD_TYPES: Final[dict[str, type]] = {
    "transaction_id": str,
    "account_id": str,
    "merchant_id": str,
    "amount": float,
    "currency": str,
    "merchant_category": str,
    "channel": str,
    "device_type": str,
    "country": str,
    "home_country": str,
    "hour_of_day": int,
    "day_of_week": int,
    "account_age_days": int,
    "customer_age": int,
    "card_present": bool,
    "is_new_device": bool,
    "distance_from_home_km": float,
    "txn_count_1h": int,
    "txn_count_24h": int,
    "amount_sum_24h": float,
    "amount_avg_30d": float,
    "days_since_last_txn": float,
    "failed_logins_24h": int,
    "merchant_risk_score": float,
    "ip_risk_score": float,
    "email_domain_age_days": int,
    "credit_limit": float,
    "installment_months": int,
}

#: Field names of a transaction record, in Avro schema order.
TRANSACTION_FIELDS: Final[tuple[str, ...]] = tuple(FIELD_TYPES)

STRING_FIELDS: Final[tuple[str, ...]] = tuple(f for f, t in FIELD_TYPES.items() if t is str)
BOOL_FIELDS: Final[tuple[str, ...]] = tuple(f for f, t in FIELD_TYPES.items() if t is bool)
INT_FIELDS: Final[tuple[str, ...]] = tuple(f for f, t in FIELD_TYPES.items() if t is int)
FLOAT_FIELDS: Final[tuple[str, ...]] = tuple(f for f, t in FIELD_TYPES.items() if t is float)

#: Inclusive valid range of every numeric field (data-quality checks at ingest).
RANGES: Final[dict[str, tuple[float, float]]] = {
    "amount": (0.01, 1_000_000.0),
    "hour_of_day": (0, 23),
    "day_of_week": (0, 6),
    "account_age_days": (0, 36_500),
    "customer_age": (18, 120),
    "distance_from_home_km": (0.0, 20_050.0),  # half the Earth's circumference
    "txn_count_1h": (0, 1_000),
    "txn_count_24h": (0, 10_000),
    "amount_sum_24h": (0.0, 10_000_000.0),
    "amount_avg_30d": (0.0, 1_000_000.0),
    "days_since_last_txn": (0.0, 36_500.0),
    "failed_logins_24h": (0, 1_000),
    "merchant_risk_score": (0.0, 1.0),
    "ip_risk_score": (0.0, 1.0),
    "email_domain_age_days": (0, 36_500),
    "credit_limit": (0.0, 10_000_000.0),
    "installment_months": (0, 60),
}

#: Closed vocabularies of the categorical fields.
VOCABULARIES: Final[dict[str, tuple[str, ...]]] = {
    "merchant_category": MERCHANT_CATEGORIES,
    "channel": CHANNELS,
    "device_type": DEVICE_TYPES,
    "country": COUNTRIES,
    "home_country": COUNTRIES,
    "currency": CURRENCIES,
}

#: Key of the hidden ground truth in generated records; never a model input.
LABEL_KEY: Final[str] = "is_fraud"

#: Fields of a ``prediction.feedback`` label (delivered separately, later).
FEEDBACK_FIELDS: Final[tuple[str, ...]] = ("transaction_id", "is_fraud", "label_source")

#: Where a label comes from.
LABEL_SOURCES: Final[tuple[str, ...]] = ("chargeback", "customer_report", "manual_review", "no_dispute")


@dataclass(frozen=True, slots=True)
class QualityIssue:
    """One data-quality problem of a record.

    ``kind`` is one of ``missing``, ``type``, ``range``, ``vocabulary``, ``inconsistent``.
    """

    field: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """Plain-dict form, e.g. for an event payload."""
        return asdict(self)


def _type_ok(value: Any, expected: type) -> bool:
    # bool is a subclass of int, so it has to be ruled out explicitly for numbers.
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, expected)


def find_quality_issues(record: Mapping[str, Any]) -> list[QualityIssue]:
    """Check a transaction against the contract.

    Reports missing fields, wrong types, out-of-range numbers (NaN counts as out of
    range), categories outside the vocabularies and cross-field inconsistencies.
    An empty list means the record is clean. Extra keys are ignored.
    """
    issues: list[QualityIssue] = []
    for name, expected in FIELD_TYPES.items():
        value = record.get(name)
        if value is None:
            issues.append(QualityIssue(name, "missing", "field is missing or null"))
            continue
        if not _type_ok(value, expected):
            issues.append(
                QualityIssue(name, "type", f"expected {expected.__name__}, got {type(value).__name__}")
            )
            continue
        if expected is str and not value:
            issues.append(QualityIssue(name, "missing", "empty string"))
            continue
        bounds = RANGES.get(name)
        if bounds is not None:
            low, high = bounds
            number = float(value)
            if math.isnan(number) or not low <= number <= high:
                issues.append(QualityIssue(name, "range", f"{value!r} outside [{low}, {high}]"))
        vocab = VOCABULARIES.get(name)
        if vocab is not None and value not in vocab:
            issues.append(QualityIssue(name, "vocabulary", f"unknown value {value!r}"))

    count_1h, count_24h = record.get("txn_count_1h"), record.get("txn_count_24h")
    # ``type(...) is int`` rather than isinstance: bools were already reported as type errors.
    if type(count_1h) is int and type(count_24h) is int and count_1h > count_24h:
        issues.append(QualityIssue("txn_count_1h", "inconsistent", "txn_count_1h exceeds txn_count_24h"))
    return issues


def transaction_payload(record: Mapping[str, Any]) -> dict[str, Any]:
    """Only the contract fields of ``record`` (drops the hidden label and extras)."""
    return {name: record[name] for name in TRANSACTION_FIELDS}


def feedback_label(transaction_id: str, is_fraud: bool, label_source: str) -> dict[str, Any]:
    """A ``prediction.feedback`` payload (without envelope)."""
    return {"transaction_id": transaction_id, "is_fraud": bool(is_fraud), "label_source": label_source}
