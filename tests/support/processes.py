"""Run a service as a real process (``python -m <module>``) on a free port, with its log in a file.

A :class:`ServiceLauncher` remembers what it started; :meth:`ServiceLauncher.close` stops
everything and prints the tail of each log, which pytest shows only when the test failed.
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
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2, log: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}\n{log}", pytrace=False)
        time.sleep(interval_s)


@dataclass
class ServiceProcess:
    """One running service instance."""

    module: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    starts: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, tail_chars: int = 12_000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except OSError:
            return "(no log)"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=json, timeout=60, **kwargs)

    def alive(self) -> bool:
        return self.process.poll() is None

    def answers(self, path: str, status: int = 200) -> bool:
        if not self.alive():
            pytest.fail(f"{self.module} exited with {self.process.returncode}:\n{self.log()}", pytrace=False)
        try:
            return self.get(path).status_code == status
        except httpx.HTTPError:
            return False

    def wait_for(self, path: str = "/ready", status: int = 200, timeout_s: float = 120) -> None:
        wait_until(
            lambda: self.answers(path, status),
            timeout_s,
            f"{self.module} {path} -> {status}",
            log=self.log(),
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush, no commit."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 40) -> None:
        """SIGTERM and wait for the graceful shutdown (SIGKILL if it hangs)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

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
    """Starts service processes for one test and stops them afterwards."""

    log_dir: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(
        self,
        module: str,
        env_prefix: str,
        env: Mapping[str, str] | None = None,
        *,
        wait_for: str | None = "/ready",
        timeout_s: float = 120,
    ) -> ServiceProcess:
        port = free_port()
        environment = {
            **os.environ,
            f"{env_prefix}HTTP_HOST": "127.0.0.1",
            f"{env_prefix}HTTP_PORT": str(port),
            f"{env_prefix}HEARTBEAT_INTERVAL_S": "3600",
            "LOG_FORMAT": "console",
            **(env or {}),
        }
        log_path = self.log_dir / f"{module}-{port}.log"
        service = ServiceProcess(
            module, environment, port, log_path, _spawn(module, environment, log_path, "start")
        )
        self.started.append(service)
        if wait_for:
            service.wait_for(wait_for, timeout_s=timeout_s)
        return service

    def close(self) -> None:
        for service in self.started:
            service.stop()
        for service in self.started:
            # Captured output: pytest shows it only for a failed test.
            header = f"----- log of {service.module} on port {service.port} ({service.log_path})"
            print(f"\n{header}\n{service.log()}")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """A sample's value from a ``/metrics`` page (``None`` if absent); labels must match exactly."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None
