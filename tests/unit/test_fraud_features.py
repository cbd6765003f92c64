"""Feature builder: shape, order, encodings, derived features, missing values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fraud_model.contract import COUNTRIES, MERCHANT_CATEGORIES
from fraud_model.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    NUMERIC_FEATURES,
    build_features,
    feature_dict,
    to_frame,
)
from fraud_model.generator import TransactionGenerator


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return TransactionGenerator(seed=5).generate(400)


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def test_feature_names_are_stable_and_unique() -> None:
    assert 28 <= len(FEATURE_NAMES) <= 34
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_NAMES[: len(NUMERIC_FEATURES)] == list(NUMERIC_FEATURES)
    assert "is_fraud" not in FEATURE_NAMES
    for derived in ("log_amount", "amount_to_avg_ratio", "amount_to_limit", "is_foreign", "is_night"):
        assert derived in FEATURE_NAMES


def test_shape_dtype_and_raw_columns(rows: list[dict]) -> None:
    x = build_features(rows)
    assert x.shape == (len(rows), len(FEATURE_NAMES))
    assert x.dtype == np.float32
    assert not np.isnan(x).any()
    np.testing.assert_allclose(x[:, col("amount")], [r["amount"] for r in rows], rtol=1e-6)
    np.testing.assert_array_equal(x[:, col("card_present")], [float(r["card_present"]) for r in rows])
    np.testing.assert_array_equal(x[:, col("hour_of_day")], [r["hour_of_day"] for r in rows])


def test_categorical_codes_follow_vocabulary_order(rows: list[dict]) -> None:
    x = build_features(rows)
    for name, vocab in CATEGORICAL_FEATURES.items():
        expected = [vocab.index(r[name]) for r in rows]
        np.testing.assert_array_equal(x[:, col(name)], expected)


def test_unknown_and_missing_categories_encode_as_minus_one(rows: list[dict]) -> None:
    odd = [
        dict(rows[0], merchant_category="space_tourism", country="ZZ"),
        dict(rows[1], channel=None, device_type=7),
    ]
    x = build_features(odd)
    assert x[0, col("merchant_category")] == -1 and x[0, col("country")] == -1
    assert x[1, col("channel")] == -1 and x[1, col("device_type")] == -1
    assert x[0, col("channel")] >= 0


def test_derived_features() -> None:
    base = TransactionGenerator(seed=1).generate(1)[0]
    row = dict(
        base,
        amount=300.0,
        amount_avg_30d=100.0,
        credit_limit=1000.0,
        amount_sum_24h=50.0,
        txn_count_1h=2,
        txn_count_24h=4,
        country="FR",
        home_country="US",
        hour_of_day=3,
        day_of_week=6,
    )
    new_account = dict(row, amount_avg_30d=0.0, country="US", hour_of_day=12, day_of_week=1)
    features = [feature_dict(r) for r in build_features([row, new_account])]
    f, g = features
    assert f["log_amount"] == pytest.approx(math.log1p(300.0), rel=1e-6)
    assert f["amount_to_avg_ratio"] == pytest.approx(3.0)
    assert f["amount_to_limit"] == pytest.approx(0.3)
    assert f["sum_24h_to_avg_ratio"] == pytest.approx(0.5)
    assert f["velocity_1h_to_24h"] == pytest.approx(0.5)
    assert (f["is_foreign"], f["is_night"], f["is_weekend"]) == (1.0, 1.0, 1.0)
    assert (g["is_foreign"], g["is_night"], g["is_weekend"]) == (0.0, 0.0, 0.0)
    assert g["amount_to_avg_ratio"] == pytest.approx(300.0)  # no history: floor of 1, not inf


def test_missing_numbers_become_nan_not_errors(rows: list[dict]) -> None:
    broken = dict(rows[0])
    del broken["amount"]
    broken["ip_risk_score"] = None
    broken["txn_count_1h"] = "many"
    x = build_features([broken, rows[1]])
    for name in ("amount", "log_amount", "amount_to_limit", "ip_risk_score", "txn_count_1h"):
        assert math.isnan(x[0, col(name)]), name
    assert not np.isnan(x[1]).any()


def test_dataframe_and_dicts_give_identical_matrices(rows: list[dict]) -> None:
    np.testing.assert_array_equal(build_features(rows), build_features(pd.DataFrame(rows)))


def test_label_is_not_a_feature(rows: list[dict]) -> None:
    flipped = [dict(r, is_fraud=not r["is_fraud"]) for r in rows]
    np.testing.assert_array_equal(build_features(rows), build_features(flipped))


def test_empty_batch() -> None:
    assert build_features([]).shape == (0, len(FEATURE_NAMES))


def test_feature_dict_and_frame(rows: list[dict]) -> None:
    x = build_features(rows[:3])
    d = feature_dict(x[0])
    assert list(d) == FEATURE_NAMES and all(isinstance(v, float) for v in d.values())
    assert d["merchant_category"] == MERCHANT_CATEGORIES.index(rows[0]["merchant_category"])
    assert d["country"] == COUNTRIES.index(rows[0]["country"])
    with pytest.raises(ValueError):
        feature_dict(x[0, :-1])
    frame = to_frame(x)
    assert list(frame.columns) == FEATURE_NAMES and len(frame) == 3
    pd.testing.assert_frame_equal(frame, to_frame(rows[:3]))
    with pytest.raises(ValueError):
        to_frame(x[:, :5])
