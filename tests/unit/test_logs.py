from __future__ import annotations

import json

import pytest

from mlops_platform.contracts import new_envelope
from mlops_platform.logs import bind_event, configure_logging, get_logger


def test_log_lines_are_json_with_the_event_causal_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("unit-test", "INFO", "json")
    cause = new_envelope("ingest")
    envelope = new_envelope("predictor", cause)
    with bind_event(envelope):
        get_logger("t").info("scored", risk="block")
    get_logger("t").info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    inside, outside = lines[-2], lines[-1]
    assert inside["event"] == "scored" and inside["risk"] == "block"
    assert inside["service"] == "unit-test"
    assert inside["correlation_id"] == cause["event_id"]
    assert inside["causation_id"] == cause["event_id"]
    assert inside["event_id"] == envelope["event_id"]
    assert "correlation_id" not in outside
