"""Resource usage of the service process and its host, read from ``/proc``, and the
``system.metrics`` events every service publishes beside its heartbeat.

psutil is not a dependency of the platform and Linux exposes everything needed as text
under ``/proc``; reading it directly costs a few small file reads per sample. The root is
a parameter so tests can point the sampler at a fake ``/proc``.

CPU percentages are averaged between two samples: the first sample after start covers
the time since the sampler was created.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mlops_platform.contracts import make_event
from mlops_platform.errors import ContractError
from mlops_platform.kafka import EventProducer
from mlops_platform.logs import get_logger
from mlops_platform.metrics import platform_metrics
from mlops_platform.settings import ServiceSettings

log = get_logger(__name__)

# Fields of /proc/<pid>/stat after the command name (which may contain spaces and ')'):
# index 0 is field 3 (state), so utime (14) is 11, stime (15) is 12, num_threads (20) is 17,
# rss (24, in pages) is 21.
_UTIME, _STIME, _THREADS, _RSS = 11, 12, 17, 21


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU seconds: of the process, and of the host (busy and total)."""

    process_s: float
    host_busy: float
    host_total: float


@dataclass(frozen=True)
class SystemSample:
    """One sample: the ``system.metrics`` fields that describe resources (no identity)."""

    interval_s: float
    process_cpu_percent: float
    process_rss_bytes: int
    process_threads: int
    process_open_fds: int
    host_cpus: int
    host_cpu_percent: float
    host_memory_total_bytes: int
    host_memory_used_percent: float
    disk_path: str
    disk_total_bytes: int
    disk_used_percent: float
    disk_free_bytes: int
    load1: float
    load5: float
    load15: float

    def payload(self) -> dict[str, float | int | str]:
        """The resource fields of a ``system.metrics`` event (disk_free_bytes is for the gauge only)."""
        fields: dict[str, float | int | str] = asdict(self)
        fields.pop("disk_free_bytes")
        return fields


def _meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes per key (values are in kB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a data directory may not be created yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


class SystemSampler:
    """Samples the current process and its host from ``proc_root`` (``/proc`` by default).

    ``disk_path`` names the directory whose file system is reported (a service's data
    directory, else ``/``). Not thread-safe: one sampler per publishing thread.
    """

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        disk_path: Path = Path("/"),
        *,
        pid: str = "self",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc = Path(proc_root)
        self.disk_path = Path(disk_path)
        self.pid = pid
        self.clock = clock
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._last_at = clock()
        self._last = self._cpu_times()

    def _read(self, *parts: str) -> str:
        path = self.proc.joinpath(*parts)
        try:
            return path.read_text()
        except OSError as exc:
            raise ContractError(f"cannot read {path}: {exc}") from exc

    def _stat_fields(self) -> list[str]:
        text = self._read(self.pid, "stat")
        return text[text.rindex(")") + 2 :].split()

    def _cpu_times(self) -> CpuTimes:
        fields = self._stat_fields()
        process_s = (int(fields[_UTIME]) + int(fields[_STIME])) / self._ticks
        # First line of /proc/stat: cpu user nice system idle iowait irq softirq steal guest guest_nice.
        # guest time is already inside user, so only the first eight are summed.
        cpu = [int(v) for v in self._read("stat").splitlines()[0].split()[1:9]]
        total = float(sum(cpu))
        idle = float(cpu[3] + (cpu[4] if len(cpu) > 4 else 0))
        return CpuTimes(process_s, total - idle, total)

    def _open_fds(self) -> int:
        try:
            return len(os.listdir(self.proc / self.pid / "fd"))
        except OSError:
            return -1  # e.g. a hardened /proc: the other figures still count

    def sample(self) -> SystemSample:
        """Take a sample; CPU percentages cover the time since the previous one."""
        now, times = self.clock(), self._cpu_times()
        elapsed = max(now - self._last_at, 1e-9)
        host_total = times.host_total - self._last.host_total
        host_busy = times.host_busy - self._last.host_busy
        process_cpu = 100.0 * (times.process_s - self._last.process_s) / elapsed
        self._last_at, self._last = now, times

        fields = self._stat_fields()
        memory = _meminfo(self._read("meminfo"))
        mem_total = memory.get("MemTotal", 0)
        mem_available = memory.get("MemAvailable", memory.get("MemFree", 0))
        loads = [float(v) for v in self._read("loadavg").split()[:3]]
        disk = shutil.disk_usage(_existing(self.disk_path))
        return SystemSample(
            interval_s=elapsed,
            process_cpu_percent=max(process_cpu, 0.0),
            process_rss_bytes=int(fields[_RSS]) * self._page,
            process_threads=int(fields[_THREADS]),
            process_open_fds=self._open_fds(),
            host_cpus=os.cpu_count() or 1,
            host_cpu_percent=100.0 * host_busy / host_total if host_total > 0 else 0.0,
            host_memory_total_bytes=mem_total,
            host_memory_used_percent=100.0 * (1 - mem_available / mem_total) if mem_total else 0.0,
            disk_path=str(self.disk_path),
            disk_total_bytes=disk.total,
            disk_used_percent=100.0 * disk.used / disk.total if disk.total else 0.0,
            disk_free_bytes=disk.free,
            load1=loads[0],
            load5=loads[1],
            load15=loads[2],
        )


class SystemMetricsReporter:
    """Publishes a ``system.metrics`` event every ``settings.system_metrics_interval_s`` seconds.

    It also sets the gauges the default process collector of prometheus-client lacks
    (threads, free space of the data directory), so /metrics and the events agree.
    """

    def __init__(
        self, settings: ServiceSettings, producer: EventProducer, sampler: SystemSampler | None = None
    ) -> None:
        self.settings = settings
        self.producer = producer
        data_path = settings.data_path()
        self.sampler: SystemSampler | None = sampler
        if sampler is None:
            try:
                self.sampler = SystemSampler(disk_path=data_path if data_path is not None else Path("/"))
            except ContractError as exc:
                # No /proc (not Linux): the service runs, only without resource summaries.
                log.warning("system_metrics_unavailable", error=str(exc))
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-metrics", daemon=True)

    def start(self) -> None:
        if self.sampler is not None and self.settings.system_metrics_interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def event(self, sample: SystemSample) -> dict[str, object]:
        """The ``system.metrics`` event of a sample, for this service instance."""
        return make_event(
            self.settings.service_name,
            {
                "service": self.settings.service_name,
                "instance_id": self.settings.instance_id,
                "host": self.host,
                **sample.payload(),
            },
        )

    def report(self) -> SystemSample:
        """Sample, update the gauges and publish (best effort, like heartbeats)."""
        if self.sampler is None:
            raise ContractError("no system sampler: /proc could not be read at start")
        sample = self.sampler.sample()
        gauges = platform_metrics()
        service = self.settings.service_name
        gauges.process_threads.labels(service).set(sample.process_threads)
        if self.settings.data_path() is not None:
            gauges.data_dir_free_bytes.labels(service, sample.disk_path).set(sample.disk_free_bytes)
        # Keyed by the binding's key field (the service name), like the heartbeats.
        self.producer.produce(self.settings.system_metrics, self.event(sample))
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.settings.system_metrics_interval_s):
            try:
                self.report()
            except Exception as exc:  # a failed sample must not end the reporting
                log.warning("system_metrics_failed", error=str(exc))
