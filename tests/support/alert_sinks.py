"""Local alert sinks: a webhook receiver and an SMTP server that record what the alerter sends.

    python -m tests.support.alert_sinks [--host 127.0.0.1] [--http-port 9901] [--smtp-port 2525]

Every ``POST http://HOST:HTTP_PORT/<path>`` is recorded (``/webhook`` and ``/slack`` by
convention) and every e-mail the SMTP server accepts; each arrival is printed as one JSON
line, and ``GET http://HOST:HTTP_PORT/`` returns everything received so far. Point the
alerter at them with::

    ALERTER_WEBHOOK_URL=http://127.0.0.1:9901/webhook
    ALERTER_SLACK_WEBHOOK_URL=http://127.0.0.1:9901/slack
    ALERTER_SMTP_HOST=127.0.0.1 ALERTER_SMTP_PORT=2525
    ALERTER_SMTP_FROM=alerter@localhost ALERTER_SMTP_TO=oncall@localhost

``make run`` starts it that way; the alerter's integration tests and the closed-loop test
use :class:`AlertSinks` in-process, including :meth:`AlertSinks.fail` to make a path answer
HTTP 500 and exercise the alerter's retries, and :meth:`AlertSinks.hold` to leave requests
unanswered (a receiver hanging while the alerter is killed mid-delivery).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.processes import free_port

# A held request is answered after this long at the latest, so no handler thread hangs forever.
HOLD_LIMIT_S = 300.0


@dataclass(frozen=True)
class Received:
    """One HTTP request that reached a sink (``status`` 0: held, not answered when recorded)."""

    path: str
    body: Any
    headers: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Mail:
    """One e-mail accepted by the SMTP sink."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float = field(default_factory=time.monotonic)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")


class AlertSinks:
    """A webhook receiver (HTTP) and an SMTP server on loopback, recording what arrives."""

    def __init__(
        self, host: str = "127.0.0.1", http_port: int = 0, smtp_port: int = 0, echo: bool = False
    ) -> None:
        self.host = host
        self.http_port = http_port
        self.smtp_port = smtp_port or free_port(host)
        self.echo = echo
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._mails: list[Mail] = []
        self._failures: dict[str, int | None] = {}
        self._holds: dict[str, threading.Event] = {}
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._smtp: Controller | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> AlertSinks:
        self._http = ThreadingHTTPServer((self.host, self.http_port), _handler_for(self))
        self.http_port = int(self._http.server_address[1])
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="webhook-sink", daemon=True
        )
        self._http_thread.start()
        self._smtp = Controller(_SmtpHandler(self), hostname=self.host, port=self.smtp_port)
        self._smtp.start()
        return self

    def stop(self) -> None:
        for path in list(self._holds):
            self.release(path)
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)

    def __enter__(self) -> AlertSinks:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ endpoints

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/webhook"

    @property
    def slack_url(self) -> str:
        return f"{self.base_url}/slack"

    def alerter_env(self, recipients: str = "oncall@localhost") -> dict[str, str]:
        """Environment that points the alerter's three channels at these sinks."""
        return {
            "ALERTER_WEBHOOK_URL": self.webhook_url,
            "ALERTER_SLACK_WEBHOOK_URL": self.slack_url,
            "ALERTER_SMTP_HOST": self.host,
            "ALERTER_SMTP_PORT": str(self.smtp_port),
            "ALERTER_SMTP_FROM": "alerter@localhost",
            "ALERTER_SMTP_TO": recipients,
        }

    # ------------------------------------------------------------------ behaviour and records

    def fail(self, path: str, times: int | None = None) -> None:
        """Answer HTTP 500 on ``path``: the next ``times`` requests, or all until :meth:`heal`."""
        with self._lock:
            self._failures[path] = times

    def heal(self, path: str) -> None:
        with self._lock:
            self._failures.pop(path, None)

    def hold(self, path: str) -> None:
        """Leave requests to ``path`` unanswered until :meth:`release` (recorded with status 0)."""
        with self._lock:
            self._holds.setdefault(path, threading.Event())

    def release(self, path: str) -> None:
        """Answer the held requests of ``path`` (200) and stop holding new ones."""
        with self._lock:
            gate = self._holds.pop(path, None)
        if gate is not None:
            gate.set()

    def _hold_for(self, path: str) -> threading.Event | None:
        with self._lock:
            return self._holds.get(path)

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self._mails)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def _status_for(self, path: str) -> int:
        with self._lock:
            if path not in self._failures:
                return 200
            remaining = self._failures[path]
            if remaining is None:
                return 500
            if remaining <= 1:
                del self._failures[path]
            else:
                self._failures[path] = remaining - 1
            return 500

    def _record_request(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)
        if self.echo:
            _print({"sink": "http", "path": received.path, "status": received.status, "body": received.body})

    def _record_mail(self, mail: Mail) -> None:
        with self._lock:
            self._mails.append(mail)
        if self.echo:
            body = mail.message.get_body(("plain",))
            _print(
                {
                    "sink": "smtp",
                    "from": mail.mail_from,
                    "to": mail.rcpt_tos,
                    "subject": mail.subject,
                    "body": body.get_content() if body is not None else "",
                }
            )

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": [{"path": r.path, "status": r.status, "body": r.body} for r in self._requests],
                "mails": [{"from": m.mail_from, "to": m.rcpt_tos, "subject": m.subject} for m in self._mails],
            }


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=str), flush=True)


def _handler_for(sinks: AlertSinks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            gate = sinks._hold_for(self.path)
            if gate is not None:
                sinks._record_request(Received(self.path, body, dict(self.headers.items()), 0))
                gate.wait(HOLD_LIMIT_S)
                try:
                    self._reply(200, {"ok": True})
                except OSError:
                    pass  # the sender is gone (killed while we held its request)
                return
            status = sinks._status_for(self.path)
            sinks._record_request(Received(self.path, body, dict(self.headers.items()), status))
            self._reply(status, {"ok": status < 400})

        def do_GET(self) -> None:  # noqa: N802
            self._reply(200, sinks.snapshot())

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet: arrivals are recorded (and echoed) instead

    return Handler


class _SmtpHandler:
    def __init__(self, sinks: AlertSinks) -> None:
        self.sinks = sinks

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sinks._record_mail(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=9901)
    parser.add_argument("--smtp-port", type=int, default=2525)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with AlertSinks(args.host, args.http_port, args.smtp_port, echo=True) as sinks:
        print(f"webhook sink: {sinks.webhook_url}  slack sink: {sinks.slack_url}", file=sys.stderr)
        print(
            f"smtp sink: {sinks.host}:{sinks.smtp_port}  (GET {sinks.base_url}/ lists arrivals)",
            file=sys.stderr,
        )
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
