"""Delivery channels: generic JSON webhook, Slack-compatible webhook, e-mail over SMTP.

A channel sends one :class:`~alerter.models.Notification` or raises
:class:`DeliveryError`, saying whether trying again can help (a timeout or a 5xx
can; a 400 or a refused recipient cannot). Retrying is the dispatcher's job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiosmtplib
import httpx

from alerter.config import Settings
from alerter.models import DeliveryKind, Notification, Severity, delivery_id

# HTTP statuses worth retrying: the receiver is overloaded or briefly unavailable.
RETRYABLE_HTTP = frozenset({408, 425, 429})


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    name: str

    async def send(self, notification: Notification) -> None: ...


# --------------------------------------------------------------------------- rendering

_SLACK_ICON = {
    Severity.INFO: ":information_source:",
    Severity.LOW: ":large_blue_circle:",
    Severity.MEDIUM: ":large_orange_circle:",
    Severity.HIGH: ":red_circle:",
    Severity.CRITICAL: ":rotating_light:",
}


def slack_payload(n: Notification) -> dict[str, Any]:
    """Slack incoming-webhook body: ``text`` (fallback and notifications) plus Block Kit ``blocks``."""
    icon = ":white_check_mark:" if n.kind is DeliveryKind.RESOLVED else _SLACK_ICON[n.severity]
    fields = [
        {"type": "mrkdwn", "text": f"*Severity*\n{n.severity.name}"},
        {"type": "mrkdwn", "text": f"*Status*\n{n.status}"},
        {"type": "mrkdwn", "text": f"*Source*\n{n.source}"},
        {"type": "mrkdwn", "text": f"*Occurrences*\n{n.occurrences}"},
    ]
    context = f"alert `{n.alert_id}` · key `{n.dedup_key}` · opened {n.opened_at:%Y-%m-%d %H:%M:%S} UTC"
    if n.url:
        context += f" · <{n.url}|details> (ack: POST {n.url}/ack)"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": n.subject[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {n.message or n.title}"[:3000]}},
        {"type": "section", "fields": fields},
    ]
    labels = ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
    if labels:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": labels[:3000]}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context[:3000]}]})
    return {"text": f"{icon} {n.subject}", "blocks": blocks}


def email_message(
    n: Notification, sender: str, recipients: list[str], delivery: str | None = None
) -> EmailMessage:
    """The e-mail of a notification; ``delivery`` (the delivery id) makes its Message-ID stable.

    A mail sent again after a crash then carries the same Message-ID, which mail systems
    use to drop duplicates.
    """
    message = EmailMessage()
    message["Subject"] = n.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    if delivery:
        digest = hashlib.sha256(delivery.encode()).hexdigest()[:32]
        message["Message-ID"] = f"<{digest}@alerter>"
        message["X-Delivery-Id"] = delivery
    else:
        message["Message-ID"] = make_msgid(domain="alerter")
    message["X-Alert-Id"] = n.alert_id
    message["X-Alert-Severity"] = n.severity.name
    message["X-Alert-Kind"] = n.kind.value
    lines = [
        n.message or n.title,
        "",
        f"Severity:     {n.severity.name}",
        f"Status:       {n.status}",
        f"Source:       {n.source}",
        f"Opened:       {n.opened_at.isoformat()}",
        f"Occurrences:  {n.occurrences}",
        f"Dedup key:    {n.dedup_key}",
        f"Alert id:     {n.alert_id}",
    ]
    if n.kind is DeliveryKind.ESCALATION:
        lines.append(f"Escalation:   level {n.escalation_level} (not acknowledged)")
    if n.correlation_id:
        lines.append(f"Correlation:  {n.correlation_id}")
    for key, value in sorted(n.labels.items()):
        lines.append(f"Label {key}: {value}")
    if n.url:
        lines += ["", f"Details: {n.url}", f"Acknowledge: POST {n.url}/ack"]
    message.set_content("\n".join(lines) + "\n")
    return message


# --------------------------------------------------------------------------- channels


async def _post_json(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    try:
        response = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
    if response.status_code >= 400:
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_HTTP
        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}", retryable=retryable)


def idempotency_headers(notification: Notification, channel: str) -> dict[str, str]:
    """The delivery id as ``Idempotency-Key`` and ``X-Delivery-Id``; a repeat after a crash has the same."""
    key = delivery_id(notification, channel)
    return {"Idempotency-Key": key, "X-Delivery-Id": key}


class WebhookChannel:
    """POSTs the notification as JSON (see :meth:`Notification.as_dict`) plus its ``delivery_id``."""

    name = "webhook"

    def __init__(self, url: str, client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.url, self.client, self.headers = url, client, dict(headers or {})

    async def send(self, notification: Notification) -> None:
        headers = {**self.headers, **idempotency_headers(notification, self.name)}
        body = {**notification.as_dict(), "delivery_id": headers["X-Delivery-Id"]}
        await _post_json(self.client, self.url, body, headers)


class SlackChannel:
    """POSTs a Slack-compatible ``{"text", "blocks"}`` body to an incoming webhook."""

    name = "slack"

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url, self.client = url, client

    async def send(self, notification: Notification) -> None:
        await _post_json(
            self.client, self.url, slack_payload(notification), idempotency_headers(notification, self.name)
        )


class EmailChannel:
    """Sends a plain-text e-mail through an SMTP server."""

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        username: str | None = None,
        password: str | None = None,
        start_tls: bool | None = None,
        use_tls: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender, self.recipients = host, port, sender, recipients
        self.username, self.password = username, password
        self.start_tls, self.use_tls, self.timeout_s = start_tls, use_tls, timeout_s

    async def send(self, notification: Notification) -> None:
        message = email_message(
            notification, self.sender, self.recipients, delivery_id(notification, self.name)
        )
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.start_tls,
                use_tls=self.use_tls,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipients refused: {exc}", retryable=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx replies are transient by definition in SMTP; 5xx are permanent.
            raise DeliveryError(f"SMTP {exc.code}: {exc.message}", retryable=exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from exc


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True)
class ChannelStatus:
    enabled: bool
    detail: str


def _where(url: str) -> str:
    # Webhook URLs often embed a secret token in the path: show only scheme and host.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "(invalid URL)"


def channel_status(settings: Settings) -> dict[str, ChannelStatus]:
    """Which channels are configured, and why the others are not."""
    status: dict[str, ChannelStatus] = {}
    if settings.webhook_url:
        status["webhook"] = ChannelStatus(True, f"POST {_where(settings.webhook_url)}")
    else:
        status["webhook"] = ChannelStatus(False, "disabled: ALERTER_WEBHOOK_URL is not set")
    if settings.slack_webhook_url:
        status["slack"] = ChannelStatus(True, f"POST {_where(settings.slack_webhook_url)}")
    else:
        status["slack"] = ChannelStatus(False, "disabled: ALERTER_SLACK_WEBHOOK_URL is not set")
    missing = [
        name
        for name, value in (
            ("ALERTER_SMTP_HOST", settings.smtp_host),
            ("ALERTER_SMTP_FROM", settings.smtp_from),
            ("ALERTER_SMTP_TO", settings.smtp_recipients),
        )
        if not value
    ]
    if missing:
        status["email"] = ChannelStatus(False, f"disabled: {', '.join(missing)} not set")
    else:
        status["email"] = ChannelStatus(
            True, f"smtp://{settings.smtp_host}:{settings.smtp_port} -> {', '.join(settings.smtp_recipients)}"
        )
    return status


def build_channels(settings: Settings, client: httpx.AsyncClient) -> dict[str, Channel]:
    """The configured channels, by name."""
    channels: dict[str, Channel] = {}
    if settings.webhook_url:
        channels["webhook"] = WebhookChannel(settings.webhook_url, client, settings.webhook_headers)
    if settings.slack_webhook_url:
        channels["slack"] = SlackChannel(settings.slack_webhook_url, client)
    if settings.smtp_host and settings.smtp_from and settings.smtp_recipients:
        channels["email"] = EmailChannel(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            recipients=settings.smtp_recipients,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            use_tls=settings.smtp_ssl,
            timeout_s=settings.smtp_timeout_s,
        )
    return channels
