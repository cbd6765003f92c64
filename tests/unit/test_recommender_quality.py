"""The offline quality gate (``python -m recommender.quality``) on a small simulation."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from recommender import quality as quality_module

SMALL = ["--users", "150", "--sessions", "1500", "--seed", "3"]


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    return quality_module


def test_the_realtime_recommender_beats_popularity(quality: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert quality.main(SMALL) == 0
    out = capsys.readouterr().out
    for row in ("realtime (served)", "hybrid", "content", "popular fallback", "most-popular"):
        assert row in out
    assert "lift over most-popular" in out


def test_no_lift_fails(
    quality: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A baseline that knows the answers cannot be beaten: the gate must say so.
    captured: dict[str, Any] = {}
    real_split = quality.holdout_split

    def spy_split(events: Any) -> Any:
        captured["split"] = real_split(events)
        return captured["split"]

    monkeypatch.setattr(quality, "holdout_split", spy_split)
    monkeypatch.setattr(
        quality, "most_popular", lambda train, users, k: {u: captured["split"].test[u] for u in users}
    )
    assert quality.main(SMALL) == 1
    assert "does not beat" in capsys.readouterr().err
