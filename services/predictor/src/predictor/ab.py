"""Deterministic champion / challenger assignment by transaction id.

A transaction's arm depends only on its id (and the challenger share), never on the
process, the instance or the time: every instance, every restart and every replay
sends the same transaction to the same arm. Python's ``hash()`` is salted per process,
so the bucket comes from SHA-256 instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

CHAMPION_ARM: Final = "champion"
CHALLENGER_ARM: Final = "challenger"
ARMS: Final[tuple[str, ...]] = (CHAMPION_ARM, CHALLENGER_ARM)

_SCALE: Final = float(1 << 64)


def bucket(transaction_id: str) -> float:
    """A uniform number in [0, 1) derived from the id (first 64 bits of its SHA-256)."""
    digest = hashlib.sha256(transaction_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


@dataclass(frozen=True)
class ABRouter:
    """Sends ``challenger_share`` of the id space to the challenger.

    The challenger gets the ids whose bucket is below the share, so raising the share
    only moves champion ids to the challenger (never the other way round).
    """

    challenger_share: float = 0.10

    def __post_init__(self) -> None:
        if not 0.0 <= self.challenger_share <= 1.0:
            raise ValueError(f"challenger_share must be in [0, 1], got {self.challenger_share}")

    def arm(self, transaction_id: str, challenger_available: bool = True) -> str:
        """The arm of one transaction; everything goes to the champion without a challenger."""
        if challenger_available and bucket(transaction_id) < self.challenger_share:
            return CHALLENGER_ARM
        return CHAMPION_ARM

    def arms(self, transaction_ids: Iterable[str], challenger_available: bool = True) -> list[str]:
        return [self.arm(tid, challenger_available) for tid in transaction_ids]
