"""Local processes and the probes that tell whether they serve.

The stack starts long-lived, detached processes that outlive the command (pid files);
the benchmark starts children it stops itself. Both start processes the same way (output
appended to a log file with a header line) and wait for them the same way.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from constellation import ROOT


def launch(
    argv: list[str], env: dict[str, str], log_path: Path, *, cwd: Path = ROOT, detach: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``.

    ``detach`` puts the process in its own session, so it outlives the caller and its
    whole process group can be signalled at once.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(  # noqa: S603 - argv is built by the caller, never from user input
            argv,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )


def tail(log_path: Path, lines: int = 15) -> str:
    """The last lines of a log, indented, for an error message."""
    try:
        text = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


Outcome = Literal["ready", "exited", "timeout"]


def wait_until(
    ready: Callable[[], bool], alive: Callable[[], bool], timeout_s: float, poll_s: float = 0.5
) -> Outcome:
    """Poll ``ready`` until it holds, the process is no longer ``alive``, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return "ready"
        if not alive():
            return "exited"
        time.sleep(poll_s)
    return "timeout"


@dataclass
class Child:
    """A process this command started and stops before it ends."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM, wait for a graceful exit, SIGKILL as a last resort."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


def start_child(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start a child process logging to ``log_dir/NAME.log``."""
    log_path = log_dir / f"{name}.log"
    return Child(name, launch(argv, env, log_path), log_path)


# --------------------------------------------------------------------------- probes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - local URLs only
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_json(
    url: str, timeout_s: float = 3.0, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The JSON object ``GET url`` answers, also with an error status (``/ready`` says why with 503).

    ``None`` when nothing answers or the answer is not a JSON object. ``headers`` carry an
    API key where the endpoint needs one.
    """
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local URLs only
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - local URLs only
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def http_post(url: str, timeout_s: float = 5.0) -> bool:
    """True when ``POST url`` (no body) answers 2xx."""
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - local URLs only
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False
