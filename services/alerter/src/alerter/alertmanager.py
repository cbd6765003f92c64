"""Alertmanager's webhook (JSON, version 4) turned into ``system.alerts`` records.

Each alert of a notification becomes one record: severity from the ``severity`` label
(critical, warning, info, ... map onto INFO..CRITICAL), title from the ``summary``
annotation (else ``alertname``), message from ``description``, and a dedup key from
Alertmanager's fingerprint, which is stable for an alert's label set, so
Alertmanager's repeats fall into the alerter's cooldown and its ``resolved``
notification closes the alert.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alerter.models import AlertStatus, Severity

ORIGIN_LABEL = "origin"
ORIGIN = "alertmanager"


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    status: str = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str | None = Field(None, alias="startsAt")
    ends_at: str | None = Field(None, alias="endsAt")
    generator_url: str | None = Field(None, alias="generatorURL")
    fingerprint: str | None = None


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook notification (``version: "4"``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    version: str = "4"
    group_key: str | None = Field(None, alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts")
    status: str = "firing"
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str | None = Field(None, alias="externalURL")
    alerts: list[AlertmanagerAlert] = Field(default_factory=list)


def dedup_key(alert: AlertmanagerAlert) -> str:
    if alert.fingerprint:
        return f"{ORIGIN}:{alert.fingerprint}"
    identity = "\n".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return f"{ORIGIN}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def to_alert_payloads(webhook: AlertmanagerWebhook) -> list[dict[str, Any]]:
    """``SystemAlert`` payloads (without envelope) for every alert of the notification."""
    payloads: list[dict[str, Any]] = []
    for alert in webhook.alerts:
        labels = {**webhook.common_labels, **alert.labels}
        annotations = {**webhook.common_annotations, **alert.annotations}
        alertname = labels.get("alertname", "PrometheusAlert")
        title = annotations.get("summary") or annotations.get("title") or alertname
        message = annotations.get("description") or annotations.get("message") or title
        extra = {
            ORIGIN_LABEL: ORIGIN,
            "alertmanager_receiver": webhook.receiver,
            "generator_url": alert.generator_url or "",
            "starts_at": alert.starts_at or "",
            "runbook_url": annotations.get("runbook_url", ""),
        }
        out_labels = {**labels, **{k: v for k, v in extra.items() if v}}
        out_labels.setdefault("source", ORIGIN)
        payloads.append(
            {
                "alert_id": str(uuid.uuid4()),
                "severity": Severity.parse(labels.get("severity")).name,
                "title": title,
                "message": message,
                "dedup_key": dedup_key(alert),
                "status": AlertStatus.parse(alert.status).value,
                "labels": out_labels,
                "related_event_id": None,
            }
        )
    return payloads
