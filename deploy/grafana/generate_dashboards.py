#!/usr/bin/env python3
"""Builds the Grafana dashboards of deploy/grafana/dashboards/ from one description.

    python deploy/grafana/generate_dashboards.py           rewrite the JSON files
    python deploy/grafana/generate_dashboards.py --check   exit 1 when a file is out of date

The JSON files are what Grafana provisions (and what a unit test validates); this script
keeps the dashboards consistent: one datasource, one grid, the same legend and unit
conventions. Every query uses metrics the services export (``mlops_*`` from the platform
library, ``fds_*``, ``drift_*``, ``responder_*``, ``recommender_*``, ``alerter_*``,
``ingest_*``) or recording rules of deploy/prometheus/rules/recording.yml.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
TAGS = ["mlops"]
RATE = "$__rate_interval"
RANGE = "$__range"

DOWN_UP_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]


@dataclass(frozen=True)
class Q:
    """One query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    format: str = "time_series"


def steps(*pairs: tuple[float | None, str]) -> dict[str, Any]:
    """Absolute thresholds: ``steps((None, "green"), (0.2, "red"))``."""
    return {"mode": "absolute", "steps": [{"value": value, "color": color} for value, color in pairs]}


@dataclass
class Panel:
    kind: str
    title: str
    queries: list[Q]
    width: int = 8
    height: int = 8
    unit: str = "short"
    description: str = ""
    thresholds: dict[str, Any] | None = None
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    stack: bool = False
    mappings: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit, "mappings": self.mappings}
        if self.thresholds is not None:
            defaults["thresholds"] = self.thresholds
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 25 if self.stack else 8,
                "showPoints": "never",
                "spanNulls": True,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
            }
        targets = []
        for index, query in enumerate(self.queries):
            targets.append(
                {
                    "refId": chr(ord("A") + index),
                    "datasource": DATASOURCE,
                    "expr": query.expr,
                    "legendFormat": query.legend or "__auto",
                    "range": not query.instant,
                    "instant": query.instant,
                    "format": query.format,
                }
            )
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {**_default_options(self.kind), **self.options},
        }


def _default_options(kind: str) -> dict[str, Any]:
    reduce = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    if kind == "timeseries":
        return {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "stat":
        return {**reduce, "colorMode": "background", "graphMode": "area", "textMode": "value_and_name"}
    if kind == "gauge":
        return {**reduce, "showThresholdMarkers": True}
    if kind == "bargauge":
        return {**reduce, "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}
    if kind == "piechart":
        return {
            **reduce,
            "pieType": "donut",
            "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]},
        }
    if kind == "heatmap":
        return {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "yAxis": {"unit": "s"},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
        }
    if kind == "state-timeline":
        return {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm"}
    return {}


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[tuple[str, list[Panel]]] = field(default_factory=list)

    def row(self, title: str, *panels: Panel) -> Dashboard:
        self.rows.append((title, list(panels)))
        return self

    def to_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        next_id, y = 1, 0
        for title, row_panels in self.rows:
            panels.append(
                {
                    "id": next_id,
                    "type": "row",
                    "title": title,
                    "collapsed": False,
                    "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                    "panels": [],
                }
            )
            next_id, y, x, row_height = next_id + 1, y + 1, 0, 0
            for panel in row_panels:
                if x + panel.width > 24:
                    x, y, row_height = 0, y + row_height, 0
                panels.append(panel.to_json(next_id, x, y))
                next_id += 1
                x += panel.width
                row_height = max(row_height, panel.height)
            y += row_height
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": TAGS,
            "editable": False,
            "graphTooltip": 1,
            "timezone": "browser",
            "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"},
            "schemaVersion": 39,
            "version": 1,
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "templating": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "tags": TAGS,
                    "asDropdown": True,
                    "includeVars": False,
                    "keepTime": True,
                    "title": "MLOps dashboards",
                }
            ],
            "panels": panels,
        }


def timeseries(title: str, *queries: Q, **kw: Any) -> Panel:
    return Panel("timeseries", title, list(queries), **kw)


def stat(title: str, *queries: Q, **kw: Any) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 5)
    return Panel("stat", title, list(queries), **kw)


def quantiles(metric: str, by: str = "", unit: str = "s") -> list[Q]:
    """p50 / p95 / p99 of a histogram (``by`` adds grouping labels besides ``le``)."""
    group = f"le, {by}" if by else "le"
    suffix = "".join(f" {{{{{label.strip()}}}}}" for label in by.split(",")) if by else ""
    return [
        Q(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


# --------------------------------------------------------------------------- dashboards


def overview() -> Dashboard:
    return (
        Dashboard(
            "mlops-overview",
            "MLOps constellation — overview",
            "Is every service up and ready, are events flowing, is scoring within its objectives, "
            "what is firing.",
        )
        .row(
            "Health",
            stat(
                "Services up",
                Q('sum(up{tier="service"})', "up", instant=True),
                Q('count(up{tier="service"})', "expected", instant=True),
                description="Scrape targets of the six services that answer / that are expected.",
                options={"colorMode": "value"},
            ),
            stat(
                "Firing alerts",
                Q('count(ALERTS{alertstate="firing"}) or vector(0)', "firing", instant=True),
                thresholds=steps((None, "green"), (1, "red")),
            ),
            stat(
                "Readiness checks failing",
                Q("count(mlops_dependency_up == 0) or vector(0)", "failing", instant=True),
                thresholds=steps((None, "green"), (1, "red")),
                description="Dependencies and internal components (Kafka, registry, MLflow, model, "
                "consumer loop) whose last check failed, over all services.",
            ),
            stat(
                "Auto-responder success",
                Q("responder_action_success_ratio", "success", instant=True),
                unit="percentunit",
                thresholds=steps((None, "red"), (0.95, "green")),
                description="Succeeded / (succeeded + failed) automated actions over 24 h (target 95 %).",
            ),
            stat(
                "Scoring p99",
                Q("fds:latency_seconds:p99_5m", "p99"),
                unit="s",
                thresholds=steps((None, "green"), (0.2, "red")),
            ),
            stat(
                "Block rate",
                Q("fds:block_ratio:rate5m", "block"),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.05, "red")),
            ),
            Panel(
                "state-timeline",
                "Service scrape status",
                [Q('up{tier="service"}', "{{job}} {{instance}}")],
                width=12,
                mappings=DOWN_UP_MAPPING,
                thresholds=steps((None, "red"), (1, "green")),
            ),
            Panel(
                "state-timeline",
                "Heartbeats on system.health (seen by the auto-responder)",
                [Q("min by (service) (responder_service_up)", "{{service}}")],
                width=12,
                mappings=DOWN_UP_MAPPING,
                thresholds=steps((None, "red"), (1, "green")),
            ),
            Panel(
                "table",
                "Readiness checks",
                [Q("min by (service, dependency) (mlops_dependency_up)", instant=True, format="table")],
                width=12,
                mappings=DOWN_UP_MAPPING,
                description="1 = the check passed. Kafka and schema_registry for every service; MLflow, "
                "model and consumer checks where a service has them.",
            ),
            Panel(
                "table",
                "Running instances",
                [Q("mlops_service_info", instant=True, format="table")],
                width=12,
                description="One row per process: service, instance id (exported_instance) and version.",
            ),
        )
        .row(
            "Event flow",
            timeseries(
                "Events consumed / s by service",
                Q("service:mlops_events_consumed:rate5m", "{{service}}"),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "Events produced / s by topic",
                Q(f"sum by (topic) (rate(mlops_events_produced_total[{RATE}]))", "{{topic}}"),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "Consumer lag by service",
                Q("service_group:mlops_consumer_lag_messages:sum", "{{service}} ({{group}})"),
                unit="short",
            ),
        )
        .row(
            "Ingest",
            timeseries(
                "Ingest requests / s by endpoint and status",
                Q(
                    f"sum by (endpoint, status) (rate(ingest_requests_total[{RATE}]))",
                    "{{endpoint}} {{status}}",
                ),
                unit="reqps",
            ),
            timeseries(
                "Records published / s by type",
                Q(f"sum by (record_type) (rate(ingest_records_published_total[{RATE}]))", "{{record_type}}"),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "Ingest publish latency (until Kafka acknowledged)",
                *quantiles("ingest_publish_latency_seconds"),
                unit="s",
            ),
        )
    )


def fraud_scoring() -> Dashboard:
    per_arm = (
        f"sum by (model_version) (rate(fds_predictions_total[{RATE}]))"
        # One alias per version even while instances disagree during a swap.
        " * on (model_version) group_left (alias) topk by (model_version) (1, max by (model_version, alias) ("
        'label_replace(fds_model_info, "model_version", "$1", "version", "(.*)")))'
    )
    return (
        Dashboard(
            "mlops-fraud-scoring",
            "Fraud scoring (predictor)",
            "Requests, latency against the 200 ms p99 objective, risk levels, fraud probabilities, "
            "and the champion / challenger split.",
        )
        .row(
            "Objectives",
            stat("Scoring requests / s", Q("fds:requests:rate1m", "requests"), unit="reqps"),
            stat(
                "Latency p99",
                Q("fds:latency_seconds:p99_5m", "p99"),
                unit="s",
                thresholds=steps((None, "green"), (0.2, "red")),
            ),
            stat(
                "Error rate",
                Q("fds:error_ratio:rate5m", "errors"),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.01, "red")),
            ),
            stat(
                "Block rate",
                Q("fds:block_ratio:rate5m", "block"),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.05, "red")),
            ),
            stat(
                "Active requests",
                Q("sum(fds_active_requests)", "in flight"),
                description="Requests being scored right now, over all predictor instances.",
            ),
            stat(
                "Serving the last good model",
                Q("max(fds_model_stale)", "stale"),
                mappings=[
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "no", "color": "green", "index": 0},
                            "1": {"text": "YES", "color": "orange", "index": 1},
                        },
                    }
                ],
                description="YES while the last alias check failed (MLflow unreachable or a load failed).",
            ),
        )
        .row(
            "Requests and latency",
            timeseries(
                "Requests / s by status and model version",
                Q(
                    f"sum by (status, model_version) (rate(fds_requests_total[{RATE}]))",
                    "{{status}} v{{model_version}}",
                ),
                unit="reqps",
                stack=True,
            ),
            timeseries(
                "Latency p50 / p95 / p99",
                *quantiles("fds_latency_seconds"),
                unit="s",
                thresholds=steps((None, "green"), (0.2, "red")),
                description="From the request's event time to its score (stream), micro-batching included.",
            ),
            Panel(
                "heatmap",
                "Latency distribution",
                [
                    Q(
                        f"sum by (le) (increase(fds_latency_seconds_bucket[{RATE}]))",
                        "{{le}}",
                        format="heatmap",
                    )
                ],
                unit="s",
            ),
        )
        .row(
            "Risk and probabilities",
            Panel(
                "piechart",
                "Risk levels (time range)",
                [
                    Q(
                        f"sum by (risk_level) (increase(fds_predictions_total[{RANGE}]))",
                        "{{risk_level}}",
                        True,
                    )
                ],
                description="approve < 0.18 <= verify < 0.40 <= hold < 0.65 <= block",
            ),
            timeseries(
                "Decisions / s by risk level",
                Q(f"sum by (risk_level) (rate(fds_predictions_total[{RATE}]))", "{{risk_level}}"),
                unit="ops",
                stack=True,
            ),
            Panel(
                "bargauge",
                "Fraud probability histogram (time range)",
                [
                    Q(
                        f"sum by (le) (increase(fds_fraud_probability_bucket[{RANGE}]))",
                        "{{le}}",
                        instant=True,
                        format="heatmap",
                    )
                ],
                options={"orientation": "vertical", "displayMode": "gradient"},
                description="Predictions per probability bucket (upper bound); the risk thresholds "
                "0.18, 0.40 and 0.65 are bucket bounds.",
            ),
        )
        .row(
            "Model versions and A/B arms",
            timeseries(
                "Predictions / s by model version",
                Q(f"sum by (model_version) (rate(fds_predictions_total[{RATE}]))", "v{{model_version}}"),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "Predictions / s by alias (champion / challenger)",
                Q(per_arm, "{{alias}} v{{model_version}}"),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "A/B split",
                Q(
                    f"sum by (arm) (rate(fds_ab_assignments_total[{RATE}]))"
                    f" / scalar(sum(rate(fds_ab_assignments_total[{RATE}])))",
                    "{{arm}}",
                ),
                unit="percentunit",
                stack=True,
                min=0,
                max=1,
            ),
            timeseries(
                "Block rate by model version",
                Q("model_version:fds_block_ratio:rate5m", "v{{model_version}}"),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.05, "red")),
            ),
            Panel(
                "table",
                "Serving models",
                [Q("max by (alias, version) (fds_model_info)", instant=True, format="table")],
                description="The version each alias resolves to in the predictor.",
            ),
            timeseries(
                "Model load time",
                Q("max by (model_name) (fds_model_load_time_seconds)", "{{model_name}}"),
                unit="s",
            ),
        )
        .row(
            "Micro-batching",
            timeseries(
                "Batch size",
                *quantiles("fds_batch_size"),
                unit="short",
            ),
            timeseries("Scoring time per batch", *quantiles("fds_scoring_seconds"), unit="s"),
            timeseries(
                "Alias checks by outcome",
                Q(
                    f"sum by (trigger, outcome) (increase(fds_model_reloads_total[{RATE}]))",
                    "{{trigger}} {{outcome}}",
                ),
                unit="short",
            ),
        )
    )


def drift_quality() -> Dashboard:
    return (
        Dashboard(
            "mlops-drift-quality",
            "Drift and model quality",
            "PSI per feature against the serving model's reference (< 0.1 stable, 0.1-0.25 watch, "
            "> 0.25 drift), and live quality from delayed labels per model version and A/B arm.",
        )
        .row(
            "Drift",
            Panel(
                "bargauge",
                "PSI per feature (latest window)",
                [Q("max by (feature) (drift_feature_psi)", "{{feature}}", instant=True)],
                width=8,
                height=10,
                unit="none",
                decimals=3,
                min=0,
                max=0.5,
                thresholds=steps((None, "green"), (0.1, "yellow"), (0.25, "red")),
            ),
            timeseries(
                "PSI per feature",
                Q("max by (feature) (drift_feature_psi)", "{{feature}}"),
                width=10,
                height=10,
                unit="none",
                thresholds=steps((None, "green"), (0.1, "yellow"), (0.25, "red")),
            ),
            stat(
                "Drift state",
                Q("max by (drift_type) (drift_state)", "{{drift_type}}"),
                width=6,
                height=5,
                mappings=[
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "stable", "color": "green", "index": 0},
                            "1": {"text": "watch", "color": "yellow", "index": 1},
                            "2": {"text": "DRIFT", "color": "red", "index": 2},
                        },
                    }
                ],
            ),
            stat(
                "Drift score",
                Q("max by (drift_type) (drift_score)", "{{drift_type}}"),
                width=6,
                height=5,
                unit="percentunit",
                thresholds=steps((None, "green"), (0.3, "yellow"), (0.6, "red")),
            ),
            timeseries(
                "Windows evaluated / min",
                Q(
                    f"sum by (drift_type) (rate(drift_windows_processed_total[{RATE}])) * 60",
                    "{{drift_type}}",
                ),
                unit="short",
            ),
            timeseries(
                "Predictions taken into windows / s",
                Q(f"sum(rate(drift_predictions_total[{RATE}]))", "predictions"),
                Q("max(drift_window_size)", "window size"),
                unit="short",
            ),
            timeseries(
                "Drift events published (time range)",
                Q(
                    f"sum by (topic, severity) (increase(drift_events_published_total[{RANGE}]))"
                    " or sum by (topic) (increase(mlops_events_produced_total"
                    f'{{service="drift-detector"}}[{RANGE}]))',
                    "{{topic}} {{severity}}",
                ),
                unit="short",
                description="data.drift.detected, model.performance.degraded and model.evaluation.completed.",
            ),
        )
        .row(
            "Live quality (delayed labels)",
            timeseries(
                "Live AUC by version and arm",
                Q("max by (model_version, ab_arm) (drift_live_auc)", "v{{model_version}} {{ab_arm}}"),
                unit="none",
                min=0.5,
                max=1,
            ),
            timeseries(
                "Live recall by version and arm",
                Q("max by (model_version, ab_arm) (drift_live_recall)", "v{{model_version}} {{ab_arm}}"),
                unit="percentunit",
                min=0,
                max=1,
            ),
            timeseries(
                "Business cost (FN x 100 + FP x 1) by version and arm",
                Q(
                    'max by (model_version, ab_arm) (drift_live_metric{metric="business_cost"})',
                    "v{{model_version}} {{ab_arm}}",
                ),
                unit="short",
            ),
            timeseries(
                "Other live metrics",
                Q(
                    'max by (model_version, ab_arm, metric) (drift_live_metric{metric!="business_cost"})',
                    "{{metric}} v{{model_version}} {{ab_arm}}",
                ),
                unit="none",
            ),
            timeseries(
                "Quality drop against the training baseline",
                Q("max by (model_version, metric) (drift_performance_drop)", "{{metric}} v{{model_version}}"),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.1, "orange"), (0.15, "red")),
            ),
            timeseries(
                "Labelled samples in the live window",
                Q(
                    "max by (model_version, ab_arm) (drift_labelled_window_samples)",
                    "v{{model_version}} {{ab_arm}}",
                ),
                unit="short",
            ),
        )
        .row(
            "Labels and A/B evaluation",
            timeseries(
                "Labels / s and joins / s",
                Q(f"sum(rate(drift_labels_total[{RATE}]))", "labels consumed"),
                Q(f"sum(rate(drift_labelled_samples_total[{RATE}]))", "joined with a prediction"),
                Q(f"sum(rate(drift_labels_expired_total[{RATE}]))", "expired without label"),
                unit="ops",
            ),
            timeseries(
                "Waiting for the other side of the join",
                Q("sum(drift_pending_predictions)", "predictions waiting for a label"),
                Q("sum(drift_orphan_labels)", "labels waiting for a prediction"),
                unit="short",
            ),
            timeseries(
                "A/B p-value (champion vs challenger)",
                Q("max by (champion, challenger) (drift_ab_p_value)", "v{{champion}} vs v{{challenger}}"),
                unit="none",
                thresholds=steps((None, "green"), (0.05, "transparent")),
                description="Below 0.05 the difference is significant and the evaluation names a winner.",
            ),
            Panel(
                "table",
                "Reference data in use",
                [Q("max by (model_version) (drift_reference_info)", instant=True, format="table")],
                width=8,
            ),
            Panel(
                "bargauge",
                "Evidently reports by outcome (time range)",
                [Q(f"sum by (status) (increase(drift_reports_total[{RANGE}]))", "{{status}}", instant=True)],
                width=8,
                description="HTML drift reports (with tests), generated off the hot path.",
            ),
            timeseries(
                "Evidently report generation time",
                *quantiles("drift_report_generation_seconds"),
                width=8,
                unit="s",
            ),
        )
    )


def auto_responder() -> Dashboard:
    return (
        Dashboard(
            "mlops-auto-responder",
            "Auto-responder",
            "What the automation decided and did (system.actions), how often it succeeded "
            "(target 95 %), what it suppressed and why, and the heartbeats it watches.",
        )
        .row(
            "Actions",
            stat(
                "Success rate (24 h)",
                Q("responder_action_success_ratio", "success"),
                width=6,
                unit="percentunit",
                thresholds=steps((None, "red"), (0.95, "green")),
            ),
            stat(
                "Actions running",
                # The gauge has a series per action once one ran: 0 before, not "no data".
                Q("sum(responder_actions_in_progress) or vector(0)", "running"),
                width=6,
            ),
            stat(
                "Decision records replayed at start",
                Q("max(responder_history_replayed_records)", "replayed"),
                width=6,
            ),
            stat(
                "Decisions published (time range)",
                Q(
                    "sum(increase(mlops_events_produced_total"
                    f'{{service="auto-responder", topic="system.actions"}}[{RANGE}])) or vector(0)',
                    "system.actions",
                ),
                width=6,
            ),
            Panel(
                "bargauge",
                "Actions by type and status (time range)",
                [
                    Q(
                        f"sum by (action, status) (increase(responder_actions_total[{RANGE}]))",
                        "{{action}} {{status}}",
                        instant=True,
                    )
                ],
                width=12,
                height=10,
            ),
            timeseries(
                "Actions over time",
                Q(
                    f"sum by (action, status) (increase(responder_actions_total[{RATE}]))",
                    "{{action}} {{status}}",
                ),
                width=12,
                height=10,
                unit="short",
                stack=True,
            ),
            timeseries(
                "Suppressed decisions by reason",
                Q(
                    f"sum by (action, reason) (increase(responder_suppressed_total[{RATE}]))",
                    "{{action}}: {{reason}}",
                ),
                unit="short",
                stack=True,
            ),
            timeseries(
                "Action duration p95 by action",
                Q(
                    "histogram_quantile(0.95, sum by (le, action) "
                    f"(rate(responder_action_duration_seconds_bucket[{RATE}])))",
                    "{{action}}",
                ),
                unit="s",
            ),
            timeseries(
                "Trigger events by topic and result",
                Q(
                    f"sum by (topic, result) (rate(responder_trigger_events_total[{RATE}]))",
                    "{{topic}} {{result}}",
                ),
                unit="ops",
            ),
        )
        .row(
            "Watched services (system.health heartbeats)",
            Panel(
                "state-timeline",
                "Beating healthy",
                [Q("min by (service) (responder_service_up)", "{{service}}")],
                width=12,
                mappings=DOWN_UP_MAPPING,
                thresholds=steps((None, "red"), (1, "green")),
            ),
            timeseries(
                "Seconds since the last heartbeat",
                Q("max by (service) (responder_service_heartbeat_age_seconds)", "{{service}}"),
                width=6,
                unit="s",
            ),
            timeseries(
                "Live instances",
                Q("max by (service) (responder_service_live_instances)", "{{service}}"),
                width=6,
                unit="short",
            ),
        )
    )


def recommender() -> Dashboard:
    return (
        Dashboard(
            "mlops-recommender",
            "Recommender",
            "Interactions and clicks processed by the Faust app, how fast refreshed top-k lists "
            "are published, and click-through per strategy.",
        )
        .row(
            "Stream processing",
            timeseries(
                "Events processed / s by kind and outcome",
                Q(
                    f"sum by (kind, outcome) (rate(recommender_events_processed_total[{RATE}]))",
                    "{{kind}} {{outcome}}",
                ),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "Event to refreshed list latency",
                *quantiles("recommender_update_latency_seconds"),
                unit="s",
            ),
            timeseries("Top-k computation time", *quantiles("recommender_refresh_seconds"), unit="s"),
            timeseries(
                "Lists published / s by topic and trigger",
                Q(
                    f"sum by (topic, trigger) (rate(recommender_recommendations_published_total[{RATE}]))",
                    "{{topic}} {{trigger}}",
                ),
                unit="ops",
                stack=True,
            ),
            timeseries(
                "Lists served over HTTP / s",
                Q(
                    f"sum by (source, strategy) (rate(recommender_recommendations_served_total[{RATE}]))",
                    "{{source}} {{strategy}}",
                ),
                unit="reqps",
            ),
            timeseries(
                "State table keys",
                Q("sum by (table) (recommender_table_keys)", "{{table}}"),
                unit="short",
            ),
        )
        .row(
            "Strategies (A/B)",
            timeseries(
                "Click-through rate by strategy",
                Q("max by (strategy) (recommender_strategy_ctr)", "{{strategy}}"),
                unit="percentunit",
            ),
            timeseries(
                "Impressions and clicks by strategy",
                Q("sum by (strategy) (recommender_strategy_impressions)", "impressions {{strategy}}"),
                Q("sum by (strategy) (recommender_strategy_clicks)", "clicks {{strategy}}"),
                unit="short",
            ),
            timeseries(
                "Consumer lag and registry retries",
                Q('sum by (topic) (mlops_consumer_lag_messages{service="recommender"})', "lag {{topic}}"),
                Q(f"sum(increase(recommender_registry_retries_total[{RATE}]))", "registry retries"),
                unit="short",
            ),
        )
    )


def kafka_lag() -> Dashboard:
    return (
        Dashboard(
            "mlops-kafka-lag",
            "Kafka consumer lag and event processing",
            "Per service and consumer group: how far behind the log, how fast events are consumed "
            "and produced, how long a batch takes, what fails and is dead-lettered.",
        )
        .row(
            "Lag",
            timeseries(
                "Lag by service and consumer group",
                Q("service_group:mlops_consumer_lag_messages:sum", "{{service}} ({{group}})"),
                width=12,
                height=9,
                unit="short",
            ),
            Panel(
                "bargauge",
                "Lag now by service and topic",
                [
                    Q(
                        "sum by (service, topic) (mlops_consumer_lag_messages)",
                        "{{service}} {{topic}}",
                        instant=True,
                    )
                ],
                width=12,
                height=9,
                thresholds=steps((None, "green"), (1000, "orange"), (10000, "red")),
            ),
            Panel(
                "table",
                "Lag by partition",
                [
                    Q(
                        "sum by (service, group, topic, partition) (mlops_consumer_lag_messages)",
                        instant=True,
                        format="table",
                    )
                ],
                width=24,
            ),
        )
        .row(
            "Throughput",
            timeseries(
                "Consumed / s by service and topic",
                Q(
                    f"sum by (service, topic) (rate(mlops_events_consumed_total[{RATE}]))",
                    "{{service}} ← {{topic}}",
                ),
                unit="ops",
            ),
            timeseries(
                "Produced / s by service and topic",
                Q(
                    f"sum by (service, topic) (rate(mlops_events_produced_total[{RATE}]))",
                    "{{service}} → {{topic}}",
                ),
                unit="ops",
            ),
            timeseries(
                "Batch processing time p95 by service",
                Q(
                    "histogram_quantile(0.95, sum by (le, service) "
                    f"(rate(mlops_event_processing_seconds_bucket[{RATE}])))",
                    "{{service}}",
                ),
                unit="s",
            ),
        )
        .row(
            "Failures",
            timeseries(
                "Failed share of consumed events by service",
                Q("service:mlops_events_failed:ratio_rate5m", "{{service}}"),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.01, "red")),
            ),
            timeseries(
                "Dead letters by service and reason",
                Q(
                    f"sum by (service, reason) (increase(mlops_dead_letters_total[{RATE}]))"
                    f" or sum by (service) (increase(mlops_events_consumed_total[{RATE}])) * 0",
                    "{{service}} {{reason}}",
                ),
                unit="short",
            ),
            timeseries(
                "Alert notifications by channel",
                Q(
                    f"sum by (channel) (increase(alerter_deliveries_total[{RATE}]))"
                    " or sum by (channel) (alerter_channel_enabled) * 0",
                    "delivered {{channel}}",
                ),
                Q(
                    f"sum by (channel) (increase(alerter_delivery_failures_total[{RATE}]))"
                    " or sum by (channel) (alerter_channel_enabled) * 0",
                    "failed {{channel}}",
                ),
                unit="short",
                description="The alerter's deliveries and give-ups (all retries failed) per channel.",
            ),
        )
    )


def system() -> Dashboard:
    service_process = 'tier="service"'
    return (
        Dashboard(
            "mlops-system",
            "System — hosts, service processes, availability",
            "CPU, memory and disk of each host (node exporter) and of each service process "
            "(prometheus-client's process collector), and each service's availability measured "
            "from its heartbeats by the auto-responder. Alert rules: deploy/prometheus/rules/system.yml.",
        )
        .row(
            "Availability",
            Panel(
                "bargauge",
                "Availability by service (auto-responder's period, default 1 h)",
                [Q("min by (service) (service_availability_ratio)", "{{service}}", instant=True)],
                width=12,
                unit="percentunit",
                min=0.9,
                max=1,
                decimals=2,
                thresholds=steps((None, "red"), (0.99, "orange"), (0.999, "green")),
                description="Share of the expected heartbeat intervals in which the service beat healthy "
                "(GET /availability on the auto-responder). Target 99.9 %.",
            ),
            timeseries(
                "Availability over time",
                Q("min by (service) (service_availability_ratio)", "{{service}}"),
                width=12,
                unit="percentunit",
                decimals=3,
                thresholds=steps((None, "red"), (0.99, "green")),
            ),
        )
        .row(
            "Hosts",
            timeseries(
                "CPU busy by host",
                Q(
                    f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{RATE}]))',
                    "{{instance}}",
                ),
                width=6,
                unit="percentunit",
                min=0,
                max=1,
                thresholds=steps((None, "green"), (0.9, "red")),
            ),
            timeseries(
                "Memory used by host",
                Q("instance:node_memory_used:ratio", "{{instance}}"),
                width=6,
                unit="percentunit",
                min=0,
                max=1,
                thresholds=steps((None, "green"), (0.9, "red")),
            ),
            timeseries(
                "Disk used by host and mount point",
                Q("instance_mountpoint:node_filesystem_used:ratio", "{{instance}} {{mountpoint}}"),
                width=6,
                unit="percentunit",
                min=0,
                max=1,
                thresholds=steps((None, "green"), (0.9, "red")),
            ),
            timeseries(
                "Load average by host",
                Q("node_load1", "1m {{instance}}"),
                Q("node_load5", "5m {{instance}}"),
                Q("node_load15", "15m {{instance}}"),
                width=6,
                unit="short",
            ),
        )
        .row(
            "Service processes",
            timeseries(
                "CPU by service instance (1 = one core)",
                Q(
                    f"sum by (job, instance) (rate(process_cpu_seconds_total{{{service_process}}}[{RATE}]))",
                    "{{job}} {{instance}}",
                ),
                unit="percentunit",
            ),
            timeseries(
                "Resident memory by service instance",
                Q(f"process_resident_memory_bytes{{{service_process}}}", "{{job}} {{instance}}"),
                unit="bytes",
            ),
            timeseries(
                "Open file descriptors (share of the limit)",
                Q(
                    f"process_open_fds{{{service_process}}} / process_max_fds{{{service_process}}}",
                    "{{job}} {{instance}}",
                ),
                unit="percentunit",
                thresholds=steps((None, "green"), (0.8, "red")),
            ),
            timeseries(
                "Threads by service instance",
                Q("mlops_process_threads", "{{service}} {{instance}}"),
                unit="short",
                description="Native threads included (librdkafka runs several per client).",
            ),
            timeseries(
                "Free space where services keep data",
                Q("mlops_data_dir_free_bytes", "{{service}} {{path}}"),
                unit="bytes",
                description="The drift detector's reports and the recommender's table stores.",
            ),
        )
    )


DASHBOARDS = {
    "overview.json": overview,
    "fraud-scoring.json": fraud_scoring,
    "drift-quality.json": drift_quality,
    "auto-responder.json": auto_responder,
    "recommender.json": recommender,
    "kafka-lag.json": kafka_lag,
    "system.json": system,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build().to_json(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run {Path(__file__).name})", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(stale)} dashboard(s) to {OUT}" if stale else "dashboards up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
