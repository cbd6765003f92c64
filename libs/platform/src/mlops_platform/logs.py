"""Structured logging: JSON lines via structlog, with the causal ids of the event at hand.

Bind an event's envelope with :func:`bind_event` while handling it; every log line
written meanwhile carries ``correlation_id``, ``causation_id`` and ``event_id``, so a
chain of events can be followed across services in the logs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is *now* (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and the standard library logging for one service process."""
    log_level = logging.getLevelName(level.upper())
    if not isinstance(log_level, int):
        log_level = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route third-party stdlib logging (uvicorn, kafka callbacks) through the same format.
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(log_level)
    # Readiness probes and heartbeats make an HTTP call every few seconds; one INFO line
    # each would drown the service's own log.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(log_level, logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)


@contextmanager
def bind_event(envelope: Mapping[str, Any] | None) -> Iterator[None]:
    """Bind an event's causal ids to every log line written inside the block."""
    if not envelope:
        yield
        return
    keys = {
        "event_id": envelope.get("event_id"),
        "correlation_id": envelope.get("correlation_id"),
        "causation_id": envelope.get("causation_id"),
    }
    with structlog.contextvars.bound_contextvars(**keys):
        yield
