"""Every service's runtime publishes ``system.metrics`` beside its heartbeat: a real service
process (ingest, the one with no consumer loop to set up) on the real broker and registry,
its resource summaries sent to a fresh topic, and its /metrics exposing the process figures
the dashboards and alert rules use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from mlops_platform.contracts import Topic
from tests.support.processes import ServiceLauncher
from tests.support.topics import TopicTail

pytestmark = pytest.mark.integration

PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "mlops_process_threads",
)


def test_a_service_publishes_its_resource_summary_periodically(
    launcher: ServiceLauncher,
    topic_factory: Callable[..., str],
    topic_tail: Callable[..., TopicTail],
) -> None:
    topic = topic_factory("system-metrics")
    tail = topic_tail({topic: Topic.SYSTEM_METRICS})
    instance = f"test-{uuid.uuid4().hex[:6]}"
    ingest = launcher.start(
        "ingest",
        "INGEST_",
        {
            "INGEST_SYSTEM_METRICS_TOPIC": topic,
            "INGEST_SYSTEM_METRICS_INTERVAL_S": "0.5",
            "INGEST_INSTANCE_ID": instance,
        },
        timeout_s=90,
    )

    events = tail.wait(topic, count=3, service="ingest", instance_id=instance)
    assert {record.key for record in tail.records(topic)} == {"ingest"}
    latest = events[-1]
    assert latest["host"] == os.uname().nodename
    assert latest["process_rss_bytes"] > 10 * 1024 * 1024
    assert latest["process_threads"] >= 2  # the interpreter's and librdkafka's threads at least
    assert latest["process_open_fds"] >= 3
    assert latest["process_cpu_percent"] >= 0.0
    assert 0.0 <= latest["host_cpu_percent"] <= 100.0
    assert 0.0 < latest["host_memory_used_percent"] < 100.0
    assert latest["host_cpus"] == os.cpu_count()
    assert 0.0 < latest["disk_used_percent"] < 100.0
    assert latest["disk_path"] == "/"  # ingest keeps no data of its own
    assert latest["interval_s"] > 0.0
    # Each event is its own fact: no event id repeats.
    assert len({event["envelope"]["event_id"] for event in events}) == len(events)

    exposed = ingest.metrics_text()
    missing = [name for name in PROCESS_METRICS if f"\n{name}" not in exposed]
    assert not missing, f"ingest's /metrics lacks {missing}"
    # The gauge is set from the latest sample, which may be newer than the last event read.
    assert (ingest.metric("mlops_process_threads", service="ingest") or 0) >= 2
