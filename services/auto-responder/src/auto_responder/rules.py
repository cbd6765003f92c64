"""The rule table as data: loading, validation, severity re-assessment and rule matching.

Nothing here does I/O beyond reading the YAML file; everything else is pure and is
exercised by the unit tests with tables written inline.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from auto_responder.model import Action, EventType, Severity


class RuleError(ValueError):
    """The rule table is malformed (the message says where)."""


Matcher = str | list[str]


def _matches(pattern: Matcher, value: str | None) -> bool:
    """A value, a glob or a list of them; ``!glob`` excludes (a missing fact is not excluded)."""
    patterns = [str(p) for p in (pattern if isinstance(pattern, list) else [pattern])]
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    wanted = [p for p in patterns if not p.startswith("!")]
    if value is not None and any(fnmatch.fnmatchcase(value, p) for p in excluded):
        return False
    if not wanted:
        return True
    if value is None:
        return False
    return any(fnmatch.fnmatchcase(value, p) for p in wanted)


@dataclass(frozen=True)
class Rule:
    """One row of the table: an event type (plus facts to match) -> action per severity."""

    id: str
    event_type: str
    actions: Mapping[Severity, Action]
    match: Mapping[str, Matcher] = field(default_factory=dict)
    notify: bool = False
    description: str = ""
    #: Action taken instead when the rule's action is impossible (its precondition fails,
    #: e.g. no ``@previous_champion`` to roll back to); ``None``: the action fails.
    fallback: Action | None = None

    def applies(self, event_type: str, facts: Mapping[str, str]) -> bool:
        if event_type != self.event_type:
            return False
        return all(_matches(pattern, facts.get(key)) for key, pattern in self.match.items())

    def action_for(self, severity: Severity) -> Action:
        return self.actions[severity]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "match": dict(self.match),
            "actions": {s.name: a.value for s, a in sorted(self.actions.items())},
            "notify": self.notify,
            "fallback": self.fallback.value if self.fallback is not None else None,
            "description": self.description,
        }


@dataclass(frozen=True)
class AlertCondition:
    """A Prometheus alert (by name and labels) that is a condition of ``event_type``."""

    alertname: str
    event_type: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def applies(self, alertname: str, labels: Mapping[str, str]) -> bool:
        if not fnmatch.fnmatchcase(alertname, self.alertname):
            return False
        return all(_matches(pattern, labels.get(key)) for key, pattern in self.labels.items())


@dataclass(frozen=True)
class RuleSet:
    """The loaded rule table."""

    rules: tuple[Rule, ...]
    #: event type -> [(level, {fact: threshold})], most severe first.
    severity: Mapping[str, tuple[tuple[Severity, Mapping[str, float]], ...]]
    alert_conditions: tuple[AlertCondition, ...] = ()
    source: str = ""

    def match(self, event_type: str, facts: Mapping[str, str]) -> Rule | None:
        """The first rule for ``event_type`` whose ``match`` fits ``facts``."""
        for rule in self.rules:
            if rule.applies(event_type, facts):
                return rule
        return None

    def reassess(self, event_type: str, reported: Severity, measures: Mapping[str, Any]) -> Severity:
        """Severity after re-assessment from the payload; never below ``reported``.

        A level applies when any of its thresholds is exceeded (strictly). A list-valued
        measure counts its items (e.g. ``affected_features``).
        """
        for level, thresholds in self.severity.get(event_type, ()):
            for name, threshold in thresholds.items():
                value = _measure(measures.get(name))
                if value is not None and value > threshold:
                    return max(level, reported)
        return reported

    def alert_event_type(self, alertname: str, labels: Mapping[str, str]) -> str | None:
        for condition in self.alert_conditions:
            if condition.applies(alertname, labels):
                return condition.event_type
        return None

    def public(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rules": [rule.public() for rule in self.rules],
            "severity": {
                event_type: {level.name: dict(thresholds) for level, thresholds in levels}
                for event_type, levels in self.severity.items()
            },
            "alert_conditions": [
                {"alertname": c.alertname, "event_type": c.event_type, "labels": dict(c.labels)}
                for c in self.alert_conditions
            ],
        }


def _measure(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple | set | frozenset):
        return float(len(value))
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


KNOWN_EVENT_TYPES = frozenset(e.value for e in EventType)


def _actions(raw: Any, where: str) -> dict[Severity, Action]:
    if not isinstance(raw, Mapping) or not raw:
        raise RuleError(f"{where}: 'actions' must map severities (or '*') to actions")
    actions: dict[Severity, Action] = {}
    default: Action | None = None
    for key, value in raw.items():
        try:
            action = Action(str(value))
        except ValueError as exc:
            known = [a.value for a in Action]
            raise RuleError(f"{where}: unknown action {value!r} (known: {known})") from exc
        if str(key) == "*":
            default = action
            continue
        try:
            actions[Severity[str(key).upper()]] = action
        except KeyError as exc:
            raise RuleError(f"{where}: unknown severity {key!r}") from exc
    for severity in Severity:
        if severity not in actions:
            if default is None:
                raise RuleError(f"{where}: no action for severity {severity.name} (add it or '*')")
            actions[severity] = default
    return actions


def _matcher(value: Any, where: str) -> Matcher:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str | int | float | bool):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise RuleError(f"{where}: match values are strings or lists of strings")


def parse_rules(raw: Mapping[str, Any], source: str = "<inline>") -> RuleSet:
    """Validate a parsed rule table."""
    if not isinstance(raw, Mapping):
        raise RuleError(f"{source}: the rule table must be a mapping")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw.get("rules") or []):
        where = f"{source}: rules[{index}]"
        if not isinstance(entry, Mapping):
            raise RuleError(f"{where}: must be a mapping")
        rule_id = str(entry.get("id") or "")
        if not rule_id:
            raise RuleError(f"{where}: missing 'id'")
        if rule_id in seen:
            raise RuleError(f"{where}: duplicate id {rule_id!r}")
        seen.add(rule_id)
        event_type = str(entry.get("event_type") or "")
        if event_type not in KNOWN_EVENT_TYPES:
            known_types = sorted(KNOWN_EVENT_TYPES)
            raise RuleError(f"{where}: unknown event_type {event_type!r} (known: {known_types})")
        match = entry.get("match") or {}
        if not isinstance(match, Mapping):
            raise RuleError(f"{where}: 'match' must be a mapping")
        fallback: Action | None = None
        if entry.get("fallback") is not None:
            try:
                fallback = Action(str(entry["fallback"]))
            except ValueError as exc:
                known = [a.value for a in Action]
                raise RuleError(f"{where}: unknown fallback {entry['fallback']!r} (known: {known})") from exc
        rules.append(
            Rule(
                id=rule_id,
                event_type=event_type,
                actions=_actions(entry.get("actions"), where),
                match={str(k): _matcher(v, where) for k, v in match.items()},
                notify=bool(entry.get("notify", False)),
                fallback=fallback,
                description=" ".join(str(entry.get("description") or "").split()),
            )
        )
    if not rules:
        raise RuleError(f"{source}: no rules")

    severity: dict[str, tuple[tuple[Severity, Mapping[str, float]], ...]] = {}
    for event_type, levels in (raw.get("severity") or {}).items():
        where = f"{source}: severity.{event_type}"
        if str(event_type) not in KNOWN_EVENT_TYPES:
            raise RuleError(f"{where}: unknown event type")
        if not isinstance(levels, Mapping):
            raise RuleError(f"{where}: must map levels to thresholds")
        parsed: list[tuple[Severity, Mapping[str, float]]] = []
        for level, thresholds in levels.items():
            try:
                severity_level = Severity[str(level).upper()]
            except KeyError as exc:
                raise RuleError(f"{where}: unknown level {level!r}") from exc
            if not isinstance(thresholds, Mapping) or not thresholds:
                raise RuleError(f"{where}.{level}: thresholds must be a non-empty mapping")
            try:
                parsed.append((severity_level, {str(k): float(v) for k, v in thresholds.items()}))
            except (TypeError, ValueError) as exc:
                raise RuleError(f"{where}.{level}: thresholds must be numbers") from exc
        severity[str(event_type)] = tuple(sorted(parsed, key=lambda item: item[0], reverse=True))

    alert_conditions: list[AlertCondition] = []
    for index, entry in enumerate(raw.get("alert_conditions") or []):
        where = f"{source}: alert_conditions[{index}]"
        if not isinstance(entry, Mapping) or "alertname" not in entry or "event_type" not in entry:
            raise RuleError(f"{where}: needs 'alertname' and 'event_type'")
        if str(entry["event_type"]) not in KNOWN_EVENT_TYPES:
            raise RuleError(f"{where}: unknown event_type {entry['event_type']!r}")
        alert_conditions.append(
            AlertCondition(
                alertname=str(entry["alertname"]),
                event_type=str(entry["event_type"]),
                labels={str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
            )
        )
    return RuleSet(
        rules=tuple(rules), severity=severity, alert_conditions=tuple(alert_conditions), source=source
    )


def default_rules_path() -> Path:
    return Path(str(resources.files("auto_responder").joinpath("rules.yaml")))


def load_rules(path: Path | None = None) -> RuleSet:
    """Load the rule table from ``path`` (default: the one shipped in the package)."""
    target = path or default_rules_path()
    try:
        raw = yaml.safe_load(target.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"cannot read the rule table {target}: {exc}") from exc
    return parse_rules(raw, str(target))
