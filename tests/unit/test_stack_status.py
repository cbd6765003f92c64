"""``stack status``: the node exporter's row and the availability column, with the HTTP answers faked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from constellation import api_keys, stack


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> api_keys.StackKeys:
    monkeypatch.setattr(stack, "STATE", tmp_path)
    return api_keys.ensure(tmp_path)


def test_availability_comes_from_the_auto_responder_with_its_viewer_key(
    keys: api_keys.StackKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, dict[str, str] | None]] = []

    def answer(url: str, timeout_s: float = 3.0, headers: dict[str, str] | None = None) -> Any:
        asked.append((url, headers))
        return {
            "period_s": 3600,
            "services": {
                "predictor": {"ratio": 0.9975, "instances": {"p1": 0.9975}},
                "ingest": {"ratio": None, "instances": {}},
            },
        }

    monkeypatch.setattr(stack, "http_json", answer)
    assert stack.service_availability() == {"predictor": 0.9975}
    [(url, headers)] = asked
    assert url.endswith(f":{stack.SERVICE_BY_NAME['auto-responder'].port}/availability")
    assert headers == keys.headers(api_keys.Role.VIEWER)


def test_availability_falls_back_to_prometheus_and_to_nothing(
    keys: api_keys.StackKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus = {
        "status": "success",
        "data": {"result": [{"metric": {"service": "alerter"}, "value": [1.0, "0.5"]}]},
    }

    def answer(url: str, timeout_s: float = 3.0, headers: dict[str, str] | None = None) -> Any:
        return prometheus if url.startswith(stack.PROMETHEUS_URL) else None

    monkeypatch.setattr(stack, "http_json", answer)
    assert stack.service_availability() == {"alerter": 0.5}
    monkeypatch.setattr(stack, "http_json", lambda *_a, **_k: None)
    assert stack.service_availability() == {}


def test_status_prints_the_availability_and_a_missing_node_exporter(
    keys: api_keys.StackKeys, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stack, "node_exporter_binary", lambda: None)
    monkeypatch.setattr(stack, "running_pid", lambda name: None)
    rows = [
        stack.node_exporter_status(),
        stack.ComponentStatus("predictor", 42, "http://127.0.0.1:8002", True, {"ready": True}, 0.9975),
    ]
    monkeypatch.setattr(stack, "collect_status", lambda: rows)
    assert stack.print_status(as_json=False)
    out = capsys.readouterr().out
    assert "avail" in out.splitlines()[0]
    assert "99.75%" in next(line for line in out.splitlines() if line.startswith("predictor"))
    assert stack.NODE_EXPORTER_MISSING in out
