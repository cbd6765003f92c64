"""PromQL helpers shared by the deploy-file tests: the queries of every dashboard and rule,
the metric names they use, and the rewrite that lets an alert's expression be evaluated
without its threshold.

PromQL is tokenised just enough for these purposes (strings, label matchers, ranges and
grouping clauses are recognised); it is not a parser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"

# Grafana's built-in variables, replaced by what they stand for over a short time range.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}

KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}
# Series Prometheus itself creates for every target or rule.
BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
METRIC_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
# Series other programs export: the node exporter (node_*, host figures) and cAdvisor
# (container_*), and the process collector prometheus-client registers in every service.
EXPORTER_PREFIXES = ("node_", "container_")
PROCESS_COLLECTOR_SERIES = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from."""

    origin: str  # "dashboard overview.json / Services up / A" or "rule alerts.yml / ServiceDown"
    expr: str
    kind: str  # "panel", "record" or "alert"


def dashboard_queries() -> list[Query]:
    queries: list[Query] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                origin = f"dashboard {path.name} / {panel.get('title')} / {target.get('refId')}"
                queries.append(Query(origin, substitute_grafana_variables(target.get("expr", "")), "panel"))
    return queries


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))  # collapsed rows keep their panels inside
    return out


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def rules() -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend((path, rule) for rule in group["rules"])
    return out


def rule_queries() -> list[Query]:
    queries = []
    for path, rule in rules():
        if "record" in rule:
            queries.append(Query(f"rule {path.name} / {rule['record']}", rule["expr"], "record"))
        else:
            queries.append(Query(f"rule {path.name} / {rule['alert']}", rule["expr"], "alert"))
    return queries


def recorded_names() -> set[str]:
    return {rule["record"] for _path, rule in rules() if "record" in rule}


def substitute_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _strip(expr: str) -> str:
    """The expression without strings, label matchers, ranges and grouping label lists."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)
    expr = re.sub(r"\b(group_left|group_right)\b", " ", expr)
    return expr


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (functions and keywords excluded)."""
    stripped = _strip(expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", stripped):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def candidate_definitions(name: str) -> list[str]:
    """Names under which a client library may define the series ``name``."""
    candidates = [name]
    for suffix in METRIC_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            candidates.append(base)
            if suffix in ("_bucket", "_count", "_sum", "_created") and base.endswith("_total"):
                candidates.append(base[: -len("_total")])
    return candidates


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")


def without_thresholds(expr: str) -> str:
    """Turn every comparison into its ``bool`` form, so filtering becomes 0/1 values.

    ``x > 0.2`` keeps only the series above 0.2 (nothing when all is well); ``x > bool 0.2``
    keeps every series of ``x``. Label matchers (``{a!="b"}``) and strings are untouched.
    """
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            end = i + 1
            while end < len(expr) and expr[end] != char:
                end += 2 if expr[end] == "\\" else 1
            out.append(expr[i : end + 1])
            i = end + 1
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if depth == 0:
            match = _COMPARISON.match(expr, i)
            if match and not expr[i:].startswith("=~") and not expr[i:].startswith("!~"):
                operator = match.group(1)
                rest = expr[match.end() :]
                out.append(operator if rest.lstrip().startswith("bool") else f"{operator} bool")
                i = match.end()
                continue
        out.append(char)
        i += 1
    return "".join(out)


def source_texts() -> str:
    """Every service's source, the shared metrics module and the local registry's metrics."""
    paths = [
        *sorted((ROOT / "services").glob("*/src/**/*.py")),
        ROOT / "libs" / "platform" / "src" / "mlops_platform" / "metrics.py",
        *sorted((ROOT / "deploy" / "schema-registry" / "src").glob("**/metrics.py")),
    ]
    return "\n".join(path.read_text() for path in paths if path.exists())


def external(name: str) -> bool:
    """A series an exporter or the client library's process collector provides, not our code."""
    return name.startswith(EXPORTER_PREFIXES) or name in PROCESS_COLLECTOR_SERIES


def defined(name: str, sources: str) -> bool:
    """``name`` (or its base name without a type suffix) appears as a string literal."""
    return any(
        f'"{candidate}"' in sources or f"'{candidate}'" in sources
        for candidate in candidate_definitions(name)
    )
