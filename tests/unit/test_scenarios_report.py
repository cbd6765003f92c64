"""The scenario suite's verdicts and table (pure: outcomes in, text out)."""

from __future__ import annotations

from constellation.events import Seen
from constellation.scenarios import Options, Outcome, is_alarm, summary, table


def drift(state: str, drift_type: str = "data") -> Seen:
    return Seen(
        "data.drift.detected", {"envelope": {"event_id": "e"}, "state": state, "drift_type": drift_type}, 0.0
    )


def test_drift_and_watch_and_degradation_are_alarms_a_recovery_is_not() -> None:
    assert is_alarm(drift("drift"))
    assert is_alarm(drift("watch", "target"))
    assert not is_alarm(drift("stable"))
    assert is_alarm(Seen("model.performance.degraded", {"envelope": {"event_id": "d"}}, 0.0))
    assert not is_alarm(Seen("system.actions", {"envelope": {"event_id": "a"}}, 0.0))


def test_targets_are_met_or_missed_from_the_figures() -> None:
    stable = Outcome("stable", "stable", events_sent=1_000_000, expectations={"no false alarm": True})
    sudden = Outcome(
        "sudden_drift",
        "sudden",
        detection_windows=3,
        detection_s=7.5,
        actions={"retrain:succeeded": 1, "promote:succeeded": 1},
        actions_succeeded=2,
        good_model_s=210.0,
        chain_complete=True,
        expectations={"detected": True},
    )
    lines = "\n".join(summary([stable, sudden]))
    assert "worst 3 windows" in lines and "MISSED" in lines.splitlines()[1]
    assert "0 over 1,000,000" in lines
    assert "2/2" in lines and "worst 210s" in lines and "1/1" in lines


def test_a_failed_action_and_a_broken_chain_are_reported() -> None:
    broken = Outcome(
        "bad_model",
        "bad",
        actions={"rollback:failed": 1},
        actions_failed=1,
        chain_complete=False,
        expectations={"rolled back": False, "chain complete": False},
    )
    text = table([broken], Options())
    row = next(line for line in text.splitlines() if line.startswith("bad_model"))
    assert "rollback:FAILEDx1 (0/1)" in row
    assert "NO" in row and "FAILED: rolled back, chain complete" in row
    assert not broken.ok and broken.action_success == 0.0
    assert ">= 99% of actions succeed" in text and "0/1" in text


def test_a_rollback_chain_goes_back_past_its_own_topic() -> None:
    from constellation.events import Timeline
    from mlops_platform.settings import PlatformSettings

    timeline = Timeline(PlatformSettings(kafka_bootstrap_servers="127.0.0.1:1"), lambda _t, _v: None)

    def saw(topic: str, event_id: str, cause: str | None) -> None:
        timeline.seen[event_id] = Seen(
            topic, {"envelope": {"event_id": event_id, "causation_id": cause}}, 0.0
        )

    saw("model.deployed", "bad-promote", None)  # an operator's: the incident
    saw("model.performance.degraded", "drop", "bad-promote")
    saw("system.actions", "rollback", "drop")
    saw("model.deployed", "rollback-deployed", "rollback")
    causes = ["model.performance.degraded", "model.deployed"]

    chain, complete = timeline.walk("rollback-deployed", causes)

    assert complete and [s.event_id for s in chain] == ["rollback-deployed", "rollback", "drop"]
    _, broken = timeline.walk("missing", causes)
    assert broken is False
