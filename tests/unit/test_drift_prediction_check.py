"""The drift detector refuses predictions that are no probability (dead-lettered by its loop)."""

from __future__ import annotations

import math

import pytest

from drift_detector.events import InvalidPrediction, check_prediction


@pytest.mark.parametrize("probability", [0.0, 0.37, 1.0, 1])
def test_a_probability_passes(probability: float) -> None:
    check_prediction({"fraud_probability": probability})


@pytest.mark.parametrize("probability", [-0.01, 1.5, 7.5, math.nan, math.inf, None, "0.5"])
def test_anything_else_is_refused_with_the_value(probability: object) -> None:
    with pytest.raises(InvalidPrediction, match="is not a probability"):
        check_prediction({"fraud_probability": probability})
