"""The heartbeat's last word: a graceful stop says ``stopping``, never ``degraded``."""

from __future__ import annotations

import time
from typing import Any

from mlops_platform.health import STOPPING, CheckResult, Heartbeat
from mlops_platform.settings import ServiceSettings


class RecordingProducer:
    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []

    def produce(self, binding: Any, event: dict[str, Any], key: str) -> None:
        self.beats.append(event)


def test_a_graceful_stop_ends_with_one_stopping_beat_and_no_degraded_one() -> None:
    settings = ServiceSettings(service_name="predictor", heartbeat_interval_s=0.01, instance_id="p-1")
    producer = RecordingProducer()
    running = {"loop": True}
    checks = {"consumer": lambda: CheckResult(running["loop"], "loop")}
    heartbeat = Heartbeat(settings, producer, checks, "1.0")  # type: ignore[arg-type]
    heartbeat.start()
    deadline = time.monotonic() + 10
    while not producer.beats and time.monotonic() < deadline:
        time.sleep(0.01)
    heartbeat.farewell()
    # What stops after the goodbye (the loops) fails its checks: nobody hears of it.
    running["loop"] = False
    time.sleep(0.05)
    heartbeat.farewell()  # a second call (the runtime's stop after the service's own) adds nothing
    statuses = [beat["status"] for beat in producer.beats]
    assert statuses[-1] == STOPPING and statuses.count(STOPPING) == 1
    assert set(statuses[:-1]) == {"ok"}
    assert producer.beats[-1]["instance_id"] == "p-1"
    # The goodbye does not wait on the checks (a dependency may be what is down).
    assert producer.beats[0]["dependencies"] == {"consumer": "ok"}
    assert producer.beats[-1]["dependencies"] == {}
