"""Evidently drift reports, generated off the hot path and kept on disk.

The consumer thread only *requests* a report: it snapshots the window's raw values and
hands a job to :class:`ReportWorker`, whose dispatcher thread runs the Evidently
``DataDriftPreset`` (with its tests, PSI as the stat test, the service's drift
threshold) in a separate process by default, so the CPU-heavy rendering never competes
with the stream for the GIL. The queue is bounded: when it is full the new report is
recorded as ``dropped`` instead of piling up work.

Each report is ``<id>.html`` (Evidently's self-contained page with a short summary of
the streaming PSI on top) and ``<id>.json`` (metadata, also what ``GET /reports`` lists);
only the newest ``keep`` reports stay on disk.

The report id, and so its URL, exists before the HTML does: a drift event carries the
URL of a report that is still being written (``GET /reports/{id}`` answers 202 until it is
ready). This keeps the event off the critical path of a multi-second rendering.
"""

from __future__ import annotations

import html
import json
import math
import multiprocessing
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlops_platform.logs import get_logger

log = get_logger(__name__)

Status = Literal["pending", "ready", "failed", "dropped"]

#: Features that are category codes or flags: Evidently compares them as categories.
CATEGORICAL_COLUMNS = frozenset(
    {
        "merchant_category",
        "channel",
        "device_type",
        "country",
        "card_present",
        "is_new_device",
        "is_foreign",
        "is_night",
        "is_weekend",
    }
)


@dataclass
class ReportMeta:
    id: str
    url: str
    created_at: str
    status: Status
    reason: str
    model_name: str
    model_version: str
    drift_type: str
    state: str
    severity: str | None
    drift_score: float
    window_start_ms: int
    window_end_ms: int
    window_size: int
    affected_features: list[str]
    feature_psi: dict[str, float]
    psi_threshold: float
    generation_seconds: float | None = None
    evidently_drifted_columns: list[str] = field(default_factory=list)
    evidently_tests_failed: int | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["feature_psi"] = {k: round(v, 6) for k, v in self.feature_psi.items()}
        return data


@dataclass
class ReportJob:
    meta: ReportMeta
    columns: list[str]
    current: np.ndarray
    reference: np.ndarray
    path: Path


class ReportStore:
    """Report metadata in memory, mirrored to ``<dir>/<id>.json`` next to the HTML."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._reports: OrderedDict[str, ReportMeta] = OrderedDict()
        self._load()

    def html_path(self, report_id: str) -> Path:
        return self.directory / f"{report_id}.html"

    def add(self, meta: ReportMeta) -> None:
        with self._lock:
            self._reports[meta.id] = meta
            self._save(meta)
            while len(self._reports) > self.keep:
                old_id, _ = self._reports.popitem(last=False)
                for suffix in (".html", ".json"):
                    (self.directory / f"{old_id}{suffix}").unlink(missing_ok=True)

    def update(self, report_id: str, **changes: Any) -> None:
        with self._lock:
            meta = self._reports.get(report_id)
            if meta is None:
                return
            for key, value in changes.items():
                setattr(meta, key, value)
            self._save(meta)

    def get(self, report_id: str) -> ReportMeta | None:
        with self._lock:
            return self._reports.get(report_id)

    def list(self) -> list[ReportMeta]:
        with self._lock:
            return list(reversed(self._reports.values()))

    def _save(self, meta: ReportMeta) -> None:
        path = self.directory / f"{meta.id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta.public(), default=_json_default))
        os.replace(tmp, path)

    def _load(self) -> None:
        metas = []
        for path in self.directory.glob("*.json"):
            try:
                data = json.loads(path.read_text())
                meta = ReportMeta(**data)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("report_metadata_unreadable", path=str(path), error=str(exc))
                continue
            if meta.status == "pending":  # the process stopped before writing it
                meta.status, meta.error = "failed", "service stopped before the report was written"
            metas.append(meta)
        for meta in sorted(metas, key=lambda m: m.created_at)[-self.keep :]:
            self._reports[meta.id] = meta


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def new_report_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- rendering (worker side)


def _pandas_compat() -> None:
    """Evidently 0.7 imports a helper that pandas 3 removed; provide it before importing evidently.

    Only evidently's legacy column-type test calls it (not the drift preset used here).
    """
    import numpy
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):

        def infer_dtype_from_object(dtype: Any) -> type:
            if isinstance(dtype, type) and issubclass(dtype, numpy.generic):
                return dtype
            return common.pandas_dtype(dtype).type

        common.infer_dtype_from_object = infer_dtype_from_object  # type: ignore[attr-defined]


def warm_up() -> str:
    """Import Evidently in the worker (several seconds) before the first report needs it."""
    _pandas_compat()
    import evidently

    return str(evidently.__version__)


def render_report(job: ReportJob) -> dict[str, Any]:
    """Run Evidently on the job's window vs reference and write the HTML; returns findings."""
    started = time.perf_counter()
    _pandas_compat()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = job.columns
    current = pd.DataFrame(job.current, columns=columns)
    reference = pd.DataFrame(job.reference, columns=columns)
    categorical = [c for c in columns if c in CATEGORICAL_COLUMNS]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in CATEGORICAL_COLUMNS],
        categorical_columns=categorical,
    )
    threshold = job.meta.psi_threshold
    report = Report([DataDriftPreset(method="psi", threshold=threshold)], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    drifted: list[str] = []
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith("ValueDrift"):
            value = float(metric.get("value", 0.0))
            if value >= threshold:
                drifted.append(str(config.get("column")))
    failed = sum(1 for t in snapshot.dict()["tests"] if str(t.get("status")).endswith("FAIL"))
    page = _with_summary(snapshot.get_html_str(as_iframe=False), job.meta, drifted)
    tmp = job.path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, job.path)
    return {
        "evidently_drifted_columns": drifted,
        "evidently_tests_failed": failed,
        "generation_seconds": time.perf_counter() - started,
    }


def _with_summary(page: str, meta: ReportMeta, evidently_drifted: list[str]) -> str:
    """Put a short summary of the streaming PSI at the top of Evidently's page."""
    start = datetime.fromtimestamp(meta.window_start_ms / 1000, UTC).isoformat()
    end = datetime.fromtimestamp(meta.window_end_ms / 1000, UTC).isoformat()
    rows = "".join(
        f"<tr class='{'drift' if name in meta.affected_features else ''}'>"
        f"<td>{html.escape(name)}</td><td>{value:.4f}</td>"
        f"<td>{'drift' if name in meta.affected_features else ''}</td></tr>"
        for name, value in sorted(meta.feature_psi.items(), key=lambda kv: -kv[1])
    )
    affected = ", ".join(html.escape(f) for f in meta.affected_features) or "none"
    summary = f"""
<section id="drift-detector-summary"
  style="font-family:sans-serif;margin:16px;padding:12px;border:1px solid #ccc">
  <h2>Drift report {html.escape(meta.id)}</h2>
  <p>Model <b>{html.escape(meta.model_name)}</b> v{html.escape(meta.model_version)} &middot;
     window of {meta.window_size} predictions, {start} to {end} &middot;
     state <b>{html.escape(meta.state)}</b>, severity <b>{html.escape(meta.severity or "-")}</b>,
     drift score {meta.drift_score:.3f}</p>
  <p>Drifted features (streaming PSI &gt; {meta.psi_threshold}):
     <b id="drifted-features">{affected}</b></p>
  <p>Evidently (PSI, its own binning) finds drift in:
     <b id="evidently-drifted">{", ".join(html.escape(c) for c in evidently_drifted) or "none"}</b></p>
  <details><summary>Streaming PSI per feature</summary>
  <table id="streaming-psi"><tr><th>feature</th><th>PSI</th><th></th></tr>{rows}</table></details>
</section>"""
    body = page.find("<body")
    if body < 0:
        return summary + page
    close = page.find(">", body) + 1
    return page[:close] + summary + page[close:]


# --------------------------------------------------------------------------- worker (service side)


class ReportWorker:
    """Bounded queue + dispatcher thread + one rendering process (or thread)."""

    def __init__(
        self,
        store: ReportStore,
        executor: Literal["process", "thread"] = "process",
        queue_size: int = 4,
        observe: Callable[[float, str], None] | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        self.store = store
        self.kind = executor
        self.queue: queue.Queue[ReportJob | None] = queue.Queue(maxsize=queue_size)
        self.observe = observe
        self.timeout_s = timeout_s
        self._executor: Executor | None = None
        self._thread: threading.Thread | None = None
        self.evidently_version: str | None = None

    def start(self) -> None:
        self._executor = self._new_executor()
        self._executor.submit(warm_up).add_done_callback(self._warmed)
        self._thread = threading.Thread(target=self._run, name="report-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self.queue.put(None, timeout=1)
            except queue.Full:
                pass
            self._thread.join(timeout=10)
        if self._executor is not None:
            # Waits for a report being written (queued ones are cancelled).
            self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: ReportJob) -> bool:
        """Queue a report; ``False`` (and status ``dropped``) when the queue is full."""
        self.store.add(job.meta)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.store.update(job.meta.id, status="dropped", error="report queue full")
            if self.observe:
                self.observe(0.0, "dropped")
            return False
        return True

    def _new_executor(self) -> Executor:
        if self.kind == "process":
            # spawn: the service has Kafka threads, which must not be forked.
            return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-render")

    def _warmed(self, future: Any) -> None:
        try:
            self.evidently_version = future.result()
        except Exception as exc:
            log.warning("report_worker_warm_up_failed", error=repr(exc))

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            self._render(job)

    def _render(self, job: ReportJob) -> None:
        assert self._executor is not None
        started = time.perf_counter()
        try:
            result = self._executor.submit(render_report, job).result(timeout=self.timeout_s)
        except BrokenProcessPool as exc:
            log.error("report_process_died", report=job.meta.id, error=repr(exc))
            self._executor = self._new_executor()
            self._fail(job, f"report process died: {exc}", started)
            return
        except Exception as exc:
            log.warning("report_failed", report=job.meta.id, error=repr(exc))
            self._fail(job, f"{type(exc).__name__}: {exc}", started)
            return
        self.store.update(job.meta.id, status="ready", **result)
        if self.observe:
            self.observe(float(result["generation_seconds"]), "ready")
        log.info(
            "report_ready",
            report=job.meta.id,
            seconds=round(time.perf_counter() - started, 2),
            evidently_drifted=result["evidently_drifted_columns"],
        )

    def _fail(self, job: ReportJob, error: str, started: float) -> None:
        self.store.update(job.meta.id, status="failed", error=error)
        if self.observe:
            self.observe(time.perf_counter() - started, "failed")
