"""When to publish: an event on a state change, never one per window forever.

:class:`AlertStateMachine` receives one observation per evaluated window (its level and
severity, with the window's event time) and answers whether an event is due:

* **enter** — the level rises (stable → watch, watch → drift, stable → drift): at once;
* **escalate** — same level, higher severity (e.g. drift MEDIUM → HIGH): at once;
* **repeat** — the state persists: at most once per ``repeat_interval_ms``;
* **lower** / **recover** — the level falls (drift → watch, or back to stable): only
  after ``clear_windows`` consecutive calmer windows (hysteresis, so a feature hovering
  at a threshold does not flap); ``recover`` is published when ``publish_recovery``.

Time is event time (the windows' end), so replaying a topic gives the same events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from drift_detector.severity import Level, severity_rank

Reason = Literal["enter", "escalate", "repeat", "lower", "recover"]


@dataclass(frozen=True)
class Decision:
    reason: Reason
    level: Level
    severity: str | None


@dataclass
class AlertStateMachine:
    repeat_interval_ms: int
    clear_windows: int = 2
    publish_recovery: bool = True
    level: Level = Level.STABLE
    severity: str | None = None
    last_published_ms: int | None = None
    calmer_streak: int = 0
    transitions: list[tuple[int, str, str]] = field(default_factory=list)

    def observe(self, level: Level, severity: str | None, now_ms: int) -> Decision | None:
        """Feed one window; returns the event to publish, if any."""
        if level > self.level:
            return self._publish("enter", level, severity, now_ms)
        if level == self.level:
            self.calmer_streak = 0
            if level is Level.STABLE:
                return None
            if severity_rank(severity) > severity_rank(self.severity):
                return self._publish("escalate", level, severity, now_ms)
            if self.last_published_ms is None or now_ms - self.last_published_ms >= self.repeat_interval_ms:
                return self._publish("repeat", level, severity, now_ms)
            return None
        # Calmer than the current state: lower only after enough consecutive windows.
        self.calmer_streak += 1
        if self.calmer_streak < self.clear_windows:
            return None
        if level is Level.STABLE:
            decision = self._publish("recover", level, None, now_ms)
            return decision if self.publish_recovery else None
        return self._publish("lower", level, severity, now_ms)

    def to_state(self) -> dict[str, Any]:
        """Level, severity, hysteresis and transitions as plain data (the policy is the settings')."""
        return {
            "level": int(self.level),
            "severity": self.severity,
            "last_published_ms": self.last_published_ms,
            "calmer_streak": self.calmer_streak,
            "transitions": [list(t) for t in self.transitions],
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the state by a :meth:`to_state` document."""
        self.level = Level(int(state["level"]))
        self.severity = state["severity"]
        self.last_published_ms = state["last_published_ms"]
        self.calmer_streak = int(state["calmer_streak"])
        self.transitions = [(int(at), str(old), str(new)) for at, old, new in state["transitions"]]

    def reset(self) -> None:
        """Forget the state (a new reference makes old windows incomparable)."""
        self.level, self.severity, self.calmer_streak = Level.STABLE, None, 0
        self.last_published_ms = None

    def _publish(self, reason: Reason, level: Level, severity: str | None, now_ms: int) -> Decision:
        if level != self.level:
            self.transitions.append((now_ms, self.level.label, level.label))
            del self.transitions[:-50]
        self.level, self.severity, self.calmer_streak = level, severity, 0
        self.last_published_ms = now_ms
        return Decision(reason, level, severity)


@dataclass
class DegradationState:
    """Per model version: publish on entering degradation, escalation, or at the repeat rate."""

    repeat_interval_ms: int
    severity: str | None = None
    last_published_ms: int | None = None

    def to_state(self) -> dict[str, Any]:
        return {"severity": self.severity, "last_published_ms": self.last_published_ms}

    def from_state(self, state: dict[str, Any]) -> None:
        self.severity, self.last_published_ms = state["severity"], state["last_published_ms"]

    def observe(self, severity: str | None, now_ms: int) -> Literal["enter", "escalate", "repeat"] | None:
        if severity is None:
            self.severity = None  # recovered: the next drop is a new episode
            return None
        if self.severity is None:
            reason: Literal["enter", "escalate", "repeat"] = "enter"
        elif severity_rank(severity) > severity_rank(self.severity):
            reason = "escalate"
        elif self.last_published_ms is not None and now_ms - self.last_published_ms < self.repeat_interval_ms:
            return None
        else:
            reason = "repeat"
        self.severity, self.last_published_ms = severity, now_ms
        return reason
