"""Routing rules: which channels hear about an alert, its cooldown and escalation policy.

Rules are data (``routes.yaml``), evaluated in order like Alertmanager's routes: the
first matching route decides unless it says ``continue: true``, in which case later
matching routes add their channels too. A route with no ``match`` matches everything
(use it last, as the default). Example::

    defaults: {cooldown: 10m, notify_resolved: true}
    routes:
      - name: critical
        match: {min_severity: CRITICAL}
        channels: [slack, webhook, email]
        escalation: oncall
      - name: default
        channels: [webhook]
    escalations:
      oncall:
        - {after: 15m, channels: [slack, email]}
        - {after: 45m, channels: [email, webhook]}

``match`` keys: ``severity`` (list), ``min_severity``, ``source`` (list of globs),
``labels`` (label -> glob). All given keys must match.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from alerter.models import AlertEvent, Severity

CHANNEL_NAMES = ("webhook", "slack", "email")
DEFAULT_ROUTES_RESOURCE = "routes.yaml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class RoutingConfigError(ValueError):
    """The routing file is invalid; the message says where."""


def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise RoutingConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found:
            raise RoutingConfigError(f"{where}: cannot read duration {value!r} (e.g. 30s, 15m, 2h)")
        seconds = float(found.group(1)) * _UNIT_S[found.group(2) or "s"]
    if seconds < 0:
        raise RoutingConfigError(f"{where}: duration must not be negative")
    return seconds


@dataclass(frozen=True)
class Match:
    """Conditions of a route; all present conditions must hold."""

    severities: frozenset[Severity] | None = None
    min_severity: Severity | None = None
    sources: tuple[str, ...] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, alert: AlertEvent, severity: Severity | None = None) -> bool:
        sev = alert.severity if severity is None else severity
        if self.severities is not None and sev not in self.severities:
            return False
        if self.min_severity is not None and sev < self.min_severity:
            return False
        if self.sources is not None and not any(fnmatch.fnmatchcase(alert.source, p) for p in self.sources):
            return False
        for name, pattern in self.labels.items():
            value = alert.labels.get(name)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True


@dataclass(frozen=True)
class Route:
    name: str
    match: Match
    channels: tuple[str, ...]
    escalation: str | None = None
    cooldown_s: float | None = None
    notify_resolved: bool | None = None
    continue_matching: bool = False


@dataclass(frozen=True)
class EscalationLevel:
    after_s: float
    channels: tuple[str, ...]


@dataclass(frozen=True)
class EscalationPolicy:
    name: str
    levels: tuple[EscalationLevel, ...]


@dataclass(frozen=True)
class RouteDecision:
    """The outcome of routing one alert."""

    routes: tuple[str, ...]
    channels: tuple[str, ...]
    cooldown_s: float
    notify_resolved: bool
    escalation: EscalationPolicy | None


@dataclass(frozen=True)
class RoutingConfig:
    routes: tuple[Route, ...]
    escalations: Mapping[str, EscalationPolicy]
    default_cooldown_s: float = 600.0
    notify_resolved: bool = True
    source: str = "<inline>"

    def resolve(self, alert: AlertEvent, severity: Severity | None = None) -> RouteDecision:
        """Route ``alert`` (optionally as if it had ``severity``)."""
        names: list[str] = []
        channels: list[str] = []
        cooldown: float | None = None
        notify_resolved: bool | None = None
        escalation: EscalationPolicy | None = None
        for route in self.routes:
            if not route.match.matches(alert, severity):
                continue
            names.append(route.name)
            channels.extend(c for c in route.channels if c not in channels)
            if cooldown is None and route.cooldown_s is not None:
                cooldown = route.cooldown_s
            if notify_resolved is None and route.notify_resolved is not None:
                notify_resolved = route.notify_resolved
            if escalation is None and route.escalation is not None:
                escalation = self.escalations[route.escalation]
            if not route.continue_matching:
                break
        return RouteDecision(
            routes=tuple(names),
            channels=tuple(channels),
            cooldown_s=self.default_cooldown_s if cooldown is None else cooldown,
            notify_resolved=self.notify_resolved if notify_resolved is None else notify_resolved,
            escalation=escalation,
        )

    def channels_used(self) -> set[str]:
        used = {c for route in self.routes for c in route.channels}
        used.update(
            c for policy in self.escalations.values() for level in policy.levels for c in level.channels
        )
        return used

    def describe(self) -> dict[str, Any]:
        """A JSON view of the rules (for ``GET /routing``)."""
        return {
            "source": self.source,
            "defaults": {"cooldown_s": self.default_cooldown_s, "notify_resolved": self.notify_resolved},
            "routes": [
                {
                    "name": r.name,
                    "match": {
                        "severity": sorted(s.name for s in r.match.severities)
                        if r.match.severities
                        else None,
                        "min_severity": r.match.min_severity.name
                        if r.match.min_severity is not None
                        else None,
                        "source": list(r.match.sources) if r.match.sources is not None else None,
                        "labels": dict(r.match.labels),
                    },
                    "channels": list(r.channels),
                    "escalation": r.escalation,
                    "cooldown_s": r.cooldown_s,
                    "notify_resolved": r.notify_resolved,
                    "continue": r.continue_matching,
                }
                for r in self.routes
            ],
            "escalations": {
                name: [{"after_s": lvl.after_s, "channels": list(lvl.channels)} for lvl in policy.levels]
                for name, policy in self.escalations.items()
            },
        }

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingConfig:
        """Load the given file, or the ``routes.yaml`` shipped with the package."""
        if path is None:
            text = resources.files("alerter").joinpath(DEFAULT_ROUTES_RESOURCE).read_text()
            where = f"alerter/{DEFAULT_ROUTES_RESOURCE}"
        else:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise RoutingConfigError(f"cannot read routing file {path}: {exc}") from exc
            where = str(path)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise RoutingConfigError(f"{where}: invalid YAML: {exc}") from exc
        return cls.from_dict(data, source=where)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<inline>") -> RoutingConfig:
        if not isinstance(data, Mapping):
            raise RoutingConfigError(f"{source}: expected a mapping at the top level")
        _only(data, {"defaults", "routes", "escalations"}, source)
        defaults = data.get("defaults") or {}
        _only(defaults, {"cooldown", "notify_resolved"}, f"{source}: defaults")
        escalations = {
            str(name): _policy(str(name), levels, f"{source}: escalations.{name}")
            for name, levels in (data.get("escalations") or {}).items()
        }
        raw_routes = data.get("routes") or []
        if not isinstance(raw_routes, Sequence) or isinstance(raw_routes, str):
            raise RoutingConfigError(f"{source}: routes must be a list")
        routes = tuple(
            _route(i, raw, escalations, f"{source}: routes[{i}]") for i, raw in enumerate(raw_routes)
        )
        names = [r.name for r in routes]
        if len(names) != len(set(names)):
            raise RoutingConfigError(f"{source}: route names must be unique")
        return cls(
            routes=routes,
            escalations=escalations,
            default_cooldown_s=parse_duration(defaults.get("cooldown", 600), f"{source}: defaults.cooldown"),
            notify_resolved=bool(defaults.get("notify_resolved", True)),
            source=source,
        )


def _only(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise RoutingConfigError(f"{where}: expected a mapping")
    unknown = set(data) - allowed
    if unknown:
        raise RoutingConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _channels(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence):
        raise RoutingConfigError(f"{where}: channels must be a list")
    channels = tuple(str(c) for c in value)
    unknown = [c for c in channels if c not in CHANNEL_NAMES]
    if unknown:
        raise RoutingConfigError(f"{where}: unknown channels {unknown} (known: {list(CHANNEL_NAMES)})")
    return channels


def _severity(value: Any, where: str) -> Severity:
    text = str(value).strip().upper()
    if text not in Severity.__members__:
        raise RoutingConfigError(f"{where}: unknown severity {value!r} (known: {list(Severity.__members__)})")
    return Severity[text]


def _match(raw: Any, where: str) -> Match:
    if raw is None:
        return Match()
    _only(raw, {"severity", "min_severity", "source", "labels"}, where)
    severities = raw.get("severity")
    if isinstance(severities, str):
        severities = [severities]
    sources = raw.get("source")
    if isinstance(sources, str):
        sources = [sources]
    labels = raw.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise RoutingConfigError(f"{where}.labels: expected a mapping")
    return Match(
        severities=(
            frozenset(_severity(s, f"{where}.severity") for s in severities)
            if severities is not None
            else None
        ),
        min_severity=_severity(raw["min_severity"], f"{where}.min_severity")
        if "min_severity" in raw
        else None,
        sources=tuple(str(s) for s in sources) if sources is not None else None,
        labels={str(k): str(v) for k, v in labels.items()},
    )


def _route(index: int, raw: Any, escalations: Mapping[str, EscalationPolicy], where: str) -> Route:
    _only(raw, {"name", "match", "channels", "escalation", "cooldown", "notify_resolved", "continue"}, where)
    escalation = raw.get("escalation")
    if escalation is not None and str(escalation) not in escalations:
        raise RoutingConfigError(f"{where}: unknown escalation policy {escalation!r}")
    return Route(
        name=str(raw.get("name") or f"route-{index}"),
        match=_match(raw.get("match"), f"{where}.match"),
        channels=_channels(raw.get("channels") or [], f"{where}.channels"),
        escalation=None if escalation is None else str(escalation),
        cooldown_s=parse_duration(raw["cooldown"], f"{where}.cooldown") if "cooldown" in raw else None,
        notify_resolved=bool(raw["notify_resolved"]) if "notify_resolved" in raw else None,
        continue_matching=bool(raw.get("continue", False)),
    )


def _policy(name: str, raw: Any, where: str) -> EscalationPolicy:
    if isinstance(raw, Mapping):  # {levels: [...]} is accepted as well as a bare list
        _only(raw, {"levels"}, where)
        raw = raw.get("levels") or []
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise RoutingConfigError(f"{where}: expected a non-empty list of levels")
    levels: list[EscalationLevel] = []
    for i, level in enumerate(raw):
        _only(level, {"after", "channels"}, f"{where}[{i}]")
        if "after" not in level:
            raise RoutingConfigError(f"{where}[{i}]: 'after' is required")
        levels.append(
            EscalationLevel(
                after_s=parse_duration(level["after"], f"{where}[{i}].after"),
                channels=_channels(level.get("channels") or [], f"{where}[{i}].channels"),
            )
        )
    afters = [lvl.after_s for lvl in levels]
    if afters != sorted(afters) or len(set(afters)) != len(afters):
        raise RoutingConfigError(f"{where}: levels must have strictly increasing 'after'")
    return EscalationPolicy(name=name, levels=tuple(levels))
