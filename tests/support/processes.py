"""Run a service as a real process (``python -m <module>``) on a free port, with its log in a file.

A :class:`ServiceLauncher` remembers what it started; :meth:`ServiceLauncher.close` stops
everything and prints the tail of each log, which pytest shows only when the test failed.
This module is the one place in the test tree that spawns service processes, picks free
ports and reads ``/metrics`` pages. Every service it starts knows the session's API keys
(:mod:`tests.support.keys`), and :meth:`ServiceProcess.get` / :meth:`ServiceProcess.post`
send the key of the role an endpoint needs unless told otherwise (``role=None``: anonymous).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from mlops_platform.auth import Role
from tests.support import keys
from tests.support.keys import NEEDED

if TYPE_CHECKING:
    from mlops_platform.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[2]

Text = str | Callable[[], str]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _text(value: Text) -> str:
    return value() if callable(value) else value


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: Text, interval_s: float = 0.2, log: Text = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``.

    ``what`` and ``log`` may be callables: they are evaluated only on failure, so the
    message shows the state at the deadline rather than at the start.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(
                f"timed out after {timeout_s:.0f}s waiting for {_text(what)}\n{_text(log)}", pytrace=False
            )
        time.sleep(interval_s)


def connection_env(settings: PlatformSettings) -> dict[str, str]:
    """The environment that points a service at the same Kafka, registry and MLflow as ``settings``.

    With the same credentials too: the security protocol, the SASL principal and the
    registry's basic-auth user of ``settings``.
    """
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
    }
    secrets = {
        "KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
        "SCHEMA_REGISTRY_USERNAME": settings.schema_registry_username,
        "SCHEMA_REGISTRY_PASSWORD": settings.schema_registry_password,
    }
    for name, value in secrets.items():
        if value is not None:
            env[name] = value if isinstance(value, str) else value.get_secret_value()
    return env


# --------------------------------------------------------------------------- /metrics pages


def _samples(text: str, name: str, labels: Mapping[str, str]) -> list[float]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The first sample of ``name`` on a ``/metrics`` page with all of ``labels`` (``None`` if absent)."""
    values = _samples(text, name, labels)
    return values[0] if values else None


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels`` (0 if there is none)."""
    return sum(_samples(text, name, labels))


# --------------------------------------------------------------------------- processes


@dataclass
class ServiceProcess:
    """One running service instance."""

    module: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    starts: int = 1
    stop_timeout_s: float = 40

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, tail_chars: int = 12_000) -> str:
        """The end of the process's log (every start appends to the same file)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except OSError:
            return "(no log)"

    def get(self, path: str, role: Role | str | None = NEEDED, **kwargs: Any) -> httpx.Response:
        """``GET`` on the service with a viewer key (or ``role``'s); the rest goes to :func:`httpx.get`."""
        kwargs.setdefault("timeout", 30)
        return httpx.get(f"{self.url}{path}", **keys.with_key(self.module, "GET", path, role, kwargs))

    def post(
        self, path: str, json: Any = None, role: Role | str | None = NEEDED, **kwargs: Any
    ) -> httpx.Response:
        """``POST`` a JSON body with the key the endpoint needs (or ``role``'s); see :func:`needed_role`."""
        kwargs.setdefault("timeout", 60)
        return httpx.post(
            f"{self.url}{path}", json=json, **keys.with_key(self.module, "POST", path, role, kwargs)
        )

    def request(
        self, method: str, path: str, role: Role | str | None = NEEDED, **kwargs: Any
    ) -> httpx.Response:
        """Any request, with the key the endpoint needs (or ``role``'s, ``None``: anonymous)."""
        kwargs.setdefault("timeout", 60)
        return httpx.request(
            method, f"{self.url}{path}", **keys.with_key(self.module, method, path, role, kwargs)
        )

    def json(self, path: str, **params: Any) -> Any:
        """The JSON body of ``GET path?params``; fails on an error status."""
        response = self.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def metrics_text(self) -> str:
        """The service's ``/metrics`` page."""
        return self.get("/metrics").text

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the service's metrics (see :func:`metric_value`)."""
        return metric_value(self.metrics_text(), name, **labels)

    def metric_sum(self, name: str, **labels: str) -> float:
        """The sum over the matching samples of the service's metrics (see :func:`metric_sum`)."""
        return metric_sum(self.metrics_text(), name, **labels)

    def alive(self) -> bool:
        return self.process.poll() is None

    def _fail_if_exited(self, doing: str) -> None:
        if not self.alive():
            pytest.fail(
                f"{self.module} exited with {self.process.returncode} {doing}:\n{self.log()}", pytrace=False
            )

    def answers(self, path: str, status: int = 200) -> bool:
        self._fail_if_exited(f"while waiting for {path} -> {status}")
        try:
            return self.get(path).status_code == status
        except httpx.HTTPError:
            return False

    def wait_for(self, path: str = "/ready", status: int = 200, timeout_s: float = 120) -> None:
        """Wait until ``GET path`` answers ``status``; fail at once if the process exits."""
        self.wait(f"{self.module} {path} -> {status}", lambda: self.answers(path, status), timeout_s)

    def wait(
        self, what: Text, predicate: Callable[[], Any], timeout_s: float = 60, interval_s: float = 0.2
    ) -> Any:
        """Poll ``predicate`` while the process runs; fail with its log on timeout or if it exits."""

        def check() -> Any:
            self._fail_if_exited(f"while waiting for {_text(what)}")
            return predicate()

        return wait_until(check, timeout_s, what, interval_s, log=self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush, no commit."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float | None = None, *, strict: bool = False) -> int:
        """SIGTERM and wait for the graceful shutdown; returns the exit code.

        A process that does not exit within ``timeout_s`` is killed; with ``strict`` that
        also fails the test, since not stopping on SIGTERM is then what is being checked.
        """
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
                if strict:
                    pytest.fail(
                        f"{self.module} did not stop within {timeout_s:.0f}s of SIGTERM:\n{self.log()}",
                        pytrace=False,
                    )
        return self.process.returncode

    def restart(self) -> None:
        """Start the same service again with the same environment (same port and instance id)."""
        if self.alive():
            raise RuntimeError("stop or kill the process first")
        self.starts += 1
        self.process = _spawn(self.module, self.env, self.log_path, f"restart #{self.starts}")


def _spawn(module: str, env: Mapping[str, str], log_path: Path, note: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        log.write(f"\n===== {note}: python -m {module}\n".encode())
        log.flush()
        return subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@dataclass
class ServiceLauncher:
    """Starts service processes for a test (or a module) and stops them afterwards."""

    log_dir: Path
    started: list[ServiceProcess] = field(default_factory=list)
    log_tail_chars: int = 20_000

    def start(
        self,
        module: str,
        env_prefix: str,
        env: Mapping[str, str] | None = None,
        *,
        wait_for: str | None = "/ready",
        timeout_s: float = 120,
        stop_timeout_s: float = 40,
        host_var: str | None = None,
        port_var: str | None = None,
    ) -> ServiceProcess:
        """Run ``python -m module`` on a free port and wait until ``wait_for`` answers 200.

        The port goes to ``{env_prefix}HTTP_PORT`` (or ``port_var``); heartbeats and system
        metrics are slowed down and logs are readable text unless ``env`` says otherwise.
        """
        port = free_port()
        environment = {
            **os.environ,
            host_var or f"{env_prefix}HTTP_HOST": "127.0.0.1",
            port_var or f"{env_prefix}HTTP_PORT": str(port),
            f"{env_prefix}HEARTBEAT_INTERVAL_S": "3600",
            f"{env_prefix}SYSTEM_METRICS_INTERVAL_S": "3600",
            "LOG_FORMAT": "console",
            # The digests of the session's API keys (tests send the plaintext ones).
            "API_KEYS": keys.API_KEYS_ENV,
            **(env or {}),
        }
        log_path = self.log_dir / f"{module}-{port}.log"
        service = ServiceProcess(
            module,
            environment,
            port,
            log_path,
            _spawn(module, environment, log_path, "start"),
            stop_timeout_s=stop_timeout_s,
        )
        self.started.append(service)
        if wait_for:
            service.wait_for(wait_for, timeout_s=timeout_s)
        return service

    def __enter__(self) -> ServiceLauncher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process still running and print each log's tail."""
        for service in self.started:
            service.stop()
        for service in self.started:
            # Captured output: pytest shows it only for a failed test.
            header = f"----- log of {service.module} on port {service.port} ({service.log_path})"
            print(f"\n{header}\n{service.log(self.log_tail_chars)}")
