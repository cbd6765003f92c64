"""Turn transaction records into the model's feature matrix.

The same code runs at training time (a DataFrame of tens of thousands of rows) and
in the predictor (micro-batches of a few hundred dicts), so it is column-wise and
vectorised. Missing or non-numeric values become NaN, which XGBoost treats as
"missing" and routes down its learned default branch instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from fraud_model.contract import CHANNELS, COUNTRIES, DEVICE_TYPES, MERCHANT_CATEGORIES

#: Bumped whenever FEATURE_NAMES or an encoding changes; stored with every model version.
FEATURE_SET_VERSION: Final[str] = "fds-v1"

#: Contract fields used as they are (bools become 0/1).
NUMERIC_FEATURES: Final[tuple[str, ...]] = (
    "amount",
    "hour_of_day",
    "day_of_week",
    "account_age_days",
    "customer_age",
    "card_present",
    "is_new_device",
    "distance_from_home_km",
    "txn_count_1h",
    "txn_count_24h",
    "amount_sum_24h",
    "amount_avg_30d",
    "days_since_last_txn",
    "failed_logins_24h",
    "merchant_risk_score",
    "ip_risk_score",
    "email_domain_age_days",
    "credit_limit",
    "installment_months",
)

#: Categorical fields, ordinal-encoded by their index in the fixed vocabulary; unknown -> -1.
CATEGORICAL_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "merchant_category": MERCHANT_CATEGORIES,
    "channel": CHANNELS,
    "device_type": DEVICE_TYPES,
    "country": COUNTRIES,
}

#: Features computed from several fields.
DERIVED_FEATURES: Final[tuple[str, ...]] = (
    "log_amount",
    "amount_to_avg_ratio",
    "amount_to_limit",
    "sum_24h_to_avg_ratio",
    "velocity_1h_to_24h",
    "is_foreign",
    "is_night",
    "is_weekend",
)

#: Column order of the feature matrix. Append only: models index features by position.
FEATURE_NAMES: Final[list[str]] = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, *DERIVED_FEATURES]

UNKNOWN_CATEGORY: Final[float] = -1.0

_CODEBOOKS: Final[dict[str, dict[str, float]]] = {
    name: {value: float(i) for i, value in enumerate(vocab)} for name, vocab in CATEGORICAL_FEATURES.items()
}
_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Hours counted as "night" (local time of the transaction).
_NIGHT_LAST_HOUR: Final[int] = 5


def _to_float(value: Any) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _numeric_column(rows: Sequence[Mapping[str, Any]], field: str) -> np.ndarray:
    try:
        # Fast path: every row has a clean number (the normal case on the hot path).
        return np.fromiter((row[field] for row in rows), dtype=np.float64, count=len(rows))
    except (KeyError, TypeError, ValueError):
        return np.fromiter((_to_float(row.get(field)) for row in rows), dtype=np.float64, count=len(rows))


def _encode(values: Iterable[Any], codebook: Mapping[str, float], count: int) -> np.ndarray:
    return np.fromiter(
        (codebook.get(v, UNKNOWN_CATEGORY) if isinstance(v, str) else UNKNOWN_CATEGORY for v in values),
        dtype=np.float64,
        count=count,
    )


def _foreign_flag(country: Iterable[Any], home: Iterable[Any], count: int) -> np.ndarray:
    return np.fromiter(
        (
            float(c != h) if isinstance(c, str) and isinstance(h, str) and c and h else np.nan
            for c, h in zip(country, home, strict=True)
        ),
        dtype=np.float64,
        count=count,
    )


def _frame_numeric(frame: pd.DataFrame, field: str) -> np.ndarray:
    if field not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[field], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _frame_strings(frame: pd.DataFrame, field: str) -> list[Any]:
    if field not in frame.columns:
        return [None] * len(frame)
    return frame[field].tolist()


def build_features(transactions: Sequence[Mapping[str, Any]] | pd.DataFrame) -> np.ndarray:
    """Feature matrix for a batch of transactions.

    Args:
        transactions: contract records (dicts) or a DataFrame with the contract columns.
            Extra keys (e.g. the hidden ``is_fraud``) are ignored.

    Returns:
        ``float32`` array of shape ``[n, len(FEATURE_NAMES)]`` in ``FEATURE_NAMES`` order.
    """
    n = len(transactions)
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    if isinstance(transactions, pd.DataFrame):
        frame = transactions
        for name in NUMERIC_FEATURES:
            out[:, _INDEX[name]] = _frame_numeric(frame, name)
        for name, codebook in _CODEBOOKS.items():
            out[:, _INDEX[name]] = _encode(_frame_strings(frame, name), codebook, n)
        is_foreign = _foreign_flag(_frame_strings(frame, "country"), _frame_strings(frame, "home_country"), n)
    else:
        rows = transactions
        for name in NUMERIC_FEATURES:
            out[:, _INDEX[name]] = _numeric_column(rows, name)
        for name, codebook in _CODEBOOKS.items():
            out[:, _INDEX[name]] = _encode((row.get(name) for row in rows), codebook, n)
        is_foreign = _foreign_flag(
            (row.get("country") for row in rows), (row.get("home_country") for row in rows), n
        )

    amount = out[:, _INDEX["amount"]]
    avg_30d = out[:, _INDEX["amount_avg_30d"]]
    hour = out[:, _INDEX["hour_of_day"]]
    dow = out[:, _INDEX["day_of_week"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Floors keep ratios finite for brand-new accounts with no history (avg 0);
        # np.maximum propagates NaN, so missing inputs stay missing.
        out[:, _INDEX["log_amount"]] = np.log1p(np.maximum(amount, 0.0))
        out[:, _INDEX["amount_to_avg_ratio"]] = amount / np.maximum(avg_30d, 1.0)
        out[:, _INDEX["amount_to_limit"]] = amount / np.maximum(out[:, _INDEX["credit_limit"]], 1.0)
        out[:, _INDEX["sum_24h_to_avg_ratio"]] = out[:, _INDEX["amount_sum_24h"]] / np.maximum(avg_30d, 1.0)
        out[:, _INDEX["velocity_1h_to_24h"]] = out[:, _INDEX["txn_count_1h"]] / np.maximum(
            out[:, _INDEX["txn_count_24h"]], 1.0
        )
        out[:, _INDEX["is_night"]] = np.where(np.isnan(hour), np.nan, hour <= _NIGHT_LAST_HOUR)
        out[:, _INDEX["is_weekend"]] = np.where(np.isnan(dow), np.nan, dow >= 5)
    out[:, _INDEX["is_foreign"]] = is_foreign
    return out.astype(np.float32)


def feature_dict(row: np.ndarray) -> dict[str, float]:
    """Name -> value for one feature row (e.g. for the ``prediction.completed`` event).

    NaN (a missing input) is kept as NaN.
    """
    values = np.asarray(row, dtype=np.float64).ravel()
    if values.shape[0] != len(FEATURE_NAMES):
        raise ValueError(f"expected {len(FEATURE_NAMES)} features, got {values.shape[0]}")
    return dict(zip(FEATURE_NAMES, values.tolist(), strict=True))


def to_frame(data: np.ndarray | Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Feature DataFrame with ``FEATURE_NAMES`` columns.

    Accepts an already built feature matrix, or transactions (dicts / DataFrame),
    which are run through :func:`build_features` first.
    """
    if isinstance(data, np.ndarray):
        matrix = np.asarray(data, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected a [n, {len(FEATURE_NAMES)}] matrix, got shape {matrix.shape}")
    else:
        matrix = build_features(data)
    return pd.DataFrame(matrix, columns=list(FEATURE_NAMES))
