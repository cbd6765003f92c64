"""Settings of the drift detector, read from ``DRIFT_*`` environment variables.

Connection settings (Kafka, registry, MLflow) are the platform's un-prefixed variables.
Every threshold below is documented in the README with the reasoning behind its default.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic
from mlops_platform.settings import ServiceSettings

#: Metrics for which a live drop can be tested for significance in closed form.
DEGRADATION_METRICS = ("auc_roc", "recall", "precision")


def _default_reports_dir() -> Path:
    stack = os.environ.get("STACK_DIR")
    base = Path(stack) / "reports" if stack else Path(tempfile.gettempdir())
    return base / "drift-detector-reports"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFT_", extra="ignore", populate_by_name=True)

    service_name: str = "drift-detector"
    http_port: int = 8003

    # -- what is monitored
    model_name: str = Field("fraud_detector", description="Registered model whose predictions are monitored.")
    champion_refresh_s: float = Field(
        300.0, ge=0, description="Re-read @champion this often (0 = only on model.deployed)."
    )
    public_url: str | None = Field(
        None,
        description="Base URL people use to reach this service (report links); default http://host:port.",
    )

    # -- topics (catalogue names by default; a test or a replay can point them elsewhere)
    predictions_topic: str = Topic.PREDICTION_COMPLETED.value
    feedback_topic: str = Topic.PREDICTION_FEEDBACK.value
    deployments_topic: str = Topic.MODEL_DEPLOYED.value
    actions_topic: str = Topic.SYSTEM_ACTIONS.value
    drift_topic: str = Topic.DATA_DRIFT_DETECTED.value
    degraded_topic: str = Topic.MODEL_PERFORMANCE_DEGRADED.value
    evaluation_topic: str = Topic.MODEL_EVALUATION_COMPLETED.value
    batch_size: int = Field(500, ge=1, description="Records per consumer poll.")

    # -- durable state: snapshots committed with the input offsets (see the README's "State and restarts")
    state_topic: str = Field(
        "drift-detector-state",
        description="Compacted topic of the state snapshots (under the catalogue's internal_topic_prefix).",
    )
    state_interval_s: float = Field(
        5.0, gt=0, le=50, description="Commit (and snapshot) at most this often while records flow."
    )
    restore_reference_wait_s: float = Field(
        120.0, ge=0, description="After a restart, wait this long for the restored windows' reference."
    )

    # -- scale-out: several instances in one group (see the README's "Scale-out")
    scale_out: bool = Field(
        False,
        description=(
            "Run as one of several instances in one consumer group: predictions and labels are"
            " assigned by partition (range assignor, so a label meets its prediction), each instance"
            " publishes the PSI bin counts of what it consumed to partials_topic, and the instance"
            " that owns that topic's one partition adds them up and publishes the drift events."
            " Off: one instance judges its own windows (the default)."
        ),
    )
    partials_topic: str = Field(
        Topic.DRIFT_DETECTOR_PARTIALS.value,
        description="One-partition topic of the instances' partial bin counts (scale-out only).",
    )
    merge_bucket_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Scale-out: event-time bucket of the partial counts; a window is the fewest latest"
            " complete buckets holding window_size predictions, evaluated once window_step new ones arrived."
        ),
    )
    merge_lateness_s: float = Field(
        5.0,
        ge=0,
        description=(
            "Scale-out: a bucket is complete once every partition's predictions passed its end by this"
            " much (event time); a prediction later than that is counted in the oldest open bucket."
        ),
    )
    merge_idle_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Scale-out: a partition silent this long (wall clock: no predictions, or its instance"
            " gone before the group rebalanced) no longer holds complete buckets back."
        ),
    )

    # -- windows (counted in predictions)
    window_size: int = Field(5000, ge=50, description="Predictions per drift window.")
    window_step: int = Field(1000, ge=1, description="Predictions between two evaluations (sliding window).")
    min_window_size: int = Field(
        1000,
        ge=50,
        description="Floor of a 'monitor' action's window: PSI of n rows is biased by about (bins-1)/n.",
    )

    # -- PSI
    psi_bins: int = Field(10, ge=2, description="Quantile bins of continuous features.")
    psi_discrete_max_values: int = Field(
        30, ge=1, description="Up to this many values a feature is discrete."
    )
    psi_epsilon: float = Field(1e-4, gt=0, description="Floor of bin shares (keeps empty bins finite).")
    psi_watch: float = Field(0.1, gt=0, description="PSI from which a feature is 'watch' (below: stable).")
    psi_drift: float = Field(0.25, gt=0, description="PSI above which a feature is 'drift'.")
    prediction_drift: bool = Field(True, description="Also monitor the champion's fraud_probability PSI.")

    # -- target drift (label rate of the delayed labels vs the serving model's training rate)
    target_drift: bool = Field(True, description="Monitor the fraud label rate of the joined labels.")
    target_window: int = Field(2000, ge=50, description="Labels per target-drift window.")
    target_step: int = Field(500, ge=1, description="Labels between two target-drift evaluations.")
    # Tested every target_step labels on overlapping windows: a million stable labels are
    # two thousand tests, so a per-test 0.01 would raise about twenty false alarms. At 1e-5
    # the chance of one in a million labels stays near 2 %, while a real shift of the fraud
    # rate by more than about 60 % (drift starts at 50 %) is still significant in one window.
    target_alpha: float = Field(
        1e-5, gt=0, lt=1, description="Two-sided significance of a label-rate change, per evaluation."
    )
    target_watch_change: float = Field(0.25, gt=0, description="Relative label-rate change that is 'watch'.")
    target_drift_change: float = Field(0.5, gt=0, description="Relative label-rate change that is 'drift'.")
    target_score_scale: float = Field(
        2.0, gt=0, description="Relative label-rate change at which the target drift_score saturates at 1."
    )

    # -- severity of data drift (drift_score = max(min(1, max PSI / scale), share of drifted features))
    drift_score_psi_scale: float = Field(1.0, gt=0, description="PSI at which drift_score saturates at 1.")
    severity_critical_score: float = 0.8
    severity_critical_features: int = 5
    severity_high_score: float = 0.6
    severity_high_features: int = 3

    # -- event policy
    clear_windows: int = Field(2, ge=1, description="Consecutive calmer windows before the state lowers.")
    repeat_interval_s: float = Field(
        900.0, gt=0, description="While not stable, repeat the event at most this often (event time)."
    )
    publish_recovery: bool = Field(True, description="Publish state=stable when a drift/watch period ends.")

    # -- Evidently reports
    reports_dir: Path = Field(default_factory=_default_reports_dir)
    reports_keep: int = Field(30, ge=1, description="Reports kept on disk (oldest deleted first).")
    report_executor: Literal["process", "thread"] = "process"
    report_min_interval_s: float = Field(
        0.0, ge=0, description="A drift event within this time of the last report links that report."
    )
    report_periodic_s: float = Field(
        0.0, ge=0, description="Also report the latest window this often; 0 = off."
    )
    report_queue: int = Field(4, ge=1, description="Reports waiting for the worker at most.")

    # -- label join
    label_ttl_s: float = Field(6 * 3600.0, gt=0, description="How long a prediction waits for its label.")
    max_pending: int = Field(200_000, ge=1, description="Predictions waiting for a label, at most.")
    max_orphans: int = Field(
        50_000, ge=1, description="Labels that arrived before their prediction, at most."
    )

    # -- live quality
    quality_window: int = Field(10_000, ge=10, description="Latest labelled predictions per version/arm.")
    quality_eval_every: int = Field(250, ge=1, description="New labels per version/arm between evaluations.")
    max_labelled_per_group: int = Field(
        500_000, ge=1000, description="Labelled samples kept per version/arm."
    )
    default_threshold: float = Field(0.18, gt=0, lt=1, description="If a version has no stored threshold.")
    fn_cost: float = 100.0
    fp_cost: float = 1.0

    # -- degradation of the champion against its training baseline (val_* metrics)
    min_labelled_samples: int = Field(2000, ge=1)
    min_labelled_positives: int = Field(30, ge=1)
    degradation_metrics: list[str] = Field(default_factory=lambda: ["auc_roc", "recall"])
    degradation_margin: float = Field(0.05, ge=0, lt=1, description="Relative drop that counts (0.05 = 5 %).")
    degradation_alpha: float = Field(0.05, gt=0, lt=1, description="One-sided significance of the drop.")

    # -- A/B evaluation
    ab_min_samples: int = Field(2000, ge=10, description="Labelled samples per arm before comparing.")
    ab_min_positives: int = Field(20, ge=1, description="Labelled frauds per arm before comparing.")
    ab_alpha: float = Field(0.05, gt=0, lt=1)
    ab_reevaluate_factor: float = Field(
        2.0, gt=1, description="Evaluate a pair again once both arms have this many times more samples."
    )

    @field_validator("degradation_metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DEGRADATION_METRICS))
        if unknown:
            raise ValueError(f"unsupported degradation metrics {unknown}; choose from {DEGRADATION_METRICS}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.psi_watch >= self.psi_drift:
            raise ValueError("psi_watch must be below psi_drift")
        if self.window_step > self.window_size:
            raise ValueError("window_step must not exceed window_size")
        if self.target_watch_change >= self.target_drift_change:
            raise ValueError("target_watch_change must be below target_drift_change")
        if self.target_step > self.target_window:
            raise ValueError("target_step must not exceed target_window")
        # A small configured window is its own floor.
        self.min_window_size = min(self.min_window_size, self.window_size)
        return self

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}"

    # -- bindings: each configured topic tied to its catalogue contract (and the key of what is produced)

    @property
    def predictions(self) -> Binding:
        return Binding.to(Topic.PREDICTION_COMPLETED, self.predictions_topic)

    @property
    def feedback(self) -> Binding:
        return Binding.to(Topic.PREDICTION_FEEDBACK, self.feedback_topic)

    @property
    def deployments(self) -> Binding:
        return Binding.to(Topic.MODEL_DEPLOYED, self.deployments_topic)

    @property
    def actions(self) -> Binding:
        return Binding.to(Topic.SYSTEM_ACTIONS, self.actions_topic)

    @property
    def partials(self) -> Binding:
        """Partial bin counts between the instances (scale-out); one partition, no key."""
        return Binding.to(Topic.DRIFT_DETECTOR_PARTIALS, self.partials_topic)

    @property
    def merge_group(self) -> str:
        """Scale-out: the group whose one member (the owner of the partials partition) merges."""
        return f"{self.consumer_group}-merge"

    @property
    def deployments_group(self) -> str:
        """Scale-out: each instance's own group on ``model.deployed`` (every instance re-reads @champion)."""
        return f"{self.consumer_group}-deployments-{self.instance_id}"

    # Every output event is about the monitored model, and keyed by its name.
    @property
    def drift(self) -> Binding:
        return Binding.to(Topic.DATA_DRIFT_DETECTED, self.drift_topic, key="model_name")

    @property
    def degraded(self) -> Binding:
        return Binding.to(Topic.MODEL_PERFORMANCE_DEGRADED, self.degraded_topic, key="model_name")

    @property
    def evaluation(self) -> Binding:
        return Binding.to(Topic.MODEL_EVALUATION_COMPLETED, self.evaluation_topic, key="model_name")

    def data_path(self) -> Path:
        """Evidently reports are written here (its disk space is reported)."""
        return self.reports_dir

    def inputs(self) -> list[Binding]:
        """What the one stream loop of a single instance reads (scale-out splits it, see the service)."""
        return [self.predictions, self.feedback, self.deployments, self.actions]

    def bindings(self) -> ServiceBindings:
        """Predictions, labels, deployments, actions in; drift, degradation, A/B verdicts, heartbeats out.

        The partial counts are both read and written (scale-out only; the catalogue lists them always).
        """
        return ServiceBindings.of(
            consumes=[*self.inputs(), self.partials],
            produces=[
                self.drift,
                self.degraded,
                self.evaluation,
                self.partials,
                self.heartbeats,
                self.system_metrics,
            ],
        )
