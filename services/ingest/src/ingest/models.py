"""Request and response bodies of the ingest API.

The transaction's fields are :class:`fraud_model.fields.TransactionFields` (the contract's
names, vocabularies and valid ranges, shared with the predictor's ``/score``); a unit test
keeps them equal to the contract. Numbers and booleans are strict (``"12.5"`` or ``1``
for a boolean are refused): the JSON types must match the Avro contract, so a client bug
surfaces at the door instead of as a skewed feature.

Everything here is a *hard* check: a violation answers 422 and the record is not
published. Suspicious-but-valid values are reported by :mod:`ingest.quality` instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

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

from fraud_model.fields import (
    Identifier,
    LabelSource,
    TransactionFields,
    TransactionId,
    listed_enum,
    member_of,
)

#: Interaction types of ``business.user.interaction`` (its schema's documented vocabulary).
INTERACTION_TYPES: Final[tuple[str, ...]] = ("view", "click", "like", "add_to_cart", "purchase", "rating")
#: Feedback types of ``business.feedback.received``.
FEEDBACK_TYPES: Final[tuple[str, ...]] = ("rating", "thumbs_up", "thumbs_down", "comment")
#: Rating scale of interactions and feedback.
RATING_RANGE: Final[tuple[float, float]] = (1.0, 5.0)


# --------------------------------------------------------------------------- field types


def _utc(value: datetime) -> datetime:
    # A naive timestamp is read as UTC: the envelope's event_time is always UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+00:01 parses, but is before the first representable UTC instant.
        raise ValueError(f"{value.isoformat()} is outside the years 1 to 9999 in UTC") from None


EventTime = Annotated[
    datetime | None,
    AfterValidator(lambda value: None if value is None else _utc(value)),
    Field(
        None,
        description="When the fact happened (ISO 8601; naive means UTC). Defaults to the time of receipt.",
    ),
]
InteractionType = Annotated[
    StrictStr,
    member_of("interaction_type", INTERACTION_TYPES),
    listed_enum(INTERACTION_TYPES, "What the user did."),
]
FeedbackType = Annotated[
    StrictStr, member_of("feedback_type", FEEDBACK_TYPES), listed_enum(FEEDBACK_TYPES, "Kind of feedback.")
]
Rating = Annotated[StrictFloat, Field(ge=RATING_RANGE[0], le=RATING_RANGE[1], allow_inf_nan=False)]


class _Request(BaseModel):
    # Unknown keys are ignored rather than refused, so a producer may send richer
    # records (e.g. a generator row still carrying its hidden label) without failing.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


# --------------------------------------------------------------------------- requests


class TransactionCreate(_Request, TransactionFields):
    """A card transaction to score (the ``prediction.request`` contract)."""

    transaction_id: TransactionId | None = Field(
        None,
        description=(
            "Business id of the transaction. Send your own so that later labels can refer to it; "
            "when absent the server assigns a UUID and returns it."
        ),
    )
    event_time: EventTime = None


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
