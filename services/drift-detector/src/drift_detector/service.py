"""The drift-detector process, wired once: runtime, registry lookups, report worker, detector, stream loop.

One exactly-once stream loop reads the four input bindings and hands every batch to
:meth:`DriftDetector.handle <drift_detector.detector.DriftDetector.handle>`, which
emits its events into the loop's outbox; the detector's state is checkpointed to
``settings.state_topic`` in the same transactions (the detector is the loop's
:class:`~mlops_platform.kafka.Stateful` owner), and restored before consuming.
MLflow lookups (champion, thresholds, baselines, reference samples) run in the
:class:`~drift_detector.models.ModelInfoCache` thread and Evidently reports in the
:class:`~drift_detector.reports.ReportWorker`, so the stream never waits for either.
Readiness adds the champion's reference being loaded and the report worker being
alive to the platform's checks.

With ``DRIFT_SCALE_OUT`` there are three loops instead of one (:meth:`DriftDetectorService._scale_out`):
predictions and labels by partition, the merge of the instances' partial histograms
(:mod:`drift_detector.merge`), and this instance's own view of ``model.deployed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.detector import DriftDetector
from drift_detector.merge import MERGER_STATE_INSTANCE, MergeHandler
from drift_detector.models import ModelInfoCache, RegistryClient
from drift_detector.reports import ReportStore, ReportWorker
from drift_detector.scaleout import PartialCollector
from mlops_platform.bindings import Binding
from mlops_platform.errors import KafkaUnavailable
from mlops_platform.health import CheckResult
from mlops_platform.kafka import (
    Guarantee,
    Outbox,
    Record,
    StateTopic,
    StreamLoop,
    group_members,
    state_key,
)
from mlops_platform.service import ServiceRuntime


def _observe_report(seconds: float, status: str) -> None:
    m.REPORTS.labels(status).inc()
    if status == "ready":
        m.REPORT_SECONDS.observe(seconds)


class DriftDetectorService:
    """Composition root of the drift detector; ``runtime.lifespan`` starts and stops everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One line per readiness probe from the HTTP clients drowns the service's own logs.
        for noisy in ("httpx", "httpx2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.runtime = ServiceRuntime(settings)
        self.reports = ReportStore(settings.reports_dir, settings.reports_keep)
        self.worker = ReportWorker(
            self.reports, settings.report_executor, settings.report_queue, observe=_observe_report
        )
        self.registry = ModelInfoCache(
            lambda: RegistryClient(settings.mlflow_tracking_uri, settings.model_name),
            champion_refresh_s=settings.champion_refresh_s,
        )
        self.detector = DriftDetector(settings, registry=self.registry, reports=self.worker)
        self.registry.on_change = self.detector.sync
        self.merge: MergeHandler | None = None
        self._partitions: int | None = None
        if settings.scale_out:
            self._scale_out()
        else:
            self.loop: StreamLoop = self._detector_loop(settings.inputs())
            self._sole_instance = CheckResult(True, "not checked yet")
            self._sole_checked_at = -float("inf")
            self._admin: AdminClient | None = None
            self.runtime.checks["sole_instance"] = self.sole_instance_check
        self.runtime.on_start(self.start)
        self.runtime.on_stop(self.stop)
        self.runtime.checks["reference"] = self.reference_check
        self.runtime.checks["report_worker"] = self.report_check

    def _detector_loop(
        self, inputs: Sequence[Binding], consumer_overrides: Mapping[str, Any] | None = None
    ) -> StreamLoop:
        """The exactly-once loop of the detector, its state checkpointed with the offsets."""
        settings = self.settings
        return self.runtime.stream(
            inputs=inputs,
            handler=self.detector.handle,
            guarantee=Guarantee.EXACTLY_ONCE,
            batch_size=settings.batch_size,
            state=self.detector,
            state_topic=settings.state_topic,
            state_interval_s=settings.state_interval_s,
            consumer_overrides=consumer_overrides,
        )

    def _scale_out(self) -> None:
        """Three loops instead of one (see the README's "Scale-out").

        * predictions and labels, in the service's group with the range assignor: partition p
          of both topics goes to the same member, so a label meets its prediction; the
          detector sends partials instead of judging its own windows;
        * the partials, deployments and actions (one partition each), in the merge group, also
          by range: one member gets all three and is the merger; its state is checkpointed
          under one key for every instance, so whoever merges next continues from it;
        * deployments again, in a group of this instance's own, so every instance re-reads
          ``@champion`` (and bins with the new reference) when an alias moves.
        """
        settings, runtime = self.settings, self.runtime
        by_range = {"partition.assignment.strategy": "range"}
        self.detector.partials = PartialCollector(round(settings.merge_bucket_s * 1000))
        self.detector.partition_count = self._partition_count
        self.detector.owns_first_partition = self._owns_first_partition
        self.loop = self._detector_loop([settings.predictions, settings.feedback], by_range)
        merge_state = StateTopic(
            settings, settings.state_topic, state_key(settings.merge_group, MERGER_STATE_INSTANCE)
        )
        self.merge = MergeHandler(
            settings,
            registry=self.registry,
            load_committed=lambda: merge_state.load(settings.merge_group),
            committed_offsets=self._merge_committed,
        )
        self.detector.merge = self.merge
        self.merge_loop: StreamLoop = runtime.stream(
            inputs=[settings.partials, settings.deployments, settings.actions],
            handler=self.merge.handle,
            guarantee=Guarantee.EXACTLY_ONCE,
            group_id=settings.merge_group,
            transactional_id=f"{settings.service_name}-{settings.instance_id}-merge",
            batch_size=settings.batch_size,
            state=self.merge,
            state_topic=settings.state_topic,
            state_interval_s=settings.state_interval_s,
            instance_id=MERGER_STATE_INSTANCE,
            consumer_overrides=by_range,
        )
        runtime.stream(
            inputs=[settings.deployments],
            handler=self._on_deployments,
            group_id=settings.deployments_group,
        )
        merge = self.merge

        def synced() -> None:
            self.detector.sync()
            merge.sync()

        self.registry.on_change = synced

    def _partition_count(self) -> int:
        """Partitions of the predictions topic (asked once; on the prediction loop's thread)."""
        if self._partitions is None:
            topic = self.settings.predictions_topic
            try:
                meta = self.loop.consumer.kafka.list_topics(topic, timeout=self.settings.request_timeout_s)
            except KafkaException as exc:
                raise KafkaUnavailable(f"cannot read the partitions of {topic}: {exc}") from exc
            found = meta.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise KafkaUnavailable(f"cannot read the partitions of {topic}")
            self._partitions = len(found.partitions)
        return self._partitions

    def _owns_first_partition(self) -> bool:
        """Whether partition 0 of the predictions topic is ours now (on the prediction loop's thread)."""
        topic = self.settings.predictions_topic
        return any(tp.topic == topic and tp.partition == 0 for tp in self.loop.consumer.kafka.assignment())

    def _merge_committed(self, topics: Sequence[str]) -> dict[str, int]:
        """The merge group's committed offsets of ``topics`` (on the merge loop's thread)."""
        try:
            found = self.merge_loop.consumer.kafka.committed(
                [TopicPartition(topic, 0) for topic in topics], timeout=self.settings.request_timeout_s * 2
            )
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read the merge group's offsets: {exc}") from exc
        return {tp.topic: tp.offset for tp in found}

    def _on_deployments(self, records: list[Record], _outbox: Outbox) -> None:
        """This instance's own view of ``model.deployed``: re-read ``@champion``, remember the deployment."""
        for record in records:
            if record.value.get("model_name") != self.settings.model_name:
                continue
            self.registry.want_champion()
            with self.detector.lock:
                self.detector.ab.on_deployed(record)

    def start(self) -> None:
        """Before the loop starts: registry lookups (the champion asked at once) and the report worker."""
        self.registry.start()
        self.registry.want_champion()
        self.worker.start()

    def stop(self) -> None:
        """After the loop stopped."""
        self.worker.stop()
        self.registry.stop()

    def reference_check(self) -> CheckResult:
        """Ready once the champion's reference is loaded (says why not: no champion, MLflow down, loading)."""
        settings, registry = self.settings, self.registry
        version = self.detector.reference_version
        if version is not None:
            return CheckResult(True, f"{settings.model_name} v{version}")
        if registry.champion_resolved and registry.champion is None:
            return CheckResult(False, f"{settings.model_name} has no @champion")
        return CheckResult(False, registry.last_error or "loading the champion's reference from MLflow")

    def sole_instance_check(self) -> CheckResult:
        """Not ready when another instance shares the group without ``DRIFT_SCALE_OUT``.

        Each would judge windows of only its own partitions: wrong PSI, events missed or
        doubled. Asked of the broker at most every 15 s (readiness probes come more often).
        """
        now = time.monotonic()
        if now - self._sole_checked_at < 15:
            return self._sole_instance
        self._sole_checked_at = now
        group = self.settings.consumer_group
        if self._admin is None:
            self._admin = AdminClient(self.settings.admin_config())
        try:
            members = group_members(self._admin, group)
        except (KafkaException, TimeoutError) as exc:
            # Kafka's own check reports the outage; this one only knows it could not look.
            self._sole_instance = CheckResult(True, f"group membership unknown: {exc}")
            return self._sole_instance
        if members > 1:
            self._sole_instance = CheckResult(
                False,
                f"{members} members in group {group}: two live instances would each judge only their "
                "partitions' windows, so run every instance with DRIFT_SCALE_OUT=true; a crashed "
                "predecessor stays a member until its session times out, then this clears",
            )
        else:
            self._sole_instance = CheckResult(True, f"sole member of {group}")
        return self._sole_instance

    def report_check(self) -> CheckResult:
        return CheckResult(
            self.worker.alive, f"{self.settings.report_executor} worker, dir {self.settings.reports_dir}"
        )
