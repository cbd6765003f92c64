from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
import httpx
import pytest

from alerter.channels import (
    DeliveryError,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    build_channels,
    channel_status,
    email_message,
    slack_payload,
)
from alerter.config import Settings
from alerter.models import DeliveryKind, Notification, Severity


def note(kind: DeliveryKind = DeliveryKind.NOTIFY, level: int = 0) -> Notification:
    return Notification(
        alert_id="A1",
        kind=kind,
        severity=Severity.CRITICAL,
        status="firing",
        title="Drift on amount",
        message="PSI 0.41 on amount",
        dedup_key="drift:fraud",
        source="drift-detector",
        labels={"model": "fraud_detector"},
        opened_at=datetime(2025, 1, 1, tzinfo=UTC),
        occurrences=3,
        escalation_level=level,
        url="http://alerter:8006/alerts/A1",
        correlation_id="corr-1",
    )


def client(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_webhook_posts_the_notification_as_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with client(handler) as http:
        await WebhookChannel("http://hook/x", http, {"Authorization": "Bearer t"}).send(note())
    body = json.loads(seen[0].content)
    assert seen[0].headers["Authorization"] == "Bearer t"
    assert body["alert_id"] == "A1"
    assert body["severity"] == "CRITICAL"
    assert body["kind"] == "notify"
    assert body["labels"] == {"model": "fraud_detector"}
    assert body["correlation_id"] == "corr-1"


async def test_slack_posts_text_and_blocks() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, text="ok")

    async with client(handler) as http:
        await SlackChannel("http://slack/hook", http).send(note(DeliveryKind.ESCALATION, 2))
    body = seen[0]
    assert "ESCALATION 2" in body["text"] and "Drift on amount" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    assert any(b["type"] == "section" and "fields" in b for b in body["blocks"])
    assert "alerts/A1" in json.dumps(body["blocks"])


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
async def test_http_errors_say_whether_to_retry(status: int, retryable: bool) -> None:
    async with client(lambda _r: httpx.Response(status, text="nope")) as http:
        with pytest.raises(DeliveryError) as raised:
            await WebhookChannel("http://hook/x", http).send(note())
    assert raised.value.retryable is retryable
    assert str(raised.value).startswith(f"HTTP {status}")


async def test_connection_errors_are_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(handler) as http:
        with pytest.raises(DeliveryError) as raised:
            await SlackChannel("http://slack/hook", http).send(note())
    assert raised.value.retryable


def test_email_message_has_subject_headers_and_details() -> None:
    message = email_message(note(DeliveryKind.RESOLVED), "alerter@x", ["a@x", "b@x"])
    assert message["Subject"] == "[CRITICAL] RESOLVED: Drift on amount"
    assert message["To"] == "a@x, b@x"
    assert message["X-Alert-Id"] == "A1"
    body = message.get_content()
    assert "PSI 0.41" in body and "drift:fraud" in body and "POST http://alerter:8006/alerts/A1/ack" in body


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (aiosmtplib.SMTPResponseException(451, "try later"), True),
        (aiosmtplib.SMTPResponseException(554, "rejected"), False),
        (aiosmtplib.SMTPRecipientsRefused([]), False),
        (aiosmtplib.SMTPConnectError("refused"), True),
        (ConnectionRefusedError(), True),
    ],
)
async def test_smtp_errors_say_whether_to_retry(
    monkeypatch: pytest.MonkeyPatch, error: Exception, retryable: bool
) -> None:
    async def fail(*_a: Any, **_k: Any) -> None:
        raise error

    monkeypatch.setattr(aiosmtplib, "send", fail)
    channel = EmailChannel(host="127.0.0.1", port=1, sender="a@x", recipients=["b@x"])
    with pytest.raises(DeliveryError) as raised:
        await channel.send(note())
    assert raised.value.retryable is retryable


async def test_email_goes_through_aiosmtplib(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    async def send(message: Any, **kwargs: Any) -> None:
        calls.append({"message": message, **kwargs})

    monkeypatch.setattr(aiosmtplib, "send", send)
    channel = EmailChannel(
        host="mail", port=2525, sender="a@x", recipients=["b@x"], username="u", password="p"
    )
    await channel.send(note())
    assert calls[0]["hostname"] == "mail" and calls[0]["port"] == 2525
    assert calls[0]["username"] == "u" and calls[0]["password"] == "p"
    assert calls[0]["message"]["Subject"] == "[CRITICAL] Drift on amount"


def test_channels_without_configuration_are_disabled_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEBHOOK_URL", "SLACK_WEBHOOK_URL", "SMTP_HOST", "SMTP_FROM", "SMTP_TO"):
        monkeypatch.delenv(f"ALERTER_{name}", raising=False)
    monkeypatch.setenv("ALERTER_SLACK_WEBHOOK_URL", "https://hooks.example/services/T000/SECRET")
    monkeypatch.setenv("ALERTER_SMTP_HOST", "mail")
    status = channel_status(Settings())
    assert not status["webhook"].enabled and "ALERTER_WEBHOOK_URL" in status["webhook"].detail
    assert status["slack"].enabled and "SECRET" not in status["slack"].detail
    assert not status["email"].enabled
    assert "ALERTER_SMTP_FROM" in status["email"].detail and "ALERTER_SMTP_TO" in status["email"].detail
    assert set(build_channels(Settings(), httpx.AsyncClient())) == {"slack"}


def test_all_channels_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTER_WEBHOOK_URL", "http://127.0.0.1:9901/webhook")
    monkeypatch.setenv("ALERTER_WEBHOOK_HEADERS", '{"X-Token": "t"}')
    monkeypatch.setenv("ALERTER_SLACK_WEBHOOK_URL", "http://127.0.0.1:9901/slack")
    monkeypatch.setenv("ALERTER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("ALERTER_SMTP_PORT", "2525")
    monkeypatch.setenv("ALERTER_SMTP_FROM", "alerter@local")
    monkeypatch.setenv("ALERTER_SMTP_TO", "ops@local, ml@local")
    settings = Settings()
    assert settings.smtp_recipients == ["ops@local", "ml@local"]
    assert all(s.enabled for s in channel_status(settings).values())
    channels = build_channels(settings, httpx.AsyncClient())
    assert set(channels) == {"webhook", "slack", "email"}
    webhook = channels["webhook"]
    assert isinstance(webhook, WebhookChannel) and webhook.headers == {"X-Token": "t"}
    assert settings.service_name == "alerter" and settings.http_port == 8006


def test_slack_payload_is_json_serialisable() -> None:
    json.dumps(slack_payload(note()))
