"""What the scenario suite measures with: the timeline, the guards, the action counts.

A suite that goes blind (its timeline consumer stopped, a service it relies on died) must
say so instead of measuring silence; an action still running when a scenario is measured
is listed apart from one never taken.
"""

from __future__ import annotations

from typing import Any

import pytest

from constellation import stack
from constellation.events import Seen, Timeline
from constellation.scenarios import MODEL_SERVICES, Outcome, guard_for, measure
from mlops_platform.settings import PlatformSettings


def action(action_id: str, name: str, status: str, at: float) -> Seen:
    value = {
        "envelope": {"event_id": f"{action_id}-{status}"},
        "action_id": action_id,
        "action": name,
        "status": status,
        "rule_id": "performance-degraded",
        "outcome": "",
    }
    return Seen("system.actions", value, at)


class RecordedSuite:
    """The parts of a suite :func:`measure` reads, over a fixed list of events."""

    def __init__(self, events: list[Seen]) -> None:
        self.seen = events
        self.timeline = self

    def events(self, start: float, end: float | None = None) -> list[Seen]:
        return [s for s in self.seen if s.received_at >= start]

    def window_s(self) -> float:
        return 2.5

    def walk(self, event_id: str, causes: Any) -> tuple[list[Seen], bool]:
        return [], False

    def check(self) -> None:
        pass

    def wait(self, what: str, done: Any, timeout_s: float, guard: Any) -> bool:
        """Nothing arrives while waiting: the outcome is whatever is there already."""
        guard()
        return bool(done())


class LateOutcomeSuite(RecordedSuite):
    """The action's outcome arrives while :func:`measure` waits for it."""

    def __init__(self, events: list[Seen], late: Seen) -> None:
        super().__init__(events)
        self.late = late
        self.waited_for: list[str] = []

    def wait(self, what: str, done: Any, timeout_s: float, guard: Any) -> bool:
        self.waited_for.append(what)
        assert not done(), "measure waits only while an action is unfinished"
        self.seen.append(self.late)
        return bool(done())


@pytest.fixture
def all_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "running_pid", lambda name: 4242)


@pytest.mark.usefixtures("all_running")
def test_an_action_without_an_outcome_yet_is_listed_as_unfinished() -> None:
    suite = RecordedSuite(
        [
            action("a", "rollback", "started", 1.0),
            action("b", "retrain", "started", 2.0),
            action("b", "retrain", "succeeded", 3.0),
            action("c", "alert", "succeeded", 4.0),
        ]
    )
    outcome = Outcome("bad_model", "bad model")
    measure(suite, outcome, 0.0, detect=None, cause_topics=[])  # type: ignore[arg-type]
    assert outcome.actions == {"rollback:unfinished": 1, "retrain:succeeded": 1, "alert:succeeded": 1}
    assert (outcome.actions_succeeded, outcome.actions_failed) == (2, 0)
    assert outcome.notes == []


@pytest.mark.usefixtures("all_running")
def test_an_outcome_reported_just_after_the_scenarios_wait_is_counted() -> None:
    # The responder publishes the good model's model.deployed a moment before the rollback's
    # succeeded record: a scenario that stops waiting at the first must not miss the second.
    suite = LateOutcomeSuite(
        [action("a", "rollback", "started", 1.0)], late=action("a", "rollback", "succeeded", 1.3)
    )
    outcome = Outcome("bad_model", "bad model")
    measure(suite, outcome, 0.0, detect=None, cause_topics=[])  # type: ignore[arg-type]
    assert suite.waited_for == ["the started actions' outcomes"]
    assert outcome.actions == {"rollback:succeeded": 1}
    assert outcome.actions_succeeded == 1


def test_a_model_service_not_running_when_measured_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "running_pid", lambda name: None if name == "auto-responder" else 7)
    outcome = Outcome("bad_model", "bad model")
    measure(RecordedSuite([]), outcome, 0.0, detect=None, cause_topics=[])  # type: ignore[arg-type]
    assert outcome.notes == ["not running when measured: auto-responder"]


class StoppedTimeline:
    def check(self) -> None:
        raise RuntimeError("the timeline consumer stopped: KafkaException: fatal")


class Suite:
    def __init__(self, timeline: Any) -> None:
        self.timeline = timeline


class RunningTimeline:
    def check(self) -> None:
        return None


def test_the_guard_fails_when_the_timeline_stopped() -> None:
    guard = guard_for(Suite(StoppedTimeline()), None)  # type: ignore[arg-type]
    with pytest.raises(stack.StackError, match="timeline consumer stopped: KafkaException"):
        guard()


def test_the_guard_fails_when_a_watched_service_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "running_pid", lambda name: None if name == "drift-detector" else 7)
    monkeypatch.setattr(stack, "log_tail", lambda name, lines=15: f"last words of {name}")
    suite = Suite(RunningTimeline())
    guard_for(suite, None, ["predictor"])()  # type: ignore[arg-type]  # the dead one is not watched
    with pytest.raises(stack.StackError, match="drift-detector stopped during the scenario") as failure:
        guard_for(suite, None, MODEL_SERVICES)()  # type: ignore[arg-type]
    assert "last words of drift-detector" in str(failure.value)


# --------------------------------------------------------------------------- the timeline


class FakeMessage:
    def __init__(self, topic: str, value: bytes) -> None:
        self._topic, self._value = topic, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value


class ScriptedConsumer:
    """Hands out the scripted batches, then raises ``then`` (or stops the timeline)."""

    def __init__(self, timeline: Timeline, batches: list[list[FakeMessage]], then: Exception | None) -> None:
        self.timeline, self.batches, self.then = timeline, batches, then
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Any = None) -> None:
        return None

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.batches:
            return self.batches.pop(0)
        if self.then is not None:
            raise self.then
        self.timeline.stop_event.set()
        return []

    def close(self) -> None:
        self.closed = True


def timeline_over(
    batches: list[list[FakeMessage]], then: Exception | None, on_event: Any
) -> tuple[Timeline, ScriptedConsumer]:
    timeline = Timeline(PlatformSettings(), on_event)
    timeline.consumer.close()
    consumer = ScriptedConsumer(timeline, batches, then)
    timeline.consumer = consumer  # type: ignore[assignment]
    timeline.serde.decode = lambda topic, raw, **_: {  # type: ignore[method-assign]
        "envelope": {"event_id": raw.decode()},
        "model_name": raw.decode(),
    }
    return timeline, consumer


def test_a_record_the_callback_fails_on_is_skipped_and_the_timeline_goes_on() -> None:
    def on_event(topic: str, value: dict[str, Any]) -> None:
        if value["model_name"] == "bad":
            raise ValueError("cannot describe it")

    batch = [FakeMessage("system.actions", b"first"), FakeMessage("system.actions", b"bad")]
    timeline, consumer = timeline_over([batch, [FakeMessage("system.actions", b"after")]], None, on_event)
    timeline.run()
    assert [s.event_id for s in timeline.since(0.0)] == ["first", "bad", "after"]
    assert timeline.error is None and consumer.closed
    timeline.check()  # stopped on request: nothing to report


def test_a_timeline_whose_consumer_failed_says_why() -> None:
    timeline, consumer = timeline_over([], RuntimeError("broker gone"), lambda topic, value: None)
    with pytest.raises(RuntimeError, match="broker gone"):
        timeline.run()
    assert consumer.closed
    with pytest.raises(RuntimeError, match="timeline consumer stopped: RuntimeError: broker gone"):
        timeline.check()
