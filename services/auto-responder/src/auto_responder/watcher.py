"""Conditions derived from ``system.health`` heartbeats.

Every service publishes a heartbeat every few seconds (status, dependencies, details such
as consumer lag). The watcher keeps the last beat of each service instance and turns
what it sees into conditions, edge-triggered so a persisting state is not re-raised at
every beat:

* **health check failed** (``service_health_check_failed``, subject = the service):
  - the service stopped beating: no instance beat within ``heartbeat_timeout_s`` -> HIGH
    (one condition per outage);
  - an instance reports ``down`` -> HIGH; ``degraded`` because its own components fail
    (model, consumer loop, ...) -> MEDIUM; ``degraded`` only because shared infrastructure
    (Kafka, schema registry, MLflow) is unreachable -> LOW: nothing the service or its
    model could fix, so people are alerted rather than a model rolled back.
  A worse state than the one already raised raises again.
* **recovered** (``service_health_recovered``): a failed service beats ``ok`` again.
* an instance stopping on purpose sends a last beat with status ``stopping``: it leaves the
  live set without a failure (a restart is not an outage); when it was the last instance,
  the silence timeout counts from its goodbye.
* **overload** (``system_overload``, subject = the scaled service): the summed consumer
  lag of its live instances reaches ``overload_lag`` (MEDIUM; four times that: HIGH),
  raised again every ``repeat_s`` while it lasts (scaling may need more than one step).
* **overload passed** (``system_overload_cleared``, LOW, subject = the scaled service): after
  an overload, more than ``min_instances`` live instances and a summed lag under ``calm_lag``
  for ``calm_s``; once per overload.

Heartbeats older than the timeout (e.g. replayed by a fresh consumer group) are ignored.
The clock is explicit: :meth:`observe` and :meth:`check` take ``now``.

It also measures **availability** per service and instance over a sliding period
(:class:`Availability`): the share of the expected heartbeat intervals in which a
healthy (``ok``) heartbeat arrived. :meth:`HeartbeatWatcher.check` exports it as the
``service_availability_ratio`` gauge; the snapshot (``GET /services``) shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auto_responder import metrics
from auto_responder.model import Condition, EventType, Severity
from mlops_platform.contracts import Topic
from mlops_platform.health import STOPPING

INFRA_DEPENDENCIES = frozenset({"kafka", "schema_registry", "mlflow"})

#: A healthy beat covers its expected interval plus this share of it: a beat a little late
#: (a slow check, a busy machine) is not an outage.
INTERVAL_SLACK = 0.5


@dataclass(frozen=True)
class _Beat:
    at: datetime
    healthy: bool
    interval_s: float


def _merged_length(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` spans."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class Availability:
    """Availability per service and instance from heartbeats, over a sliding ``period_s``.

    Each instance is expected to beat every ``interval_s`` (what the beat itself declares in
    ``details.interval_s``, else ``default_interval_s``). A healthy beat at ``t`` covers
    ``[t, t + interval x (1 + slack))``, cut short by the instance's next beat (a degraded
    one ends the coverage at once). The availability of an instance is the covered share of
    the period since its first beat; of a service, the share in which at least one of its
    instances was covered, since the service was expected (watched from the start) or first
    beat. Time before anything was expected does not count against it.
    """

    def __init__(self, period_s: float, default_interval_s: float, slack: float = INTERVAL_SLACK) -> None:
        if period_s <= 0 or default_interval_s <= 0:
            raise ValueError(f"period and interval must be positive, got {period_s}, {default_interval_s}")
        self.period_s = period_s
        self.default_interval_s = default_interval_s
        self.slack = slack
        self._beats: dict[str, dict[str, list[_Beat]]] = {}
        self._expected_since: dict[str, datetime] = {}

    def expect(self, service: str, since: datetime) -> None:
        """``service`` should have been beating since ``since`` (silence from then on counts)."""
        self._expected_since.setdefault(service, since)
        self._beats.setdefault(service, {})

    def observe(
        self, service: str, instance: str, at: datetime, healthy: bool, interval_s: float | None = None
    ) -> None:
        """Record one beat (beats of an instance arrive in time order; older ones are dropped)."""
        beats = self._beats.setdefault(service, {}).setdefault(instance, [])
        if beats and at < beats[-1].at:
            return
        self._expected_since.setdefault(service, at)
        interval = interval_s if interval_s and interval_s > 0 else self.default_interval_s
        beats.append(_Beat(at, healthy, interval))

    def prune(self, now: datetime) -> None:
        """Forget beats that no longer reach into the period (and instances left with none)."""
        horizon = now.timestamp() - self.period_s
        for instances in self._beats.values():
            for instance, beats in list(instances.items()):
                keep = [b for b in beats if b.at.timestamp() + b.interval_s * (1 + self.slack) > horizon]
                # The last beat stays while the period still covers the instance's life.
                if not keep and beats and beats[-1].at.timestamp() > horizon - self.period_s:
                    keep = beats[-1:]
                if keep:
                    instances[instance] = keep
                else:
                    del instances[instance]

    def _covered(self, beats: list[_Beat], start: float, end: float) -> list[tuple[float, float]]:
        spans = []
        for beat, following in zip(beats, [*beats[1:], None], strict=True):
            if not beat.healthy:
                continue
            begin = beat.at.timestamp()
            until = begin + beat.interval_s * (1 + self.slack)
            if following is not None:
                until = min(until, following.at.timestamp())
            begin, until = max(begin, start), min(until, end)
            if until > begin:
                spans.append((begin, until))
        return spans

    def _first_seen(self, service: str) -> dict[str, float]:
        return {
            instance: beats[0].at.timestamp()
            for instance, beats in self._beats.get(service, {}).items()
            if beats
        }

    def instance_ratio(self, service: str, instance: str, now: datetime) -> float | None:
        """Availability of one instance over the period (None: never seen)."""
        beats = self._beats.get(service, {}).get(instance)
        if not beats:
            return None
        end = now.timestamp()
        start = max(end - self.period_s, beats[0].at.timestamp())
        if end <= start:
            return 1.0 if beats[-1].healthy else 0.0
        return _merged_length(self._covered(beats, start, end)) / (end - start)

    def service_ratio(self, service: str, now: datetime) -> float | None:
        """Availability of a service (some instance healthy) over the period (None: unknown)."""
        expected = self._expected_since.get(service)
        if expected is None:
            return None
        end = now.timestamp()
        start = max(end - self.period_s, expected.timestamp())
        instances = self._beats.get(service, {})
        if end <= start:
            return 1.0 if any(b and b[-1].healthy for b in instances.values()) else 0.0
        spans = [span for beats in instances.values() for span in self._covered(beats, start, end)]
        return _merged_length(spans) / (end - start)

    def view(self, service: str, now: datetime) -> dict[str, Any]:
        """The service's figures for the API: its ratio and each instance's."""
        ratio = self.service_ratio(service, now)
        return {
            "period_s": self.period_s,
            "ratio": None if ratio is None else round(ratio, 6),
            "instances": {
                instance: round(self.instance_ratio(service, instance, now) or 0.0, 6)
                for instance in sorted(self._first_seen(service))
            },
        }


@dataclass
class _Instance:
    last_beat: datetime
    status: str
    lag: int = 0


@dataclass
class _Service:
    name: str
    instances: dict[str, _Instance] = field(default_factory=dict)
    registered_at: datetime | None = None
    last_envelope: Mapping[str, Any] = field(default_factory=dict)
    failed: Severity | None = None
    failed_reason: str = ""
    overloaded_at: datetime | None = None
    #: since when the lag has been under the calm threshold (None: not calm)
    calm_since: datetime | None = None
    #: an overload was raised and has not been declared passed yet
    overloaded: bool = False

    def last_beat(self) -> datetime | None:
        beats = [i.last_beat for i in self.instances.values()]
        return max(beats) if beats else None


def _interval(details: Mapping[str, Any]) -> float | None:
    """The heartbeat interval an instance declares in its details (None when absent or bad)."""
    try:
        return float(details["interval_s"])
    except (KeyError, TypeError, ValueError):
        return None


def _time(envelope: Mapping[str, Any], now: datetime) -> datetime:
    at = envelope.get("event_time")
    if not isinstance(at, datetime):
        return now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return min(at, now)


class HeartbeatWatcher:
    """Tracks heartbeats per service and instance; yields health and overload conditions."""

    def __init__(
        self,
        *,
        own_service: str,
        timeout_s: float,
        scale_service: str,
        overload_lag: int,
        repeat_s: float,
        watched: Iterable[str] | None = None,
        now: datetime | None = None,
        min_instances: int = 1,
        calm_lag: int = 0,
        calm_s: float = 300.0,
        availability_period_s: float = 3600.0,
        heartbeat_interval_s: float = 10.0,
    ) -> None:
        self.own_service = own_service
        self.timeout_s = timeout_s
        self.scale_service = scale_service
        self.overload_lag = overload_lag
        self.repeat_s = repeat_s
        self.min_instances = min_instances
        self.calm_lag = calm_lag
        self.calm_s = calm_s
        self.watched = set(watched) if watched is not None else None
        self.services: dict[str, _Service] = {}
        self.availability = Availability(availability_period_s, heartbeat_interval_s)
        start = now or datetime.now(UTC)
        for name in sorted(self.watched or ()):
            # Expected services count as seen at start: silent from the start is an outage too.
            self.services[name] = _Service(name, registered_at=start)
            self.availability.expect(name, start)

    def _watching(self, service: str) -> bool:
        if service == self.own_service or not service:
            return False
        return self.watched is None or service in self.watched

    # ------------------------------------------------------------------ input

    def observe(self, value: Mapping[str, Any], now: datetime) -> list[Condition]:
        """Account for one heartbeat; returns the conditions it reveals."""
        name = str(value.get("service") or "")
        if not self._watching(name):
            return []
        envelope = value.get("envelope") or {}
        at = _time(envelope, now)
        if (now - at).total_seconds() > self.timeout_s:
            return []  # stale: says nothing about the present
        service = self.services.setdefault(name, _Service(name))
        instance_id = str(value.get("instance_id") or "")
        status = str(value.get("status") or "ok")
        details = value.get("details") or {}
        try:
            lag = max(int(float(details.get("consumer_lag", 0))), 0)
        except (TypeError, ValueError):
            lag = 0
        previous = service.instances.get(instance_id)
        if previous is not None and previous.last_beat > at:
            return []  # an older beat of this instance, delivered late
        if status == STOPPING:
            return self._left(service, instance_id, at, now)
        service.instances[instance_id] = _Instance(at, status, lag)
        service.last_envelope = envelope
        self.availability.observe(name, instance_id, at, status == "ok", _interval(details))
        conditions: list[Condition] = []

        if status != "ok":
            severity, reason = self._assess_status(status, value.get("dependencies") or {})
            if service.failed is None or severity > service.failed:
                service.failed, service.failed_reason = severity, reason
                conditions.append(self._failed(service, severity, reason, instance_id, status))
        elif service.failed is not None and self._all_ok(service, now):
            conditions.append(self._recovered(service, instance_id))
            service.failed, service.failed_reason = None, ""

        if name == self.scale_service:
            overload = self._overload(service, now)
            if overload is not None:
                conditions.append(overload)
        return conditions

    def _left(self, service: _Service, instance_id: str, at: datetime, now: datetime) -> list[Condition]:
        """An instance stopped on purpose: it leaves the live set, which is no failure.

        When it was the last one, the silence timeout starts over from its goodbye: a
        restart that comes back in time raises nothing, a service that stays away is
        reported silent as before.
        """
        service.instances.pop(instance_id, None)
        self.availability.observe(service.name, instance_id, at, False, None)
        if not service.instances:
            service.registered_at = at
            return []
        if service.failed is not None and service.failed < Severity.HIGH and self._all_ok(service, now):
            # The instance that reported the failure is gone and the others are healthy.
            condition = self._recovered(service, instance_id)
            service.failed, service.failed_reason = None, ""
            return [condition]
        return []

    def check(self, now: datetime) -> list[Condition]:
        """Services that went silent (called periodically); refreshes the availability gauges."""
        conditions: list[Condition] = []
        self.availability.prune(now)
        for name in self.services:
            ratio = self.availability.service_ratio(name, now)
            if ratio is not None:
                metrics.AVAILABILITY.labels(name).set(ratio)
        for service in self.services.values():
            last = service.last_beat() or service.registered_at
            if last is None:
                continue
            silent_s = (now - last).total_seconds()
            if silent_s <= self.timeout_s:
                continue
            if service.failed is not None and service.failed >= Severity.HIGH:
                continue
            reason = f"no heartbeat for {silent_s:.0f}s (timeout {self.timeout_s:.0f}s)"
            service.failed, service.failed_reason = Severity.HIGH, reason
            conditions.append(self._failed(service, Severity.HIGH, reason, "", "silent", silent_s=silent_s))
        return conditions

    # --------------------------------------------------------------- queries

    def live_instances(self, service: str, now: datetime) -> int:
        entry = self.services.get(service)
        if entry is None:
            return 0
        return len(self._live(entry, now))

    def snapshot(self, now: datetime) -> list[dict[str, Any]]:
        rows = []
        for service in sorted(self.services.values(), key=lambda s: s.name):
            last = service.last_beat()
            rows.append(
                {
                    "service": service.name,
                    "live_instances": self.live_instances(service.name, now),
                    "last_beat": last.isoformat() if last else None,
                    "silent_s": round((now - last).total_seconds(), 3) if last else None,
                    "failed": service.failed.name if service.failed else None,
                    "reason": service.failed_reason or None,
                    "availability": self.availability.view(service.name, now),
                }
            )
        return rows

    # -------------------------------------------------------------- helpers

    @staticmethod
    def _assess_status(status: str, dependencies: Mapping[str, str]) -> tuple[Severity, str]:
        failing = sorted(name for name, state in dependencies.items() if state != "ok")
        if status == "down":
            return Severity.HIGH, f"reports down (failing: {', '.join(failing) or 'unknown'})"
        own = [name for name in failing if name not in INFRA_DEPENDENCIES]
        if own:
            return Severity.MEDIUM, f"reports degraded: {', '.join(own)} failing"
        unreachable = ", ".join(failing) or "?"
        return Severity.LOW, f"reports degraded: shared infrastructure unreachable ({unreachable})"

    def _live(self, service: _Service, now: datetime) -> list[_Instance]:
        return [
            i for i in service.instances.values() if (now - i.last_beat).total_seconds() <= self.timeout_s
        ]

    def _all_ok(self, service: _Service, now: datetime) -> bool:
        live = self._live(service, now)
        return bool(live) and all(i.status == "ok" for i in live)

    def _overload(self, service: _Service, now: datetime) -> Condition | None:
        live = self._live(service, now)
        lag = sum(i.lag for i in live)
        if lag < self.overload_lag:
            service.overloaded_at = None
            return self._calm(service, live, lag, now)
        service.calm_since = None
        since = service.overloaded_at
        if since is not None and (now - since).total_seconds() < self.repeat_s:
            return None
        service.overloaded_at, service.overloaded = now, True
        severity = Severity.HIGH if lag >= 4 * self.overload_lag else Severity.MEDIUM
        return Condition(
            event_type=EventType.SYSTEM_OVERLOAD,
            trigger_topic=Topic.SYSTEM_HEALTH,
            trigger=service.last_envelope,
            severity=severity,
            assessed=severity,
            subject=service.name,
            attributes={
                "service": service.name,
                "consumer_lag": str(lag),
                "live_instances": str(len(live)),
                "reason": f"consumer lag {lag} >= {self.overload_lag}",
            },
        )

    def _calm(self, service: _Service, live: list[_Instance], lag: int, now: datetime) -> Condition | None:
        """Overload passed: after an overload, lag under the calm threshold for a while, and
        more instances than the minimum (instances an operator started on purpose are left alone)."""
        # Still overloaded while at the minimum: the lag usually drains before the instance
        # the overload started is up, and forgetting the overload then would leave it running.
        if not service.overloaded or lag > self.calm_lag or len(live) <= self.min_instances:
            service.calm_since = None
            return None
        if service.calm_since is None:
            service.calm_since = now
            return None
        if (now - service.calm_since).total_seconds() < self.calm_s:
            return None
        service.overloaded, service.calm_since = False, None
        return Condition(
            event_type=EventType.SYSTEM_OVERLOAD_CLEARED,
            trigger_topic=Topic.SYSTEM_HEALTH,
            trigger=service.last_envelope,
            severity=Severity.LOW,
            assessed=Severity.LOW,
            subject=service.name,
            attributes={
                "service": service.name,
                "consumer_lag": str(lag),
                "live_instances": str(len(live)),
                "reason": f"consumer lag {lag} <= {self.calm_lag} for {self.calm_s:.0f}s "
                f"with {len(live)} instances (minimum {self.min_instances})",
            },
        )

    def _failed(
        self,
        service: _Service,
        severity: Severity,
        reason: str,
        instance_id: str,
        status: str,
        silent_s: float | None = None,
    ) -> Condition:
        last = service.last_beat()
        attributes = {
            "service": service.name,
            "instance_id": instance_id,
            "status": status,
            "reason": reason,
            "last_beat": last.isoformat() if last else "",
        }
        if silent_s is not None:
            attributes["silent_s"] = f"{silent_s:.1f}"
        return Condition(
            event_type=EventType.HEALTH_CHECK_FAILED,
            trigger_topic=Topic.SYSTEM_HEALTH,
            trigger=service.last_envelope,
            severity=severity,
            assessed=severity,
            subject=service.name,
            attributes=attributes,
        )

    def _recovered(self, service: _Service, instance_id: str) -> Condition:
        return Condition(
            event_type=EventType.HEALTH_RECOVERED,
            trigger_topic=Topic.SYSTEM_HEALTH,
            trigger=service.last_envelope,
            severity=Severity.LOW,
            assessed=Severity.LOW,
            subject=service.name,
            attributes={
                "service": service.name,
                "instance_id": instance_id,
                "status": "ok",
                "reason": f"beats healthy again (was: {service.failed_reason})",
            },
        )
