"""Risk levels: approve < 0.18 <= verify < 0.40 <= hold < 0.65 <= block, configurable."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from predictor.config import Settings
from predictor.risk import RiskThresholds


@pytest.mark.parametrize(
    ("probability", "level"),
    [
        (0.0, "approve"),
        (0.1799, "approve"),
        (0.18, "verify"),
        (0.3999, "verify"),
        (0.40, "hold"),
        (0.6499, "hold"),
        (0.65, "block"),
        (1.0, "block"),
    ],
)
def test_default_tiers_and_their_boundaries(probability: float, level: str) -> None:
    assert RiskThresholds().level(probability) == level


def test_vectorised_levels_match_scalar_ones_and_nan_is_never_approved() -> None:
    thresholds = RiskThresholds(0.1, 0.5, 0.9)
    probabilities = np.array([0.05, 0.1, 0.49, 0.5, 0.89, 0.9, math.nan])
    assert thresholds.levels(probabilities) == [
        "approve",
        "verify",
        "verify",
        "hold",
        "hold",
        "block",
        "block",
    ]
    assert [thresholds.level(p) for p in probabilities] == thresholds.levels(probabilities)


def test_thresholds_must_ascend() -> None:
    with pytest.raises(ValueError, match="verify <= hold <= block"):
        RiskThresholds(0.5, 0.4, 0.9)


def test_settings_read_thresholds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICTOR_RISK_VERIFY_THRESHOLD", "0.2")
    monkeypatch.setenv("PREDICTOR_RISK_HOLD_THRESHOLD", "0.5")
    monkeypatch.setenv("PREDICTOR_RISK_BLOCK_THRESHOLD", "0.8")
    settings = Settings()
    assert (settings.risk_verify_threshold, settings.risk_hold_threshold, settings.risk_block_threshold) == (
        0.2,
        0.5,
        0.8,
    )
    monkeypatch.setenv("PREDICTOR_RISK_HOLD_THRESHOLD", "0.9")
    with pytest.raises(ValidationError, match="ascend"):
        Settings()
