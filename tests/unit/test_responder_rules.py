"""The auto-responder's rule table: the shipped file, re-assessment, matching, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from auto_responder.model import Action, EventType, Severity
from auto_responder.rules import RuleError, load_rules, parse_rules


@pytest.fixture(scope="module")
def rules():
    return load_rules()


# MISSION.md's table, as the shipped rules.yaml must implement it.
MISSION_TABLE = [
    (
        EventType.DATA_DRIFT,
        {},
        {"LOW": "monitor", "MEDIUM": "retrain", "HIGH": "retrain", "CRITICAL": "retrain"},
    ),
    (
        EventType.PERFORMANCE_DEGRADED,
        {"ab_arm": "champion"},
        {"LOW": "monitor", "MEDIUM": "retrain", "HIGH": "rollback", "CRITICAL": "rollback"},
    ),
    (
        EventType.SYSTEM_OVERLOAD,
        {},
        {"LOW": "monitor", "MEDIUM": "scale", "HIGH": "scale", "CRITICAL": "scale"},
    ),
    (
        EventType.PREDICTION_LATENCY_HIGH,
        {},
        {"LOW": "monitor", "MEDIUM": "scale", "HIGH": "scale", "CRITICAL": "scale"},
    ),
    (
        EventType.HEALTH_CHECK_FAILED,
        {"service": "predictor"},
        {"LOW": "alert", "MEDIUM": "rollback", "HIGH": "rollback", "CRITICAL": "rollback"},
    ),
    (
        EventType.EVALUATION_COMPLETED,
        {"winner": "challenger"},
        dict.fromkeys(Severity.__members__, "promote"),
    ),
]


@pytest.mark.parametrize(("event_type", "facts", "expected"), MISSION_TABLE)
def test_shipped_table_implements_the_mission(rules, event_type, facts, expected):
    rule = rules.match(event_type, facts)
    assert rule is not None
    assert {s.name: rule.action_for(s).value for s in Severity} == expected


def test_health_of_other_services_only_alerts(rules):
    # Rolling back a model cannot help the recommender or the alerter.
    rule = rules.match(EventType.HEALTH_CHECK_FAILED, {"service": "recommender"})
    assert rule is not None and rule.id == "service-health-check-failed"
    assert {rule.action_for(s) for s in Severity} == {Action.ALERT}


def test_a_degraded_challenger_never_rolls_back_the_champion(rules):
    rule = rules.match(EventType.PERFORMANCE_DEGRADED, {"ab_arm": "challenger"})
    assert rule is not None and rule.id == "challenger-degraded"
    assert rule.action_for(Severity.CRITICAL) is Action.ALERT


def test_an_evaluation_the_champion_won_has_no_rule(rules):
    assert rules.match(EventType.EVALUATION_COMPLETED, {"winner": "champion"}) is None
    assert rules.match(EventType.EVALUATION_COMPLETED, {"winner": "none"}) is None


@pytest.mark.parametrize(
    ("reported", "measures", "expected"),
    [
        (Severity.LOW, {"drift_score": 0.81, "affected_features": []}, Severity.CRITICAL),
        (Severity.LOW, {"drift_score": 0.61, "affected_features": []}, Severity.HIGH),
        (Severity.LOW, {"drift_score": 0.6, "affected_features": []}, Severity.LOW),  # strictly greater
        (Severity.LOW, {"drift_score": 0.1, "affected_features": list("abcdef")}, Severity.CRITICAL),
        (Severity.LOW, {"drift_score": 0.1, "affected_features": list("abcd")}, Severity.HIGH),
        (Severity.MEDIUM, {"drift_score": 0.1, "affected_features": list("abc")}, Severity.MEDIUM),
        # re-assessment raises, never lowers
        (Severity.CRITICAL, {"drift_score": 0.65, "affected_features": []}, Severity.CRITICAL),
        (Severity.MEDIUM, {"drift_score": None, "affected_features": None}, Severity.MEDIUM),
    ],
)
def test_drift_severity_is_reassessed_from_the_payload(rules, reported, measures, expected):
    assert rules.reassess(EventType.DATA_DRIFT, reported, measures) is expected


@pytest.mark.parametrize(
    ("drop", "expected"),
    [(0.16, Severity.CRITICAL), (0.15, Severity.HIGH), (0.11, Severity.HIGH), (0.10, Severity.LOW)],
)
def test_performance_severity_is_reassessed_from_the_drop(rules, drop, expected):
    assert (
        rules.reassess(EventType.PERFORMANCE_DEGRADED, Severity.LOW, {"performance_drop": drop}) is expected
    )


def test_prometheus_alert_names_map_to_conditions(rules):
    assert rules.alert_event_type("PredictionLatencyP99High", {}) == EventType.PREDICTION_LATENCY_HIGH
    assert rules.alert_event_type("ConsumerLagGrowing", {"service": "predictor"}) == EventType.SYSTEM_OVERLOAD
    assert rules.alert_event_type("ConsumerLagGrowing", {"service": "recommender"}) is None
    assert rules.alert_event_type("HighErrorRate", {}) is None


def test_star_fills_every_severity_and_first_match_wins():
    table = parse_rules(
        {
            "rules": [
                {
                    "id": "a",
                    "event_type": "data_drift_detected",
                    "match": {"drift_type": ["pred*"]},
                    "actions": {"*": "alert"},
                },
                {"id": "b", "event_type": "data_drift_detected", "actions": {"LOW": "none", "*": "retrain"}},
            ]
        }
    )
    assert table.match("data_drift_detected", {"drift_type": "prediction"}).id == "a"
    negated = parse_rules(
        {
            "rules": [
                {
                    "id": "not-t",
                    "event_type": "data_drift_detected",
                    "match": {"drift_type": "!t*"},
                    "actions": {"*": "alert"},
                },
                {"id": "t", "event_type": "data_drift_detected", "actions": {"*": "retrain"}},
            ]
        }
    )
    assert negated.match("data_drift_detected", {"drift_type": "data"}).id == "not-t"
    assert negated.match("data_drift_detected", {}).id == "not-t"  # a missing fact is not excluded
    assert negated.match("data_drift_detected", {"drift_type": "target"}).id == "t"
    rule = table.match("data_drift_detected", {"drift_type": "data"})
    assert rule.id == "b"
    assert rule.action_for(Severity.LOW) is Action.NONE
    assert rule.action_for(Severity.HIGH) is Action.RETRAIN


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rules": []}, "no rules"),
        ({"rules": [{"id": "x", "event_type": "nope", "actions": {"*": "alert"}}]}, "unknown event_type"),
        (
            {"rules": [{"id": "x", "event_type": "data_drift_detected", "actions": {"*": "reboot"}}]},
            "unknown action",
        ),
        (
            {"rules": [{"id": "x", "event_type": "data_drift_detected", "actions": {"LOW": "alert"}}]},
            "no action for",
        ),
        (
            {
                "rules": [
                    {"id": "x", "event_type": "data_drift_detected", "actions": {"*": "alert"}},
                    {"id": "x", "event_type": "data_drift_detected", "actions": {"*": "alert"}},
                ]
            },
            "duplicate id",
        ),
        (
            {
                "rules": [{"id": "x", "event_type": "data_drift_detected", "actions": {"*": "alert"}}],
                "severity": {"data_drift_detected": {"SEVERE": {"drift_score": 0.5}}},
            },
            "unknown level",
        ),
    ],
)
def test_malformed_tables_are_refused_with_the_place(table, message):
    with pytest.raises(RuleError, match=message):
        parse_rules(table, "test.yaml")


def test_rules_file_can_be_overridden(tmp_path: Path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {id: only, event_type: data_drift_detected, actions: {'*': alert}}\n")
    table = load_rules(path)
    assert [r.id for r in table.rules] == ["only"]
    assert table.source == str(path)
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
