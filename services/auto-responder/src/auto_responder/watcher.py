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
* **overload** (``system_overload``, subject = the scaled service): the summed consumer
  lag of its live instances reaches ``overload_lag`` (MEDIUM; four times that: HIGH),
  raised again every ``repeat_s`` while it lasts (scaling may need more than one step).
* **overload passed** (``system_overload_cleared``, LOW, subject = the scaled service): after
  an overload, more than ``min_instances`` live instances and a summed lag under ``calm_lag``
  for ``calm_s``; once per overload.

Heartbeats older than the timeout (e.g. replayed by a fresh consumer group) are ignored.
The clock is explicit: :meth:`observe` and :meth:`check` take ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auto_responder.model import Condition, EventType, Severity
from mlops_platform.contracts import Topic

INFRA_DEPENDENCIES = frozenset({"kafka", "schema_registry", "mlflow"})


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
        start = now or datetime.now(UTC)
        for name in sorted(self.watched or ()):
            # Expected services count as seen at start: silent from the start is an outage too.
            self.services[name] = _Service(name, registered_at=start)

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
        service.instances[instance_id] = _Instance(at, status, lag)
        service.last_envelope = envelope
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

    def check(self, now: datetime) -> list[Condition]:
        """Services that went silent (called periodically)."""
        conditions: list[Condition] = []
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
        if not service.overloaded or lag > self.calm_lag or len(live) <= self.min_instances:
            service.calm_since = None
            if len(live) <= self.min_instances:
                service.overloaded = False  # back at the minimum: nothing left to undo
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
