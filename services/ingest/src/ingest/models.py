"""Request and response bodies of the ingest API.

The transaction model mirrors the contract in :mod:`fraud_model.contract` (field names,
vocabularies, valid ranges); a unit test keeps the two equal. Numbers and booleans are
strict (``"12.5"`` or ``1`` for a boolean are refused): the JSON types must match the
Avro contract, so a client bug surfaces at the door instead of as a skewed feature.

Everything here is a *hard* check: a violation answers 422 and the record is not
published. Suspicious-but-valid values are reported by :mod:`ingest.quality` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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

#: Interaction types of ``business.user.interaction`` (its schema's documented vocabulary).
INTERACTION_TYPES: Final[tuple[str, ...]] = ("view", "click", "like", "add_to_cart", "purchase", "rating")
#: Feedback types of ``business.feedback.received``.
FEEDBACK_TYPES: Final[tuple[str, ...]] = ("rating", "thumbs_up", "thumbs_down", "comment")
#: Rating scale of interactions and feedback.
RATING_RANGE: Final[tuple[float, float]] = (1.0, 5.0)
MAX_ID_LENGTH: Final[int] = 128


# --------------------------------------------------------------------------- field types


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


def _member_of(name: str, allowed: tuple[str, ...]) -> AfterValidator:
    """Validator of a closed vocabulary."""
    return AfterValidator(_one_of(name, allowed))


def _enum(allowed: tuple[str, ...], description: str) -> Any:
    """Schema of a closed vocabulary: listed as an enum in the OpenAPI document."""
    return Field(description=description, json_schema_extra={"enum": list(allowed)})


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


def _utc(value: datetime) -> datetime:
    # A naive timestamp is read as UTC: the envelope's event_time is always UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
EventTime = Annotated[
    datetime | None,
    AfterValidator(lambda value: None if value is None else _utc(value)),
    Field(
        None,
        description="When the fact happened (ISO 8601; naive means UTC). Defaults to the time of receipt.",
    ),
]
MerchantCategory = Annotated[
    StrictStr,
    _member_of("merchant_category", MERCHANT_CATEGORIES),
    _enum(MERCHANT_CATEGORIES, "Merchant category."),
]
Channel = Annotated[StrictStr, _member_of("channel", CHANNELS), _enum(CHANNELS, "Channel of the payment.")]
DeviceType = Annotated[
    StrictStr, _member_of("device_type", DEVICE_TYPES), _enum(DEVICE_TYPES, "Device used.")
]
InteractionType = Annotated[
    StrictStr,
    _member_of("interaction_type", INTERACTION_TYPES),
    _enum(INTERACTION_TYPES, "What the user did."),
]
LabelSource = Annotated[
    StrictStr, _member_of("label_source", LABEL_SOURCES), _enum(LABEL_SOURCES, "Where the label comes from.")
]
FeedbackType = Annotated[
    StrictStr, _member_of("feedback_type", FEEDBACK_TYPES), _enum(FEEDBACK_TYPES, "Kind of feedback.")
]
Rating = Annotated[StrictFloat, Field(ge=RATING_RANGE[0], le=RATING_RANGE[1], allow_inf_nan=False)]


def _ranged(field: str, description: str, **extra: Any) -> Any:
    """A strict number bounded by the contract's valid range for ``field``."""
    low, high = RANGES[field]
    return Field(
        ge=low, le=high, allow_inf_nan=False, description=f"{description} Valid: [{low}, {high}].", **extra
    )


class _Request(BaseModel):
    # Unknown keys are ignored rather than refused, so a producer may send richer
    # records (e.g. a generator row still carrying its hidden label) without failing.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


# --------------------------------------------------------------------------- requests


class TransactionCreate(_Request):
    """A card transaction to score (the ``prediction.request`` contract)."""

    transaction_id: TransactionId | None = Field(
        None,
        description=(
            "Business id of the transaction. Send your own so that later labels can refer to it; "
            "when absent the server assigns a UUID and returns it."
        ),
    )
    event_time: EventTime = None
    account_id: Identifier
    merchant_id: Identifier
    amount: StrictFloat = _ranged("amount", "Amount in the settlement currency (USD-equivalent).")
    currency: CurrencyCode
    merchant_category: MerchantCategory
    channel: Channel
    device_type: DeviceType
    country: CountryCode
    home_country: CountryCode
    hour_of_day: StrictInt = _ranged("hour_of_day", "Local hour of the transaction.")
    day_of_week: StrictInt = _ranged("day_of_week", "0 = Monday.")
    account_age_days: StrictInt = _ranged("account_age_days", "Age of the account.")
    customer_age: StrictInt = _ranged("customer_age", "Age of the card holder in years.")
    card_present: StrictBool
    is_new_device: StrictBool
    distance_from_home_km: StrictFloat = _ranged("distance_from_home_km", "Distance from home.")
    txn_count_1h: StrictInt = _ranged("txn_count_1h", "Transactions of the account in the last hour.")
    txn_count_24h: StrictInt = _ranged(
        "txn_count_24h", "Transactions of the account in the last 24 hours (at least txn_count_1h)."
    )
    amount_sum_24h: StrictFloat = _ranged("amount_sum_24h", "Amount spent in the last 24 hours.")
    amount_avg_30d: StrictFloat = _ranged("amount_avg_30d", "Average amount over 30 days.")
    days_since_last_txn: StrictFloat = _ranged("days_since_last_txn", "Days since the previous one.")
    failed_logins_24h: StrictInt = _ranged("failed_logins_24h", "Failed logins in the last 24 hours.")
    merchant_risk_score: StrictFloat = _ranged("merchant_risk_score", "Merchant risk score.")
    ip_risk_score: StrictFloat = _ranged("ip_risk_score", "IP reputation risk score.")
    email_domain_age_days: StrictInt = _ranged("email_domain_age_days", "Age of the e-mail domain.")
    credit_limit: StrictFloat = _ranged("credit_limit", "Credit limit of the card.")
    installment_months: StrictInt = _ranged("installment_months", "0 = paid in full.")

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


class TransactionBatchCreate(_Request):
    """Several transactions, published all together or not at all."""

    transactions: list[TransactionCreate] = Field(
        min_length=1, description="The transactions, at most INGEST_MAX_BATCH_SIZE (default 1000)."
    )

    @field_validator("transactions")
    @classmethod
    def _unique_ids(cls, value: list[TransactionCreate]) -> list[TransactionCreate]:
        seen: dict[str, int] = {}
        for index, txn in enumerate(value):
            if txn.transaction_id is None:
                continue
            if txn.transaction_id in seen:
                raise PydanticCustomError(
                    "duplicate_id",
                    "duplicate transaction_id '{id}' at positions {first} and {second}",
                    {"id": txn.transaction_id, "first": seen[txn.transaction_id], "second": index},
                )
            seen[txn.transaction_id] = index
        return value


class InteractionCreate(_Request):
    """A user's interaction with an item (``business.user.interaction``)."""

    user_id: Identifier
    item_id: Identifier
    interaction_type: InteractionType
    rating: Rating | None = Field(
        None, validate_default=True, description="1-5; required with (and only with) interaction_type=rating."
    )
    session_id: Identifier | None = None
    context: dict[str, Annotated[str, StringConstraints(strict=True, max_length=1024)]] = Field(
        default_factory=dict, max_length=50, description="Device, page, ... (string values)."
    )
    event_time: EventTime = None

    @field_validator("rating")
    @classmethod
    def _rating_matches_type(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("interaction_type")
        if kind == "rating" and value is None:
            raise PydanticCustomError("missing", "rating is required when interaction_type is 'rating'")
        if kind is not None and kind != "rating" and value is not None:
            raise PydanticCustomError(
                "unexpected_value",
                "rating is only accepted with interaction_type 'rating', not '{kind}'",
                {"kind": kind},
            )
        return value


class ClickCreate(_Request):
    """A click on an item of a recommendation list (``business.recommendation.clicked``)."""

    user_id: Identifier
    item_id: Identifier
    recommendation_id: Identifier = Field(description="Id of the recommendation list that was shown.")
    strategy: Identifier = Field(description="Strategy (A/B arm) that produced the list.")
    position: StrictInt = Field(ge=0, le=1000, description="0-based position of the item in the list.")
    event_time: EventTime = None


class LabelFeedbackCreate(_Request):
    """The ground truth of a transaction, known later (``prediction.feedback``)."""

    transaction_id: TransactionId
    is_fraud: StrictBool
    label_source: LabelSource
    event_time: EventTime = None


class FeedbackCreate(_Request):
    """Explicit feedback of a user (``business.feedback.received``)."""

    user_id: Identifier
    item_id: Identifier | None = None
    feedback_type: FeedbackType
    rating: Rating | None = Field(
        None, validate_default=True, description="1-5; required when feedback_type is 'rating'."
    )
    comment: Annotated[str, StringConstraints(strict=True, strip_whitespace=True, max_length=2000)] | None = (
        Field(None, validate_default=True, description="Free text; required when feedback_type is 'comment'.")
    )
    event_time: EventTime = None

    @field_validator("rating")
    @classmethod
    def _rating_when_rated(cls, value: float | None, info: ValidationInfo) -> float | None:
        if info.data.get("feedback_type") == "rating" and value is None:
            raise PydanticCustomError("missing", "rating is required when feedback_type is 'rating'")
        return value

    @field_validator("comment")
    @classmethod
    def _comment_when_commented(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("feedback_type") == "comment" and not value:
            raise PydanticCustomError("missing", "comment is required when feedback_type is 'comment'")
        return value


# --------------------------------------------------------------------------- responses


class QualityWarning(BaseModel):
    """A suspicious value that was accepted (also published to ``data.quality.issues``)."""

    index: int = Field(description="Position of the record in the request (0 for single records).")
    field: str
    issue_type: str = Field(description="out_of_range | invalid_value")
    message: str
    record_id: str | None = Field(None, description="transaction_id of the record, when it has one.")


class IngestAccepted(BaseModel):
    """Every record was acknowledged by Kafka (``acks=all``)."""

    record_type: str = Field(description="transaction | interaction | click | label | feedback")
    topic: str = Field(description="Topic the records were published to.")
    count: int
    event_ids: list[str] = Field(description="envelope.event_id of each published record, in request order.")
    transaction_ids: list[str] = Field(
        default_factory=list,
        description="transaction_id of each record (transactions, labels), server-assigned ones included.",
    )
    batch_id: str = Field(description="Id of the request, repeated in its data.ingested event.")
    warnings: list[QualityWarning] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Why the request could not be served."""

    detail: str
