"""Risk levels from fraud probabilities.

``approve < verify <= p < hold <= p < block``: the verify threshold (0.18 by default) is the
cost-optimal one found in training (FN x 100 + FP x 1); hold and block are stricter tiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

APPROVE: Final = "approve"
VERIFY: Final = "verify"
HOLD: Final = "hold"
BLOCK: Final = "block"
RISK_LEVELS: Final[tuple[str, ...]] = (APPROVE, VERIFY, HOLD, BLOCK)


@dataclass(frozen=True)
class RiskThresholds:
    """Lower bounds of verify, hold and block (a probability equal to a bound is in the higher tier)."""

    verify: float = 0.18
    hold: float = 0.40
    block: float = 0.65

    def __post_init__(self) -> None:
        if not 0.0 <= self.verify <= self.hold <= self.block <= 1.0:
            raise ValueError(f"thresholds must satisfy 0 <= verify <= hold <= block <= 1, got {self}")

    def level(self, probability: float) -> str:
        """Risk level of one probability."""
        return self.levels(np.array([probability]))[0]

    def levels(self, probabilities: np.ndarray) -> list[str]:
        """Risk level of each probability (vectorised; NaN counts as the highest risk)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        # A NaN score means the model could not judge: never approve it silently.
        index = np.searchsorted(self._bounds, np.nan_to_num(probs, nan=1.0), side="right")
        return [RISK_LEVELS[i] for i in index.tolist()]

    @property
    def _bounds(self) -> np.ndarray:
        return np.array([self.verify, self.hold, self.block], dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return {VERIFY: self.verify, HOLD: self.hold, BLOCK: self.block}
