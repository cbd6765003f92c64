"""Data-quality issues: what was wrong with a refused request, and soft warnings on accepted records.

Hard problems (missing fields, wrong types, out-of-range or unknown values) come from
pydantic validation and refuse the request (422). Soft checks flag values that are valid
but suspicious; the record is accepted and the warning published with it. Each issue
becomes one ``data.quality.issues`` event (``rejected`` tells the two apart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from fraud_model.contract import COUNTRIES, COUNTRY_CURRENCY, CURRENCIES
from ingest.config import Settings
from ingest.models import TransactionCreate

# issue_type vocabulary of the data.quality.issues contract.
MISSING_FIELD: Final = "missing_field"
OUT_OF_RANGE: Final = "out_of_range"
INVALID_VALUE: Final = "invalid_value"
REJECTED: Final = "rejected"

# pydantic error types that mean "a value outside its valid range".
_RANGE_ERRORS: Final = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "inconsistent",
    }
)
_MISSING_ERRORS: Final = frozenset({"missing"})
# Errors that refuse the request as a whole rather than a value (see routes.BATCH_TOO_LARGE).
_REQUEST_ERRORS: Final = frozenset({"batch_too_large"})
_MAX_VALUE_CHARS: Final = 200


@dataclass(frozen=True)
class Issue:
    """One data-quality problem of one record (or of the whole request when ``index`` is None)."""

    record_type: str
    issue_type: str
    field: str
    message: str
    value: str | None = None
    record_id: str | None = None
    rejected: bool = True
    index: int | None = None

    def payload(self) -> dict[str, Any]:
        """The ``data.quality.issues`` payload (without envelope)."""
        return {
            "record_type": self.record_type,
            "issue_type": self.issue_type,
            "field": self.field,
            "value": self.value,
            "message": self.message,
            "record_id": self.record_id,
            "rejected": self.rejected,
        }


def render_value(value: Any) -> str | None:
    """An offending value as short text for the event (None when there was none)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _issue_type(error_type: str) -> str:
    if error_type in _MISSING_ERRORS:
        return MISSING_FIELD
    if error_type in _RANGE_ERRORS:
        return OUT_OF_RANGE
    if error_type in _REQUEST_ERRORS:
        return REJECTED
    return INVALID_VALUE


def _records(body: Any, batch_field: str | None) -> list[Any] | None:
    if batch_field is None:
        return [body]
    if isinstance(body, Mapping) and isinstance(body.get(batch_field), list):
        return list(body[batch_field])
    return None


def _record_id(records: list[Any] | None, index: int | None, id_field: str | None) -> str | None:
    if records is None or index is None or id_field is None or not 0 <= index < len(records):
        return None
    record = records[index]
    if isinstance(record, Mapping) and isinstance(record.get(id_field), str):
        return str(record[id_field])[:_MAX_VALUE_CHARS]
    return None


def issues_from_validation(
    record_type: str,
    errors: Sequence[Mapping[str, Any]],
    body: Any,
    *,
    batch_field: str | None = None,
    id_field: str | None = None,
) -> list[Issue]:
    """Turn FastAPI's validation errors into issues, one per problem.

    ``loc`` looks like ``("body", "amount")`` for a single record and
    ``("body", "transactions", 3, "amount")`` for the fourth record of a batch.
    """
    records = _records(body, batch_field)
    issues: list[Issue] = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part != "body"]
        index: int | None = 0 if batch_field is None else None
        if batch_field is not None and len(loc) >= 2 and loc[0] == batch_field and isinstance(loc[1], int):
            index, loc = loc[1], loc[2:]
        field_parts = [str(part) for part in loc if not isinstance(part, int)]
        field = ".".join(field_parts) if field_parts else "body"
        error_type = str(error.get("type", ""))
        message = str(error.get("msg", "invalid value"))
        if batch_field is not None and index is not None:
            message = f"record {index}: {message}"
        issues.append(
            Issue(
                record_type=record_type,
                issue_type=_issue_type(error_type),
                field=field,
                message=message,
                value=None if error_type == "missing" else render_value(error.get("input")),
                record_id=_record_id(records, index, id_field),
                rejected=True,
                index=index,
            )
        )
    return issues


def record_count(body: Any, batch_field: str | None) -> int:
    """How many records a (possibly malformed) request body held."""
    records = _records(body, batch_field)
    return max(len(records), 1) if records is not None else 1


def transaction_warnings(
    txn: TransactionCreate, transaction_id: str, index: int, settings: Settings, now: datetime
) -> list[Issue]:
    """Soft checks of a valid transaction: suspicious values that are still accepted."""
    issues: list[Issue] = []

    def warn(issue_type: str, field: str, value: Any, message: str) -> None:
        issues.append(
            Issue(
                record_type="transaction",
                issue_type=issue_type,
                field=field,
                message=message,
                value=render_value(value),
                record_id=transaction_id,
                rejected=False,
                index=index,
            )
        )

    limit_ratio = settings.amount_to_credit_limit_warning
    if txn.credit_limit > 0 and txn.amount > txn.credit_limit * limit_ratio:
        warn(
            OUT_OF_RANGE,
            "amount",
            txn.amount,
            f"amount {txn.amount:g} is above {limit_ratio:g}x the credit_limit {txn.credit_limit:g}",
        )
    average_ratio = settings.amount_to_average_warning
    if txn.amount_avg_30d > 0 and txn.amount > txn.amount_avg_30d * average_ratio:
        warn(
            OUT_OF_RANGE,
            "amount",
            txn.amount,
            f"amount {txn.amount:g} is above {average_ratio:g}x the 30-day average {txn.amount_avg_30d:g}",
        )
    # Unknown codes are well-formed but outside the model's vocabulary: it scores them as
    # "unknown category", which is worth knowing about but no reason to refuse a payment.
    for field in ("country", "home_country"):
        code = getattr(txn, field)
        if code not in COUNTRIES:
            warn(INVALID_VALUE, field, code, f"{field} '{code}' is not a known country (scored as unknown)")
    if txn.currency not in CURRENCIES:
        warn(INVALID_VALUE, "currency", txn.currency, f"currency '{txn.currency}' is not a known currency")
    elif txn.country in COUNTRY_CURRENCY and COUNTRY_CURRENCY[txn.country] != txn.currency:
        warn(
            INVALID_VALUE,
            "currency",
            txn.currency,
            f"currency '{txn.currency}' differs from the currency of {txn.country} "
            f"({COUNTRY_CURRENCY[txn.country]})",
        )
    issues += event_time_warnings(
        "transaction", txn.event_time, index, settings, now, record_id=transaction_id
    )
    return issues


def event_time_warnings(
    record_type: str,
    event_time: datetime | None,
    index: int,
    settings: Settings,
    now: datetime,
    *,
    record_id: str | None = None,
) -> list[Issue]:
    """The future-timestamp soft check for the other record types."""
    if event_time is None:
        return []
    ahead = event_time - now
    if ahead <= timedelta(seconds=settings.max_future_event_time_s):
        return []
    return [
        Issue(
            record_type=record_type,
            issue_type=OUT_OF_RANGE,
            field="event_time",
            message=f"event_time is {ahead.total_seconds():.0f}s in the future",
            value=event_time.isoformat(),
            record_id=record_id,
            rejected=False,
            index=index,
        )
    ]
