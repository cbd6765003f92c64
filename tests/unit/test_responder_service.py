"""The responder's service layer and executors with fakes: recording, dedup, replay, actions."""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from auto_responder.config import Settings
from auto_responder.data import LabelledData
from auto_responder.executors import ActionContext, ActionResult, Executors
from auto_responder.model import Action, ActionRecord, Condition, Decision, EventType, Severity
from auto_responder.responder import Responder
from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic, new_envelope
from mlops_platform.kafka import Encoded, Outbox, Record
from mlops_platform.kafka.producer import DeliveryCallback
from tests.unit.test_platform_outbox import FakeMessage

MODEL = "fraud_unit"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakeProducer:
    """What outboxes deliver through: records each event (value kept as is) and acknowledges at once."""

    timeout_s = 1.0

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], bytes | None]] = []
        self.lock = threading.Lock()

    def encode(self, target: Binding | str, value: dict[str, Any], *, key: Any = None, **_: Any) -> Encoded:
        topic = target.topic if isinstance(target, Binding) else target
        if key is None and isinstance(target, Binding):
            key = target.key_of(value)
        return Encoded(topic, value, key.encode() if isinstance(key, str) else key)  # type: ignore[arg-type]

    def produce_encoded(self, record: Encoded, on_delivery: DeliveryCallback | None = None) -> None:
        with self.lock:
            self.events.append((record.topic, record.value, record.key))  # type: ignore[arg-type]
            offset = len(self.events)
        if on_delivery is not None:
            on_delivery(None, FakeMessage(record, offset))  # type: ignore[arg-type]

    def poll(self, _timeout_s: float = 0.0) -> int:
        return 0

    def on(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            return [value for t, value, _ in self.events if t == topic]


class FakeRegistry:
    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = dict(aliases)

    def version_for_alias(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def promote(self, version: str) -> tuple[str | None, str]:
        previous = self.aliases.get("champion")
        if previous is not None:
            self.aliases["previous_champion"] = previous
        self.aliases["champion"] = version
        if self.aliases.get("challenger") == version:
            del self.aliases["challenger"]
        return previous, version

    def rollback(self) -> tuple[str | None, str]:
        from fraud_model.registry import NoPreviousChampionError

        target = self.aliases.pop("previous_champion", None)
        if target is None:
            raise NoPreviousChampionError("no @previous_champion")
        current = self.aliases.get("champion")
        self.aliases["champion"] = target
        return current, target


class FakeExecutors(Executors):
    """Real executors except retrain, which is replaced by a gate the test opens, and the
    validation gate's holdout, which is a frame the test sets (none: too small to judge)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.retrains = 0
        self.holdout_frame: pd.DataFrame | None = None

    def holdout(self, ctx: ActionContext, challenger: str) -> LabelledData:
        frame = self.holdout_frame if self.holdout_frame is not None else pd.DataFrame({"is_fraud": []})
        return LabelledData(frame=frame, window_s=600, requests_read=len(frame), labels_read=len(frame))

    def retrain(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        self.retrains += 1
        self.gate.wait(10)
        return ActionResult.ok("trained v9", version="9")


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


def make(
    clock: Clock, registry: FakeRegistry | None = None, producer: FakeProducer | None = None, **env: Any
):
    settings = Settings(model_name=MODEL, scale_command=["scale", "{service}", "{instances}"], **env)
    producer = producer or FakeProducer()
    commands: list[list[str]] = []

    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        commands.append(argv)
        return subprocess.CompletedProcess(argv, 0, "ok", "")

    registry = registry or FakeRegistry({"champion": "3", "previous_champion": "2", "challenger": "4"})
    executors = FakeExecutors(
        settings,
        None,  # type: ignore[arg-type]
        registry_factory=lambda: registry,
        run_command=run,  # type: ignore[arg-type]
    )
    responder = Responder(settings, producer, None, executors=executors, clock=clock)  # type: ignore[arg-type]
    executors.current_instances = responder.live_instances
    return responder, producer, executors, commands


def envelope(clock: Clock, source: str = "drift-detector") -> dict[str, Any]:
    env = new_envelope(source)
    env["event_time"] = clock.now
    return env


def drift(clock: Clock, severity: str = "HIGH", env: dict | None = None) -> dict[str, Any]:
    return {
        "envelope": env or envelope(clock),
        "severity": severity,
        "drift_type": "data",
        "state": "drift",
        "drift_score": 0.7,
        "affected_features": ["amount"],
        "feature_psi": {"amount": 0.4},
        "window_start": clock.now,
        "window_end": clock.now,
        "window_size": 1000,
        "model_name": MODEL,
        "model_version": "3",
        "report_url": None,
    }


def wait_until(predicate, timeout_s: float = 60.0) -> None:
    # A deadline, not a speed check: background actions on a loaded machine may take a while.
    done = threading.Event()
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        done.wait(0.02)
    raise AssertionError("condition not reached")


def test_retrain_runs_in_the_background_and_records_started_then_outcome(clock):
    responder, producer, executors, _ = make(clock)
    [started] = responder.handle(Topic.DATA_DRIFT_DETECTED, drift(clock))
    # handle() returned while the retrain is still running: consumption is never blocked.
    assert started.status == "started" and started.action == "retrain"
    assert responder.in_progress() == {Action.RETRAIN}
    # A second retrain (other trigger) while one runs is suppressed.
    [second] = responder.handle(Topic.DATA_DRIFT_DETECTED, drift(clock))
    assert (second.status, second.suppressed_reason) == ("suppressed", "in_progress")
    executors.gate.set()
    wait_until(lambda: not responder.in_progress())
    records = [ActionRecord.from_value(v) for v in producer.on(Topic.SYSTEM_ACTIONS)]
    assert [(r.action, r.status) for r in records] == [
        ("retrain", "started"),
        ("retrain", "suppressed"),
        ("retrain", "succeeded"),
    ]
    assert records[0].action_id == records[2].action_id
    assert records[2].details["version"] == "9"
    # Every record names its trigger and carries it as its cause.
    trigger_id = started.trigger_event_id
    assert records[0].envelope["causation_id"] == trigger_id
    # The rule asks to tell people: one notification when the retrain started.
    [notice] = producer.on(Topic.SYSTEM_ALERTS)
    assert notice["dedup_key"] == f"data_drift_detected:{MODEL}:amount:retrain"
    assert notice["envelope"]["causation_id"] == trigger_id
    assert executors.retrains == 1


def test_the_same_trigger_is_decided_once(clock):
    responder, producer, executors, _ = make(clock)
    executors.gate.set()
    value = drift(clock, "LOW") | {"drift_score": 0.2}
    assert len(responder.handle(Topic.DATA_DRIFT_DETECTED, value)) == 1
    assert responder.handle(Topic.DATA_DRIFT_DETECTED, value) == []
    assert len(producer.on(Topic.SYSTEM_ACTIONS)) == 1


def test_the_stream_handler_dispatches_on_the_contract_and_delivers_each_decision(clock):
    responder, producer, _, _ = make(clock)
    value = drift(clock, "LOW") | {"drift_score": 0.2}
    # A private topic carrying the drift contract (as in the integration tests).
    record = Record("test.drift", 0, 0, None, value, 0, contract=Topic.DATA_DRIFT_DETECTED)
    outbox = Outbox(producer)  # type: ignore[arg-type]
    responder.handle_batch([record], outbox)
    [decided] = [ActionRecord.from_value(v) for v in producer.on(Topic.SYSTEM_ACTIONS)]
    assert (decided.action, decided.trigger_event_id) == ("monitor", value["envelope"]["event_id"])
    # Stored before the batch ends: the history only holds what Kafka acknowledged.
    assert len(outbox) == 0 and responder.history.already_decided(
        decided.trigger_event_id, decided.event_type, decided.assessed_severity
    )


def test_monitor_record_carries_the_drift_detector_contract(clock):
    responder, producer, _, _ = make(clock, monitor_window_size=200, monitor_duration_s=900)
    [record] = responder.handle(Topic.DATA_DRIFT_DETECTED, drift(clock, "LOW") | {"drift_score": 0.2})
    assert (record.action, record.status) == ("monitor", "succeeded")
    assert record.details["window_size"] == "200"
    assert record.details["duration_s"] == "900"
    assert record.details["model_name"] == MODEL


def test_a_restart_remembers_cooldowns_and_decided_triggers(clock):
    first, producer, executors, _ = make(clock)
    executors.gate.set()
    value = drift(clock)
    first.handle(Topic.DATA_DRIFT_DETECTED, value)
    wait_until(lambda: not first.in_progress())

    # A new process replays what the first one published.
    clock.now += timedelta(minutes=10)
    second, producer2, executors2, _ = make(clock)
    for published in producer.on(Topic.SYSTEM_ACTIONS):
        second.history.add(ActionRecord.from_value(published))
    second._close_interrupted()
    assert producer2.on(Topic.SYSTEM_ACTIONS) == []  # nothing was left unfinished
    assert second.handle(Topic.DATA_DRIFT_DETECTED, value) == []  # redelivered trigger: not repeated
    [cooled] = second.handle(Topic.DATA_DRIFT_DETECTED, drift(clock))  # a new drift: still in cooldown
    assert (cooled.status, cooled.suppressed_reason) == ("suppressed", "cooldown")
    assert executors2.retrains == 0


def test_an_action_interrupted_by_a_restart_is_closed_not_repeated(clock):
    first, producer, _executors, _ = make(clock)
    value = drift(clock)
    first.handle(Topic.DATA_DRIFT_DETECTED, value)  # the retrain never finishes (gate closed)
    started = [ActionRecord.from_value(v) for v in producer.on(Topic.SYSTEM_ACTIONS)]

    second, producer2, executors2, _ = make(clock)
    for record in started:
        second.history.add(record)
    second._close_interrupted()
    [closed] = [ActionRecord.from_value(v) for v in producer2.on(Topic.SYSTEM_ACTIONS)]
    assert (closed.action_id, closed.status) == (started[0].action_id, "failed")
    assert "interrupted" in closed.outcome
    assert closed.details["reason"] == "interrupted by restart"
    # A person is told, once: the action's failure alert.
    [alert] = producer2.on(Topic.SYSTEM_ALERTS)
    assert alert["dedup_key"].endswith("retrain-failed") and "interrupted by restart" in alert["message"]
    assert second.history.unfinished() == []
    second._close_interrupted()  # nothing left to close: no second record, no second alert
    assert len(producer2.on(Topic.SYSTEM_ACTIONS)) == 1 and len(producer2.on(Topic.SYSTEM_ALERTS)) == 1
    assert second.handle(Topic.DATA_DRIFT_DETECTED, value) == []
    [cooled] = second.handle(Topic.DATA_DRIFT_DETECTED, drift(clock))  # the started record's cooldown holds
    assert (cooled.status, cooled.suppressed_reason) == ("suppressed", "cooldown")
    assert executors2.retrains == 0
    _executors.gate.set()


def evaluation(clock: Clock, challenger: str = "4") -> dict[str, Any]:
    return {
        "envelope": envelope(clock),
        "model_name": MODEL,
        "champion_version": "3",
        "challenger_version": challenger,
        "winner": "challenger",
        "metric": "auprc",
        "test_name": "bootstrap",
        "p_value": 0.01,
        "significant": True,
        "champion_metrics": {},
        "challenger_metrics": {},
        "champion_samples": 900,
        "challenger_samples": 100,
    }


def terminal(responder: Responder, producer: FakeProducer, action_id: str) -> ActionRecord:
    wait_until(lambda: not responder.in_progress())
    records = [ActionRecord.from_value(v) for v in producer.on(Topic.SYSTEM_ACTIONS)]
    return next(r for r in records if r.action_id == action_id and r.status != "started")


def test_won_evaluation_promotes_and_announces_the_deployment(clock):
    registry = FakeRegistry({"champion": "3", "challenger": "4"})
    responder, producer, _, _ = make(clock, registry)
    value = evaluation(clock)
    [started] = responder.handle(Topic.MODEL_EVALUATION_COMPLETED, value)
    done = terminal(responder, producer, started.action_id)
    assert done.status == "succeeded", done.outcome
    assert registry.aliases == {"champion": "4", "previous_champion": "3"}
    [deployed] = producer.on(Topic.MODEL_DEPLOYED)
    assert (deployed["alias"], deployed["version"], deployed["previous_version"], deployed["action"]) == (
        "champion",
        "4",
        "3",
        "promote",
    )
    assert deployed["envelope"]["causation_id"] == value["envelope"]["event_id"]
    assert deployed["envelope"]["correlation_id"] == value["envelope"]["correlation_id"]


def test_a_stale_evaluation_does_not_promote(clock):
    registry = FakeRegistry({"champion": "3", "challenger": "5"})
    responder, producer, _, _ = make(clock, registry)
    [started] = responder.handle(Topic.MODEL_EVALUATION_COMPLETED, evaluation(clock, "4"))
    done = terminal(responder, producer, started.action_id)
    assert (done.status, done.suppressed_reason) == ("suppressed", "stale")
    assert registry.aliases["champion"] == "3"
    assert producer.on(Topic.MODEL_DEPLOYED) == []


class ScoringRegistry(FakeRegistry):
    """A registry whose versions are real trained models (for the validation gate)."""

    def __init__(self, aliases: dict[str, str], models: dict[str, Any]) -> None:
        super().__init__(aliases)
        self.models = models

    def load_booster(self, version: str) -> Any:
        from fraud_model.registry import FraudScorer

        result = self.models[version]
        return FraudScorer(result.booster, MODEL, version, result.threshold)


@pytest.fixture(scope="module")
def gate_models() -> dict[str, Any]:
    from fraud_model.generator import TransactionGenerator
    from fraud_model.training import train

    frame = TransactionGenerator(seed=21).generate_frame(6000)
    shuffled = frame.copy()
    shuffled["is_fraud"] = shuffled["is_fraud"].sample(frac=1.0, random_state=3).to_numpy()
    holdout = TransactionGenerator(seed=22).generate_frame(4000)
    return {
        "good": train(frame, seed=1, params={"n_estimators": 60}),
        "bad": train(shuffled, seed=1, params={"n_estimators": 60}),
        "holdout": holdout,
    }


def test_validation_gate_refuses_a_worse_challenger_although_the_evaluation_says_it_won(clock, gate_models):
    registry = ScoringRegistry(
        {"champion": "3", "challenger": "4"}, {"3": gate_models["good"], "4": gate_models["bad"]}
    )
    responder, producer, executors, _ = make(clock, registry)
    executors.holdout_frame = gate_models["holdout"]
    [started] = responder.handle(Topic.MODEL_EVALUATION_COMPLETED, evaluation(clock))
    done = terminal(responder, producer, started.action_id)
    assert (done.status, done.suppressed_reason) == ("suppressed", "validation_gate"), done.outcome
    assert "promotion refused by validation gate" in done.outcome
    assert done.details["gate"] == "refused" and done.details["gate_rows"] == "4000"
    assert float(done.details["gate_challenger_cost"]) > float(done.details["gate_champion_cost"])
    # The champion stays, nothing is deployed, people are told, and nothing failed.
    assert registry.aliases == {"champion": "3", "challenger": "4"}
    assert producer.on(Topic.MODEL_DEPLOYED) == []
    [alert] = [a for a in producer.on(Topic.SYSTEM_ALERTS) if a["dedup_key"].endswith("validation-gate")]
    assert alert["severity"] == "HIGH" and "refused by the validation gate" in alert["title"]
    assert responder.history.success_ratio(clock.now) is None


def test_validation_gate_lets_a_better_challenger_through(clock, gate_models):
    registry = ScoringRegistry(
        {"champion": "3", "challenger": "4"}, {"3": gate_models["bad"], "4": gate_models["good"]}
    )
    responder, producer, executors, _ = make(clock, registry)
    executors.holdout_frame = gate_models["holdout"]
    [started] = responder.handle(Topic.MODEL_EVALUATION_COMPLETED, evaluation(clock))
    done = terminal(responder, producer, started.action_id)
    assert done.status == "succeeded", done.outcome
    assert done.details["gate"] == "passed"
    assert registry.aliases == {"champion": "4", "previous_champion": "3"}


def test_validation_gate_without_enough_holdout_follows_the_setting(clock, gate_models):
    registry = ScoringRegistry(
        {"champion": "3", "challenger": "4"}, {"3": gate_models["good"], "4": gate_models["bad"]}
    )
    responder, producer, executors, _ = make(clock, registry, promote_gate_insufficient="refuse")
    executors.holdout_frame = gate_models["holdout"].head(50)
    [started] = responder.handle(Topic.MODEL_EVALUATION_COMPLETED, evaluation(clock))
    done = terminal(responder, producer, started.action_id)
    assert (done.status, done.suppressed_reason) == ("suppressed", "validation_gate")
    assert "holdout too small (50 rows" in done.outcome
    assert registry.aliases["champion"] == "3"


def degraded(clock: Clock, version: str = "3") -> dict[str, Any]:
    return {
        "envelope": envelope(clock),
        "model_name": MODEL,
        "model_version": version,
        "ab_arm": "champion",
        "severity": "HIGH",
        "metric": "auc_roc",
        "baseline_value": 0.95,
        "current_value": 0.8,
        "performance_drop": 0.16,
        "baseline_metrics": {},
        "current_metrics": {},
        "samples": 800,
        "action_hint": "rollback",
    }


def test_degradation_rolls_back_then_with_nothing_to_roll_back_to_falls_back_to_retrain(clock):
    registry = FakeRegistry({"champion": "3", "previous_champion": "2"})
    responder, producer, executors, _ = make(clock, registry, cooldowns_s={"rollback": 0})
    executors.gate.set()
    [started] = responder.handle(Topic.MODEL_PERFORMANCE_DEGRADED, degraded(clock))
    assert terminal(responder, producer, started.action_id).status == "succeeded"
    assert registry.aliases == {"champion": "2"}
    [deployed] = producer.on(Topic.MODEL_DEPLOYED)
    assert (deployed["action"], deployed["version"], deployed["previous_version"]) == ("rollback", "2", "3")

    # The restored version degrades too: nothing to go back to. The rule table's fallback
    # (retrain) runs instead, and the impossible rollback is not a failed action.
    again_value = degraded(clock, "2")
    [again] = responder.handle(Topic.MODEL_PERFORMANCE_DEGRADED, again_value)
    impossible = terminal(responder, producer, again.action_id)
    assert (impossible.status, impossible.suppressed_reason) == ("suppressed", "no_previous_champion")
    assert impossible.details["fallback"] == "retrain" and "previous_champion" in impossible.outcome
    wait_until(lambda: executors.retrains == 1 and not responder.in_progress())
    records = [ActionRecord.from_value(v) for v in producer.on(Topic.SYSTEM_ACTIONS)]
    trigger = again_value["envelope"]["event_id"]
    assert [(r.action, r.status) for r in records if r.trigger_event_id == trigger] == [
        ("rollback", "started"),
        ("rollback", "suppressed"),
        ("retrain", "started"),
        ("retrain", "succeeded"),
    ]
    retrain = [r for r in records if r.action == "retrain"][-1]
    assert retrain.rule_id == "performance-degraded"
    assert retrain.details["fallback_of"] == again.action_id and retrain.details["replaces"] == "rollback"
    # Nothing failed: the success ratio stays whole and nobody is paged about a failure.
    assert responder.history.success_ratio(clock.now) == 1.0
    assert not any(a["dedup_key"].endswith("-failed") for a in producer.on(Topic.SYSTEM_ALERTS))


def test_a_failing_predictor_without_previous_champion_falls_back_to_an_alert(clock):
    registry = FakeRegistry({"champion": "3"})
    responder, producer, _, _ = make(clock, registry)
    condition = Condition(
        event_type=EventType.HEALTH_CHECK_FAILED,
        trigger_topic=Topic.SYSTEM_HEALTH,
        trigger=envelope(clock, "predictor"),
        severity=Severity.HIGH,
        assessed=Severity.HIGH,
        subject="predictor",
        attributes={"service": "predictor"},
    )
    [started] = responder.respond(condition)
    assert started.action == "rollback"
    impossible = terminal(responder, producer, started.action_id)
    assert impossible.suppressed_reason == "no_previous_champion"
    wait_until(lambda: any(r["action"] == "alert" for r in producer.on(Topic.SYSTEM_ACTIONS)))
    [alert_record] = [
        ActionRecord.from_value(v) for v in producer.on(Topic.SYSTEM_ACTIONS) if v["action"] == "alert"
    ]
    assert (alert_record.status, alert_record.details["fallback_of"]) == ("succeeded", started.action_id)
    alerts = producer.on(Topic.SYSTEM_ALERTS)
    assert any("fallback for rollback: no_previous_champion" in a["message"] for a in alerts)
    assert registry.aliases == {"champion": "3"}
    assert responder.history.success_ratio(clock.now) == 1.0


def test_without_a_fallback_in_the_rule_table_an_impossible_rollback_fails(clock):
    from auto_responder.rules import parse_rules

    rules = parse_rules(
        {
            "rules": [
                {
                    "id": "degraded",
                    "event_type": "model_performance_degraded",
                    "actions": {"*": "rollback"},
                }
            ]
        }
    )
    registry = FakeRegistry({"champion": "3"})
    responder, producer, _, _ = make(clock, registry)
    responder.rules = rules
    responder.context = replace(responder.context, rules=rules)
    [started] = responder.handle(Topic.MODEL_PERFORMANCE_DEGRADED, degraded(clock))
    failed = terminal(responder, producer, started.action_id)
    assert failed.status == "failed" and "previous_champion" in failed.outcome
    wait_until(
        lambda: any(a["dedup_key"].endswith("rollback-failed") for a in producer.on(Topic.SYSTEM_ALERTS))
    )
    assert producer.on(Topic.SYSTEM_ACTIONS)[-1]["action"] == "rollback"  # no fallback decided


def test_degradation_of_a_version_no_longer_champion_is_not_rolled_back(clock):
    registry = FakeRegistry({"champion": "5", "previous_champion": "3"})
    responder, producer, _, _ = make(clock, registry)
    [started] = responder.handle(Topic.MODEL_PERFORMANCE_DEGRADED, degraded(clock, "3"))
    done = terminal(responder, producer, started.action_id)
    assert (done.status, done.suppressed_reason) == ("suppressed", "not_champion")
    assert registry.aliases["champion"] == "5"


def overload_condition(clock: Clock) -> Condition:
    return Condition(
        event_type=EventType.SYSTEM_OVERLOAD,
        trigger_topic=Topic.SYSTEM_HEALTH,
        trigger=envelope(clock, "predictor"),
        severity=Severity.MEDIUM,
        assessed=Severity.MEDIUM,
        subject="predictor",
        attributes={"service": "predictor", "consumer_lag": "9000"},
    )


def test_scale_publishes_the_request_and_runs_the_command(clock):
    responder, producer, _, commands = make(clock)
    for instance in ("a", "b"):
        responder.handle(
            Topic.SYSTEM_HEALTH,
            {
                "envelope": envelope(clock, "predictor"),
                "service": "predictor",
                "instance_id": instance,
                "status": "ok",
                "dependencies": {},
                "version": "1",
                "uptime_s": 1.0,
                "details": {"consumer_lag": "0"},
            },
        )
    [started] = responder.respond(overload_condition(clock))
    done = terminal(responder, producer, started.action_id)
    assert done.status == "succeeded", done.outcome
    assert commands == [["scale", "predictor", "3"]]
    [request] = producer.on(Topic.SYSTEM_SCALE_REQUESTED)
    assert (request["service"], request["current_instances"], request["desired_instances"]) == (
        "predictor",
        2,
        3,
    )


def test_scale_stops_at_the_maximum(clock):
    responder, producer, _, commands = make(clock, scale_max_instances=1)
    [started] = responder.respond(overload_condition(clock))
    done = terminal(responder, producer, started.action_id)
    assert (done.status, done.suppressed_reason) == ("suppressed", "max_instances")
    assert commands == []


def predictor_beats(
    responder: Responder, clock: Clock, instances: list[str], lag: int = 0
) -> list[ActionRecord]:
    records: list[ActionRecord] = []
    for instance in instances:
        records += responder.handle(
            Topic.SYSTEM_HEALTH,
            {
                "envelope": envelope(clock, "predictor"),
                "service": "predictor",
                "instance_id": instance,
                "status": "ok",
                "dependencies": {},
                "version": "1",
                "uptime_s": 1.0,
                "details": {"consumer_lag": str(lag)},
            },
        )
    return records


def test_when_the_overload_passed_the_service_scales_down_to_the_minimum(clock):
    responder, producer, _, commands = make(
        clock, scale_min_instances=1, overload_calm_lag_messages=100, overload_calm_s=60
    )
    # 2,000 each: the summed lag crosses the 5,000 overload threshold only with the third beat, so
    # the scale-up (run on a worker thread) always counts three live instances.
    [scale_up] = predictor_beats(responder, clock, ["a", "b", "c"], lag=2000)
    assert scale_up.action == "scale"
    terminal(responder, producer, scale_up.action_id)
    records: list[ActionRecord] = []
    for _ in range(12):  # the three instances drained the lag and beat calmly for two minutes
        clock.now += timedelta(seconds=10)
        records += predictor_beats(responder, clock, ["a", "b", "c"], lag=10)
    [started] = records
    assert (started.action, started.rule_id, started.assessed_severity) == (
        "scale_down",
        "system-overload-cleared",
        "LOW",
    )
    done = terminal(responder, producer, started.action_id)
    assert done.status == "succeeded", done.outcome
    assert commands == [["scale", "predictor", "4"], ["scale", "predictor", "1"]]
    [_, request] = producer.on(Topic.SYSTEM_SCALE_REQUESTED)
    assert (request["current_instances"], request["desired_instances"]) == (3, 1)
    assert "scaled from 3 to 1" in done.outcome


def test_scale_down_at_the_minimum_does_nothing(clock):
    responder, producer, _, commands = make(clock, scale_min_instances=2)
    condition = Condition(
        event_type=EventType.SYSTEM_OVERLOAD_CLEARED,
        trigger_topic=Topic.SYSTEM_ALERTS,
        trigger=envelope(clock, "alerter"),
        severity=Severity.LOW,
        assessed=Severity.LOW,
        subject="predictor",
        attributes={"service": "predictor"},
    )
    [started] = responder.respond(condition)
    done = terminal(responder, producer, started.action_id)
    assert (done.status, done.suppressed_reason) == ("suppressed", "min_instances")
    assert commands == [] and producer.on(Topic.SYSTEM_SCALE_REQUESTED) == []


def test_manual_actions_use_the_same_executors_and_records(clock):
    registry = FakeRegistry({"champion": "3", "challenger": "4"})
    responder, producer, _, _ = make(clock, registry)
    done = responder.manual(Action.PROMOTE)
    assert (done.status, done.rule_id, done.trigger_event_type) == ("succeeded", "manual-promote", "manual")
    assert registry.aliases["champion"] == "4"
    back = responder.manual(Action.ROLLBACK)
    assert back.status == "succeeded"  # back to 3
    again = responder.manual(Action.ROLLBACK)
    assert again.status == "failed"
    statuses = [(r["action"], r["status"]) for r in producer.on(Topic.SYSTEM_ACTIONS)]
    assert statuses.count(("promote", "started")) == 1 and statuses.count(("rollback", "failed")) == 1
    # Manual actions neither start cooldowns nor page anyone about their own failure.
    assert responder.history.policy.last_run == {}
    assert producer.on(Topic.SYSTEM_ALERTS) == []


def test_quick_action_alert_uses_dedup_key_from_event_type_and_subject(clock):
    responder, producer, _, _ = make(clock)
    condition = Condition(
        event_type=EventType.HEALTH_CHECK_FAILED,
        trigger_topic=Topic.SYSTEM_HEALTH,
        trigger=envelope(clock, "recommender"),
        severity=Severity.HIGH,
        assessed=Severity.HIGH,
        subject="recommender",
        attributes={"service": "recommender", "status": "silent"},
    )
    [record] = responder.respond(condition)
    assert (record.action, record.status, record.rule_id) == (
        "alert",
        "succeeded",
        "service-health-check-failed",
    )
    [alert] = producer.on(Topic.SYSTEM_ALERTS)
    assert alert["dedup_key"] == "service_health_check_failed:recommender"
    assert alert["labels"]["source"] == "auto-responder"
    assert alert["related_event_id"] == condition.trigger_event_id


def test_executor_crash_is_a_failed_record_not_a_crash(clock):
    responder, producer, executors, _ = make(clock)

    def boom(ctx: ActionContext, outbox: Outbox) -> ActionResult:
        raise RuntimeError("registry exploded")

    executors.promote = boom  # type: ignore[method-assign]
    [started] = responder.handle(Topic.MODEL_EVALUATION_COMPLETED, evaluation(clock))
    done = terminal(responder, producer, started.action_id)
    assert done.status == "failed" and "registry exploded" in done.outcome
    assert responder.history.success_ratio(clock.now) == 0.0


def test_decision_for_a_condition_without_trigger_gets_its_own_envelope(clock):
    responder, producer, _, _ = make(clock)
    condition = Condition(
        event_type=EventType.HEALTH_CHECK_FAILED,
        trigger_topic=Topic.SYSTEM_HEALTH,
        trigger={},
        severity=Severity.HIGH,
        assessed=Severity.HIGH,
        subject="alerter",
        attributes={"service": "alerter"},
    )
    [record] = responder.respond(condition)
    assert record.trigger_event_id


def test_decision_dataclass_defaults():
    condition = Condition("x", "t", {}, Severity.LOW, Severity.LOW)
    assert not Decision(condition, "r", Action.ALERT).suppressed


def test_training_leaves_the_mlflow_environment_alone(monkeypatch):
    # A retrain runs in this process, and the scale command's children inherit its environment:
    # pointing MLflow at the server for the run must not leave MLflow's local default behind.
    from fraud_model.training import _fluent_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://registry.example:5000")
    with _fluent_tracking("http://127.0.0.1:5000"):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ["MLFLOW_REGISTRY_URI"] == "http://registry.example:5000"
