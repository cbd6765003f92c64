"""Health and overload conditions from system.health heartbeats, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auto_responder.model import EventType, Severity
from auto_responder.watcher import HeartbeatWatcher
from mlops_platform.contracts import new_envelope

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def beat(service: str, at: datetime, status="ok", instance="i1", deps=None, lag=0) -> dict:
    env = new_envelope(service)
    env["event_time"] = at
    return {
        "envelope": env,
        "service": service,
        "instance_id": instance,
        "status": status,
        "dependencies": deps or {"kafka": "ok"},
        "version": "0.1.0",
        "uptime_s": 10.0,
        "details": {"consumer_lag": str(lag)},
    }


def watcher(**kw) -> HeartbeatWatcher:
    options = {
        "own_service": "auto-responder",
        "timeout_s": 30,
        "scale_service": "predictor",
        "overload_lag": 1000,
        "repeat_s": 600,
        "now": T0,
    }
    return HeartbeatWatcher(**(options | kw))


def test_a_service_that_stops_beating_fails_once_per_outage():
    w = watcher()
    last = beat("predictor", T0)
    assert w.observe(last, T0) == []
    assert w.check(T0 + timedelta(seconds=30)) == []
    [failed] = w.check(T0 + timedelta(seconds=31))
    assert failed.event_type == EventType.HEALTH_CHECK_FAILED
    assert failed.assessed is Severity.HIGH
    assert failed.subject == "predictor"
    assert failed.attributes["status"] == "silent"
    assert failed.trigger_event_id == last["envelope"]["event_id"]  # the last beat is the evidence
    assert w.check(T0 + timedelta(seconds=300)) == []  # not again while silent
    # Beating healthy again resolves it, and a later outage is a new condition.
    [recovered] = w.observe(beat("predictor", T0 + timedelta(seconds=400)), T0 + timedelta(seconds=400))
    assert recovered.event_type == EventType.HEALTH_RECOVERED
    assert len(w.check(T0 + timedelta(seconds=431))) == 1


def test_one_live_instance_keeps_a_service_up():
    w = watcher()
    w.observe(beat("predictor", T0, instance="a"), T0)
    w.observe(beat("predictor", T0, instance="b"), T0)
    assert w.live_instances("predictor", T0) == 2
    later = T0 + timedelta(seconds=40)
    w.observe(beat("predictor", later, instance="a"), later)  # b was scaled away
    assert w.check(later) == []
    assert w.live_instances("predictor", later) == 1


def test_degraded_severity_depends_on_what_fails():
    w = watcher()
    [infra] = w.observe(beat("predictor", T0, "degraded", deps={"kafka": "ok", "mlflow": "down"}), T0)
    assert infra.assessed is Severity.LOW
    # Still degraded for the same reason: not raised again.
    assert (
        w.observe(beat("predictor", T0 + timedelta(seconds=5), "degraded", deps={"mlflow": "down"}), T0) == []
    )
    # Its own component fails: worse, raised again.
    at = T0 + timedelta(seconds=10)
    [own] = w.observe(beat("predictor", at, "degraded", deps={"model": "down", "kafka": "ok"}), at)
    assert own.assessed is Severity.MEDIUM
    at = T0 + timedelta(seconds=15)
    [down] = w.observe(beat("predictor", at, "down"), at)
    assert down.assessed is Severity.HIGH


def test_stale_own_and_unwatched_heartbeats_are_ignored():
    w = watcher(watched=["predictor"])
    assert w.observe(beat("predictor", T0 - timedelta(hours=3), "down"), T0) == []
    assert w.observe(beat("auto-responder", T0, "down"), T0) == []
    assert w.observe(beat("recommender", T0, "down"), T0) == []
    assert [s["service"] for s in w.snapshot(T0)] == ["predictor"]


def test_an_expected_service_that_never_beats_fails():
    w = watcher(watched=["predictor"])
    [silent] = w.check(T0 + timedelta(seconds=31))
    assert silent.subject == "predictor" and silent.trigger == {}


def test_overload_from_the_scaled_service_lag():
    w = watcher()
    assert w.observe(beat("predictor", T0, lag=400, instance="a"), T0) == []
    [overload] = w.observe(beat("predictor", T0, lag=700, instance="b"), T0)  # 1100 in total
    assert overload.event_type == EventType.SYSTEM_OVERLOAD
    assert overload.assessed is Severity.MEDIUM
    assert overload.attributes["consumer_lag"] == "1100"
    later = T0 + timedelta(seconds=60)
    assert w.observe(beat("predictor", later, lag=5000, instance="a"), later) == []  # repeat_s not over
    much_later = T0 + timedelta(seconds=601)
    [again] = w.observe(beat("predictor", much_later, lag=5000, instance="a"), much_later)
    assert again.assessed is Severity.HIGH
    # Lag of other services never means "scale the predictor".
    assert w.observe(beat("recommender", T0, lag=10**6), T0) == []


def test_overload_passed_once_the_lag_stays_calm_with_more_than_the_minimum():
    w = watcher(min_instances=1, calm_lag=100, calm_s=60)
    t = T0
    w.observe(beat("predictor", t, lag=900, instance="a"), t)
    [overload] = w.observe(beat("predictor", t, lag=900, instance="b"), t)
    assert overload.event_type == EventType.SYSTEM_OVERLOAD
    # The lag drains; calm only counts from the first calm beat, and only after calm_s.
    t += timedelta(seconds=10)
    assert w.observe(beat("predictor", t, lag=50, instance="a"), t) == []  # 950 in total: not calm yet
    assert w.observe(beat("predictor", t, lag=20, instance="b"), t) == []  # 70: calm starts
    calm_from, raised = t, []
    while t < calm_from + timedelta(seconds=200):  # both instances keep beating, calmly
        t += timedelta(seconds=10)
        for instance in ("a", "b"):
            raised += [(t, c) for c in w.observe(beat("predictor", t, lag=10, instance=instance), t)]
    # Once per calm period with these instances, after calm_s.
    [(at, cleared)] = raised
    assert at >= calm_from + timedelta(seconds=60)
    assert (cleared.event_type, cleared.assessed, cleared.subject) == (
        EventType.SYSTEM_OVERLOAD_CLEARED,
        Severity.LOW,
        "predictor",
    )
    assert cleared.attributes["live_instances"] == "2" and cleared.attributes["consumer_lag"] == "20"


def test_an_overload_drained_before_the_new_instance_is_up_still_passes_once_it_is():
    # The scale-up takes a while: the lag is gone while the only instance is still alone.
    w = watcher(min_instances=1, calm_lag=100, calm_s=60)
    assert len(w.observe(beat("predictor", T0, lag=5000, instance="a"), T0)) == 1
    t = T0
    for _ in range(6):
        t += timedelta(seconds=10)
        assert w.observe(beat("predictor", t, lag=0, instance="a"), t) == []
    raised = []
    while t < T0 + timedelta(seconds=300):  # the second instance has joined
        t += timedelta(seconds=10)
        for instance in ("a", "b"):
            raised += w.observe(beat("predictor", t, lag=0, instance=instance), t)
    [cleared] = raised
    assert cleared.event_type == EventType.SYSTEM_OVERLOAD_CLEARED
    assert cleared.attributes["live_instances"] == "2"


def test_no_overload_passed_without_an_overload_at_the_minimum_or_while_the_lag_is_high():
    w = watcher(min_instances=1, calm_lag=100, calm_s=60)
    for s in range(0, 300, 10):  # two calm instances, never overloaded: an operator's choice
        t = T0 + timedelta(seconds=s)
        assert w.observe(beat("predictor", t, lag=0, instance="a"), t) == []
        assert w.observe(beat("predictor", t, lag=0, instance="b"), t) == []
    w = watcher(min_instances=1, calm_lag=100, calm_s=60)
    assert len(w.observe(beat("predictor", T0, lag=5000), T0)) == 1  # overload with one instance
    for s in range(0, 300, 10):
        t = T0 + timedelta(seconds=s)
        assert w.observe(beat("predictor", t, lag=0), t) == []  # one instance: nothing to scale down
    w = watcher(min_instances=1, calm_lag=100, calm_s=60)
    w.observe(beat("predictor", T0, lag=900, instance="a"), T0)
    assert len(w.observe(beat("predictor", T0, lag=900, instance="b"), T0)) == 1
    for s in range(10, 300, 10):
        t = T0 + timedelta(seconds=s)
        assert w.observe(beat("predictor", t, lag=300, instance="a"), t) == []  # not calm (300 > 100)
        assert w.observe(beat("predictor", t, lag=300, instance="b"), t) == []


def test_a_planned_restart_is_neither_a_failure_nor_silence():
    w = watcher()
    assert w.observe(beat("predictor", T0), T0) == []
    # SIGTERM: the last beat says "stopping"; the restart takes 25 s of the 30 s timeout.
    stop = T0 + timedelta(seconds=20)
    assert w.observe(beat("predictor", stop, status="stopping"), stop) == []
    assert w.live_instances("predictor", stop) == 0
    assert w.check(stop + timedelta(seconds=30)) == []
    back = stop + timedelta(seconds=25)
    assert w.observe(beat("predictor", back), back) == []
    assert w.check(back + timedelta(seconds=29)) == []


def test_a_service_stopped_and_not_restarted_is_silent_from_its_goodbye():
    w = watcher()
    stop = T0 + timedelta(seconds=20)
    w.observe(beat("predictor", T0), T0)
    w.observe(beat("predictor", stop, status="stopping"), stop)
    assert w.check(stop + timedelta(seconds=30)) == []
    [silent] = w.check(stop + timedelta(seconds=31))
    assert silent.event_type == EventType.HEALTH_CHECK_FAILED and silent.attributes["status"] == "silent"


def test_scale_down_keeps_the_other_instances_and_a_degraded_leaver_is_resolved():
    w = watcher()
    w.observe(beat("predictor", T0, instance="a"), T0)
    t1 = T0 + timedelta(seconds=5)
    [failed] = w.observe(beat("predictor", t1, status="degraded", instance="b", deps={"model": "down"}), t1)
    assert failed.assessed is Severity.MEDIUM
    t2 = T0 + timedelta(seconds=8)
    [recovered] = w.observe(beat("predictor", t2, status="stopping", instance="b"), t2)
    assert recovered.event_type == EventType.HEALTH_RECOVERED
    assert w.live_instances("predictor", t2) == 1
    # The remaining instance keeps beating: nothing more to say.
    t3 = T0 + timedelta(seconds=10)
    assert w.observe(beat("predictor", t3, instance="a"), t3) == []
    assert w.check(t3 + timedelta(seconds=29)) == []
