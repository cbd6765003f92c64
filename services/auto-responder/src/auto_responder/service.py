"""The auto-responder process, wired once: runtime, responder, decision loop, checks.

Trigger events reach :meth:`Responder.handle_batch` through one at-least-once stream
loop; the responder delivers each decision before it acts, so the loop's commit only
moves offsets past triggers whose decisions are stored. Before the loop starts the
responder replays its decision log (runtime ``on_start``); on shutdown it lets running
actions finish (``on_stop``).
"""

from __future__ import annotations

from auto_responder.config import Settings
from auto_responder.responder import Responder
from mlops_platform.health import CheckResult, mlflow_check
from mlops_platform.kafka import Guarantee, StreamLoop
from mlops_platform.service import ServiceRuntime


class AutoResponderService:
    """Composition root of the auto-responder."""

    def __init__(self, settings: Settings, *, responder: Responder | None = None) -> None:
        self.settings = settings
        self.runtime = ServiceRuntime(settings)
        self.responder = responder or Responder(settings, self.runtime.producer, self.runtime.serde)
        self.runtime.on_start(self.responder.start)
        self.runtime.on_stop(self.responder.stop)
        self.loop: StreamLoop = self.runtime.stream(
            inputs=settings.triggers,
            handler=self.responder.handle_batch,
            guarantee=Guarantee.AT_LEAST_ONCE,
            batch_size=100,
        )
        self.runtime.checks["mlflow"] = mlflow_check(settings)
        self.runtime.checks["history"] = self.history_check
        self.runtime.heartbeat_details = self.heartbeat_details

    def history_check(self) -> CheckResult:
        """Not ready until the decision log is replayed (acting before could repeat actions)."""
        if not self.responder.restored.is_set():
            return CheckResult(False, "replaying system.actions")
        return CheckResult(True, f"{len(self.responder.history.records())} decisions in memory")

    def heartbeat_details(self) -> dict[str, str]:
        return {
            "consumer_lag": str(self.runtime.lag()),
            "actions_in_progress": str(len(self.responder.running())),
            "model_name": self.settings.model_name,
        }
