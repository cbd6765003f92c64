from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerter.config import Settings
from alerter.models import AlertEvent, AlertStatus, Severity
from alerter.routing import CHANNEL_NAMES, RoutingConfig, RoutingConfigError, parse_duration

RULES = {
    "defaults": {"cooldown": "10m"},
    "routes": [
        {
            "name": "ml-mail",
            "match": {"source": ["drift-*"], "min_severity": "MEDIUM"},
            "channels": ["email"],
            "continue": True,
        },
        {
            "name": "critical",
            "match": {"min_severity": "CRITICAL"},
            "channels": ["slack", "webhook"],
            "escalation": "oncall",
            "cooldown": 60,
        },
        {"name": "team-ml", "match": {"labels": {"team": "ml*"}}, "channels": ["slack"]},
        {"name": "default", "channels": ["webhook"], "notify_resolved": False},
    ],
    "escalations": {
        "oncall": [{"after": "5m", "channels": ["email"]}, {"after": "1h", "channels": ["slack"]}]
    },
}


def alert(severity: Severity = Severity.LOW, source: str = "svc", **labels: str) -> AlertEvent:
    return AlertEvent(
        alert_id="a",
        severity=severity,
        title="t",
        message="m",
        dedup_key="k",
        status=AlertStatus.FIRING,
        source=source,
        event_time=datetime.now(UTC),
        labels=labels,
    )


def test_first_match_wins_and_continue_adds_channels() -> None:
    config = RoutingConfig.from_dict(RULES)
    decision = config.resolve(alert(Severity.CRITICAL, source="drift-detector"))
    assert decision.routes == ("ml-mail", "critical")
    assert decision.channels == ("email", "slack", "webhook")
    assert decision.cooldown_s == 60
    assert decision.escalation is not None and decision.escalation.name == "oncall"
    assert [lvl.after_s for lvl in decision.escalation.levels] == [300, 3600]


def test_severity_source_and_label_matching() -> None:
    config = RoutingConfig.from_dict(RULES)
    assert config.resolve(alert(Severity.LOW, source="drift-detector")).routes == ("default",)
    assert config.resolve(alert(Severity.LOW, team="ml-platform")).routes == ("team-ml",)
    assert config.resolve(alert(Severity.LOW, team="payments")).routes == ("default",)
    default = config.resolve(alert(Severity.HIGH))
    assert default.channels == ("webhook",)
    assert default.cooldown_s == 600
    assert default.notify_resolved is False
    assert default.escalation is None


def test_routing_as_if_severity_were_different() -> None:
    config = RoutingConfig.from_dict(RULES)
    assert config.resolve(alert(Severity.LOW), Severity.CRITICAL).routes == ("critical",)


def test_no_route_means_no_channel() -> None:
    config = RoutingConfig.from_dict({"routes": [{"match": {"severity": ["HIGH"]}, "channels": ["slack"]}]})
    assert config.resolve(alert(Severity.LOW)).channels == ()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        ("45", 45.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"routes": [{"channels": ["pager"]}]}, "unknown channels"),
        ({"routes": [{"channels": ["slack"], "escalation": "nope"}]}, "unknown escalation policy"),
        ({"routes": [{"match": {"severity": ["SEVERE"]}, "channels": []}]}, "unknown severity"),
        ({"routes": [{"match": {"colour": "red"}}]}, "unknown keys"),
        ({"routes": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"escalations": {"p": [{"after": "10m"}, {"after": "5m"}]}}, "strictly increasing"),
        ({"defaults": {"cooldown": "soon"}}, "cannot read duration"),
        ({"router": []}, "unknown keys"),
    ],
)
def test_invalid_rules_are_refused_with_a_reason(rules: dict[str, object], message: str) -> None:
    with pytest.raises(RoutingConfigError, match=message):
        RoutingConfig.from_dict(rules)


def test_shipped_rules_load_and_route_every_severity() -> None:
    config = RoutingConfig.load()
    assert config.channels_used() <= set(CHANNEL_NAMES)
    for severity in Severity:
        assert config.resolve(alert(severity)).channels, severity
    critical = config.resolve(alert(Severity.CRITICAL, source="drift-detector"))
    assert set(critical.channels) == {"email", "slack", "webhook"}
    assert critical.escalation is not None


def test_rules_file_path_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  - {name: only, channels: [email]}\n")
    monkeypatch.setenv("ALERTER_ROUTES_FILE", str(path))
    config = RoutingConfig.load(Settings().routes_file)
    assert config.source == str(path)
    assert config.resolve(alert()).channels == ("email",)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match="cannot read routing file"):
        RoutingConfig.load(tmp_path / "absent.yaml")
