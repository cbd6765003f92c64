"""The offline quality gate (scripts/recommender_quality.py) on a small simulation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "recommender_quality.py"
SMALL = ["--users", "150", "--sessions", "1500", "--seed", "3"]


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recommender_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["recommender_quality"] = module
    spec.loader.exec_module(module)
    return module


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
