"""The system sampler behind ``system.metrics``: figures read from a fake ``/proc``, and the event
it makes validates against the catalogue contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastavro import parse_schema
from fastavro.validation import validate
from prometheus_client import REGISTRY

from mlops_platform.contracts import Topic, load_catalogue
from mlops_platform.errors import ContractError
from mlops_platform.settings import PlatformSettings, ServiceSettings
from mlops_platform.sysmetrics import SystemMetricsReporter, SystemSampler

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_proc(
    root: Path, *, process_ticks: int, busy: int, idle: int, threads: int = 7, rss_pages: int = 2560
) -> None:
    """A minimal /proc: the process's stat (with a command name containing ') '), the host's stat,
    meminfo and loadavg, and three open fds."""
    own = root / "self"
    (own / "fd").mkdir(parents=True, exist_ok=True)
    for fd in range(3):
        (own / "fd" / str(fd)).touch()
    # Fields 3.. after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
    after = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0"]
    after += [str(process_ticks), "0", "0", "0", "20", "0", str(threads), "0", "100", "1000", str(rss_pages)]
    (own / "stat").write_text(f"4242 (python ) x) {' '.join(after)} 0 0\n")
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")
    (root / "meminfo").write_text(
        "MemTotal:       8000000 kB\nMemFree:  100 kB\nMemAvailable:   2000000 kB\n"
    )
    (root / "loadavg").write_text("1.50 0.75 0.25 2/300 4242\n")


def test_cpu_percentages_cover_the_time_between_samples(tmp_path: Path) -> None:
    clock = Clock()
    write_proc(tmp_path, process_ticks=0, busy=1000, idle=3000)
    sampler = SystemSampler(tmp_path, tmp_path, clock=clock)
    # 2 s later the process used 1 CPU second; the host was busy 300 of 400 ticks.
    clock.now += 2.0
    write_proc(tmp_path, process_ticks=TICKS, busy=1300, idle=3100)
    sample = sampler.sample()
    assert sample.interval_s == pytest.approx(2.0)
    assert sample.process_cpu_percent == pytest.approx(50.0)
    assert sample.host_cpu_percent == pytest.approx(75.0)
    # The next sample starts from this one: an idle second is 0 %.
    clock.now += 1.0
    write_proc(tmp_path, process_ticks=TICKS, busy=1300, idle=3200)
    later = sampler.sample()
    assert later.process_cpu_percent == 0.0
    assert later.host_cpu_percent == 0.0


def test_memory_threads_fds_and_load_come_from_proc(tmp_path: Path) -> None:
    write_proc(tmp_path, process_ticks=0, busy=10, idle=10, threads=9, rss_pages=100)
    sample = SystemSampler(tmp_path, tmp_path, clock=Clock()).sample()
    assert sample.process_threads == 9
    assert sample.process_rss_bytes == 100 * PAGE
    assert sample.process_open_fds == 3
    assert sample.host_memory_total_bytes == 8_000_000 * 1024
    assert sample.host_memory_used_percent == pytest.approx(75.0)
    assert (sample.load1, sample.load5, sample.load15) == (1.5, 0.75, 0.25)
    assert 0.0 < sample.disk_used_percent < 100.0
    assert sample.disk_total_bytes > 0


def test_a_data_directory_not_created_yet_reports_its_parents_file_system(tmp_path: Path) -> None:
    write_proc(tmp_path, process_ticks=0, busy=10, idle=10)
    sample = SystemSampler(tmp_path, tmp_path / "not" / "yet", clock=Clock()).sample()
    assert sample.disk_path == str(tmp_path / "not" / "yet")
    assert sample.disk_total_bytes > 0


def test_an_unreadable_proc_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="cannot read"):
        SystemSampler(tmp_path / "missing")


def test_the_real_proc_gives_plausible_figures() -> None:
    sample = SystemSampler().sample()
    assert sample.process_rss_bytes > 10 * 1024 * 1024  # a Python interpreter with numpy loaded
    assert sample.process_threads >= 1
    assert sample.process_open_fds >= 3
    assert 0.0 <= sample.host_cpu_percent <= 100.0
    assert 0.0 < sample.host_memory_used_percent < 100.0


def test_the_event_follows_the_catalogue_contract(tmp_path: Path) -> None:
    write_proc(tmp_path, process_ticks=0, busy=10, idle=10)
    settings = ServiceSettings(service_name="probe", instance_id="probe-1")
    reporter = SystemMetricsReporter(settings, producer=None, sampler=SystemSampler(tmp_path, clock=Clock()))  # type: ignore[arg-type,unused-ignore]
    assert reporter.sampler is not None
    event = reporter.event(reporter.sampler.sample())
    schema = load_catalogue(PlatformSettings().schemas_dir).value_schema(Topic.SYSTEM_METRICS)
    assert validate(event, parse_schema(schema), raise_errors=True)
    assert (event["service"], event["instance_id"]) == ("probe", "probe-1")
    assert settings.system_metrics.key_of(event) == "probe"


def test_without_proc_the_service_runs_without_resource_summaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_proc(*_args: object, **_kwargs: object) -> SystemSampler:
        raise ContractError("cannot read /proc/self/stat")

    monkeypatch.setattr("mlops_platform.sysmetrics.SystemSampler", no_proc)
    reporter = SystemMetricsReporter(ServiceSettings(service_name="probe"), producer=None)  # type: ignore[arg-type,unused-ignore]
    assert reporter.sampler is None
    reporter.start()  # nothing to start
    reporter.stop()
    with pytest.raises(ContractError, match="no system sampler"):
        reporter.report()


class DataSettings(ServiceSettings):
    """A service that keeps data in a directory (like the drift detector's reports)."""

    data_dir: Path = Path("/")

    def data_path(self) -> Path:
        return self.data_dir


class CapturingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[object, dict[str, object]]] = []

    def produce(self, target: object, value: dict[str, object]) -> None:
        self.sent.append((target, value))


def test_a_report_publishes_the_event_and_sets_the_gauges(tmp_path: Path) -> None:
    settings = DataSettings(service_name="keeper", instance_id="k-1", data_dir=tmp_path)
    producer = CapturingProducer()
    reporter = SystemMetricsReporter(settings, producer)  # type: ignore[arg-type,unused-ignore]
    sample = reporter.report()
    [(binding, event)] = producer.sent
    assert binding == settings.system_metrics
    assert event["disk_path"] == str(tmp_path)
    free = REGISTRY.get_sample_value(
        "mlops_data_dir_free_bytes", {"service": "keeper", "path": str(tmp_path)}
    )
    assert free == sample.disk_free_bytes > 0
    assert REGISTRY.get_sample_value("mlops_process_threads", {"service": "keeper"}) == sample.process_threads
