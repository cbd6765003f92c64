"""Validated field types and the transaction body, for every HTTP door that takes a transaction.

The ``prediction.request`` contract (:mod:`fraud_model.contract`: names, vocabularies,
valid ranges) as pydantic types, so ingest's ``POST /transactions`` and the predictor's
``POST /score`` refuse the same inputs with the same reasons. Numbers and booleans are
strict (``"12.5"`` or ``1`` for a boolean are refused) and bounded by the contract's
ranges; NaN and infinity are refused: the JSON types must match the Avro contract, so a
client bug surfaces at the door instead of as a skewed feature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from fraud_model.contract import CHANNELS, DEVICE_TYPES, LABEL_SOURCES, MERCHANT_CATEGORIES, RANGES

MAX_ID_LENGTH: Final[int] = 128


def _one_of(name: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    listed = ", ".join(allowed)

    def check(value: str) -> str:
        if value not in allowed:
            raise PydanticCustomError(
                "unknown_category",
                "unknown {field} '{value}'; expected one of: {allowed}",
                {"field": name, "value": value, "allowed": listed},
            )
        return value

    return check


def member_of(name: str, allowed: tuple[str, ...]) -> AfterValidator:
    """Validator of a closed vocabulary (the error names the field and lists the allowed values)."""
    return AfterValidator(_one_of(name, allowed))


def listed_enum(allowed: tuple[str, ...], description: str) -> Any:
    """Schema of a closed vocabulary: listed as an enum in the OpenAPI document."""
    return Field(description=description, json_schema_extra={"enum": list(allowed)})


def ranged(field: str, description: str, **extra: Any) -> Any:
    """A strict number bounded by the contract's valid range for ``field``."""
    low, high = RANGES[field]
    return Field(
        ge=low, le=high, allow_inf_nan=False, description=f"{description} Valid: [{low}, {high}].", **extra
    )


def _iso_code(length: int, standard: str, example: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) != length or not value.isascii() or not value.isalpha() or not value.isupper():
            raise PydanticCustomError(
                "invalid_code",
                "'{value}' is not an {standard} code ({length} upper-case letters, e.g. {example})",
                {"value": value, "standard": standard, "length": length, "example": example},
            )
        return value

    return check


Identifier = Annotated[
    str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)
]
TransactionId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"
    ),
    Field(
        description="Letters, digits and . _ : - (at most 128), e.g. a UUID.",
        examples=["0b8f9d9e-6a4c-4f55-9a43-2c0c6b7a1f10"],
    ),
]
CountryCode = Annotated[
    StrictStr,
    AfterValidator(_iso_code(2, "ISO 3166-1 alpha-2", "US")),
    Field(description="ISO 3166-1 alpha-2 country code (upper case).", examples=["US"]),
]
CurrencyCode = Annotated[
    StrictStr,
    AfterValidator(_iso_code(3, "ISO 4217", "USD")),
    Field(description="ISO 4217 presentment currency (upper case).", examples=["USD"]),
]
MerchantCategory = Annotated[
    StrictStr,
    member_of("merchant_category", MERCHANT_CATEGORIES),
    listed_enum(MERCHANT_CATEGORIES, "Merchant category."),
]
Channel = Annotated[
    StrictStr, member_of("channel", CHANNELS), listed_enum(CHANNELS, "Channel of the payment.")
]
DeviceType = Annotated[
    StrictStr, member_of("device_type", DEVICE_TYPES), listed_enum(DEVICE_TYPES, "Device used.")
]
LabelSource = Annotated[
    StrictStr,
    member_of("label_source", LABEL_SOURCES),
    listed_enum(LABEL_SOURCES, "Where the label comes from."),
]


class TransactionFields(BaseModel):
    """The fields of a card transaction to score, as the ``prediction.request`` contract has them.

    Subclasses add how the door identifies the transaction (required or assigned) and
    anything door-specific. Unknown keys are ignored rather than refused, so a producer
    may send richer records (e.g. a generator row still carrying its hidden label).
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    account_id: Identifier
    merchant_id: Identifier
    amount: StrictFloat = ranged("amount", "Amount in the settlement currency (USD-equivalent).")
    currency: CurrencyCode
    merchant_category: MerchantCategory
    channel: Channel
    device_type: DeviceType
    country: CountryCode
    home_country: CountryCode
    hour_of_day: StrictInt = ranged("hour_of_day", "Local hour of the transaction.")
    day_of_week: StrictInt = ranged("day_of_week", "0 = Monday.")
    account_age_days: StrictInt = ranged("account_age_days", "Age of the account.")
    customer_age: StrictInt = ranged("customer_age", "Age of the card holder in years.")
    card_present: StrictBool
    is_new_device: StrictBool
    distance_from_home_km: StrictFloat = ranged("distance_from_home_km", "Distance from home.")
    txn_count_1h: StrictInt = ranged("txn_count_1h", "Transactions of the account in the last hour.")
    txn_count_24h: StrictInt = ranged(
        "txn_count_24h", "Transactions of the account in the last 24 hours (at least txn_count_1h)."
    )
    amount_sum_24h: StrictFloat = ranged("amount_sum_24h", "Amount spent in the last 24 hours.")
    amount_avg_30d: StrictFloat = ranged("amount_avg_30d", "Average amount over 30 days.")
    days_since_last_txn: StrictFloat = ranged("days_since_last_txn", "Days since the previous one.")
    failed_logins_24h: StrictInt = ranged("failed_logins_24h", "Failed logins in the last 24 hours.")
    merchant_risk_score: StrictFloat = ranged("merchant_risk_score", "Merchant risk score.")
    ip_risk_score: StrictFloat = ranged("ip_risk_score", "IP reputation risk score.")
    email_domain_age_days: StrictInt = ranged("email_domain_age_days", "Age of the e-mail domain.")
    credit_limit: StrictFloat = ranged("credit_limit", "Credit limit of the card.")
    installment_months: StrictInt = ranged("installment_months", "0 = paid in full.")

    @field_validator("txn_count_24h")
    @classmethod
    def _velocity_consistent(cls, value: int, info: ValidationInfo) -> int:
        count_1h = info.data.get("txn_count_1h")
        if isinstance(count_1h, int) and count_1h > value:
            raise PydanticCustomError(
                "inconsistent",
                "txn_count_24h ({value}) must be at least txn_count_1h ({count_1h})",
                {"value": value, "count_1h": count_1h},
            )
        return value
