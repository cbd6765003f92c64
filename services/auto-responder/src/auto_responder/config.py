"""Settings of the auto-responder (environment variables prefixed ``RESPONDER_``).

Connection settings (``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL``,
``MLFLOW_TRACKING_URI``, ...) are the platform's un-prefixed ones; see
:class:`mlops_platform.settings.PlatformSettings`. Dict and list fields are read as JSON,
e.g. ``RESPONDER_COOLDOWNS_S='{"retrain": 600}'``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic
from mlops_platform.settings import ServiceSettings

#: Cooldown per action (seconds), applied per (event type, action): MISSION.md's policy table.
DEFAULT_COOLDOWNS_S: dict[str, float] = {
    "retrain": 60 * 60.0,
    "rollback": 30 * 60.0,
    "scale": 10 * 60.0,
    "scale_down": 10 * 60.0,
    "alert": 5 * 60.0,
    "monitor": 2 * 60.0,
    "promote": 0.0,
}


def default_scale_command() -> list[str]:
    """``python -m constellation stack scale {service} {instances}`` where the operator package is installed.

    In docker compose there is no local stack: the responder only publishes
    ``system.scale.requested`` and scaling is ``docker compose up -d --scale predictor=N``.
    """
    if importlib.util.find_spec("constellation") is None:
        return []
    return [sys.executable, "-m", "constellation", "stack", "scale", "{service}", "{instances}"]


class Settings(ServiceSettings):
    """What the auto-responder reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="RESPONDER_", extra="ignore", populate_by_name=True)

    service_name: str = "auto-responder"
    http_port: int = 8004

    # -- what it manages
    model_name: str = Field("fraud_detector", description="Registered MLflow model this responder acts on.")
    rules_file: Path | None = Field(
        None, description="Rule table (YAML); defaults to the rules.yaml shipped in the package."
    )

    # -- topics (overridable so tests can use private topics carrying the same contracts)
    drift_topic: str = Topic.DATA_DRIFT_DETECTED.value
    degraded_topic: str = Topic.MODEL_PERFORMANCE_DEGRADED.value
    evaluation_topic: str = Topic.MODEL_EVALUATION_COMPLETED.value
    health_topic: str = Topic.SYSTEM_HEALTH.value
    alerts_topic: str = Field(
        Topic.SYSTEM_ALERTS.value, description="Read for Prometheus alerts (latency, overload); written to."
    )
    actions_topic: str = Field(
        Topic.SYSTEM_ACTIONS.value, description="Decision log: written, and replayed at start."
    )
    request_topic: str = Field(Topic.PREDICTION_REQUEST.value, description="Retraining features.")
    feedback_topic: str = Field(Topic.PREDICTION_FEEDBACK.value, description="Retraining labels.")

    # -- policies
    cooldowns_s: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_COOLDOWNS_S),
        description="Cooldown per action in seconds, applied per (event type, action).",
    )
    dampening_max_responses: int = Field(
        3, ge=0, description="More responses than this to one event type within the window: monitor only."
    )
    dampening_window_s: float = Field(3600.0, gt=0)
    quiet_hours_enabled: bool = Field(False, description="Retrain/rollback become alerts in quiet hours.")
    quiet_hours_start: int = Field(22, ge=0, le=23, description="First quiet hour (local time).")
    quiet_hours_end: int = Field(6, ge=0, le=23, description="First hour after the quiet period.")
    quiet_hours_timezone: str = Field("UTC", description="IANA time zone of the quiet hours.")
    max_trigger_age_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="Trigger events older than this are stale and ignored (e.g. a fresh consumer group).",
    )

    # -- history
    history_lookback_s: float = Field(
        7 * 86400.0, ge=0, description="How far back system.actions is replayed at start."
    )
    history_max: int = Field(5000, ge=100, description="Decision records kept in memory (GET /actions).")
    replay_timeout_s: float = Field(120.0, gt=0, description="Start fails if the replay cannot finish.")

    # -- retrain
    retrain_window_s: float = Field(
        2 * 3600.0, gt=0, description="Recent labelled data used for retraining (event time)."
    )
    retrain_settle_s: float = Field(
        0.0,
        ge=0,
        description="Wait before reading the training data, so labels of the new regime (which arrive late) "
        "are in the window; 0 reads at once.",
    )
    retrain_max_window_s: float = Field(
        24 * 3600.0, gt=0, description="Fallback window when the recent one holds too few labelled rows."
    )
    retrain_min_rows: int = Field(2000, ge=20, description="Fewest labelled rows a retrain accepts.")
    retrain_min_positives: int = Field(20, ge=10, description="Fewest fraud labels a retrain accepts.")
    retrain_max_rows: int = Field(200_000, ge=100, description="Most recent labelled rows used.")
    retrain_min_auc: float = Field(0.85, ge=0, le=1, description="Validation AUC a challenger needs.")
    retrain_read_timeout_s: float = Field(300.0, gt=0, description="Reading the data window gives up after.")
    training_experiment: str = "fraud_detection"
    retrain_search_trials: int = Field(
        4,
        ge=0,
        description="Optuna trials of the retrain's hyper-parameter search (nested MLflow runs); "
        "0 = the fixed parameters only.",
    )
    retrain_search_timeout_s: float = Field(
        30.0,
        gt=0,
        description="The search starts no trial after this long (the fixed model is the fallback).",
    )

    # -- validation gate before an automatic promotion
    promote_gate_enabled: bool = Field(
        True,
        description="Before an automatic promote, score a recent labelled holdout with champion and "
        "challenger; promote only if the challenger is at least as good.",
    )
    promote_gate_window_s: float = Field(
        3600.0,
        gt=0,
        description="Holdout: labelled transactions of at most this long, and only those after the "
        "challenger was registered (never its training data).",
    )
    promote_gate_min_rows: int = Field(500, ge=10, description="Fewest holdout rows the gate judges on.")
    promote_gate_min_positives: int = Field(10, ge=1, description="Fewest holdout frauds the gate judges on.")
    promote_gate_cost_margin: float = Field(
        0.0,
        ge=0,
        description="The challenger's business cost (FN*fn_cost + FP*fp_cost) may exceed the champion's "
        "by this share at most (0 = no worse).",
    )
    promote_gate_auprc_margin: float = Field(
        0.01,
        ge=0,
        le=1,
        description="The challenger's AUPRC may be lower than the champion's by this much at most.",
    )
    promote_gate_insufficient: Literal["promote", "refuse"] = Field(
        "promote",
        description="Too little holdout (or none readable): promote on the A/B evaluation alone, or refuse.",
    )
    promote_gate_fn_cost: float = Field(100.0, ge=0, description="Cost of a missed fraud.")
    promote_gate_fp_cost: float = Field(1.0, ge=0, description="Cost of a false alarm.")

    # -- scale
    scale_service: str = Field("predictor", description="Service the scale action resizes.")
    scale_max_instances: int = Field(4, ge=1)
    scale_min_instances: int = Field(1, ge=1, description="Instances a scale_down returns the service to.")
    scale_command: list[str] = Field(
        default_factory=default_scale_command,
        description=(
            "argv run to scale ({service}, {instances} substituted); empty: only publish "
            "system.scale.requested (docker compose: `docker compose up -d --scale predictor=N`)."
        ),
    )
    scale_timeout_s: float = Field(300.0, gt=0)

    # -- monitor (contract with the drift-detector: details window_size, duration_s)
    monitor_window_size: int = Field(250, ge=10, description="Tighter drift window while monitoring.")
    monitor_duration_s: float = Field(1800.0, gt=0, description="How long the tighter window lasts.")

    # -- health
    heartbeat_timeout_s: float = Field(
        45.0, gt=0, description="A watched service silent this long has failed its health check."
    )
    health_check_interval_s: float = Field(2.0, gt=0, description="How often silence is checked.")
    availability_period_s: float = Field(
        3600.0,
        gt=0,
        description="Sliding period of the per-service availability (service_availability_ratio, /services).",
    )
    health_condition_repeat_s: float = Field(
        600.0, gt=0, description="A condition that persists is raised again after this long."
    )
    watched_services: list[str] | None = Field(
        None, description="Services whose heartbeats are watched (default: every service seen beating)."
    )
    overload_lag_messages: int = Field(
        5000, ge=1, description="Consumer lag of the scaled service that counts as overload (MEDIUM)."
    )
    overload_calm_lag_messages: int = Field(
        500,
        ge=0,
        description="Summed consumer lag under which the scaled service counts as calm (overload passed).",
    )
    overload_calm_s: float = Field(
        300.0,
        gt=0,
        description="Calm this long with more than the minimum instances: system_overload_cleared "
        "(scale down).",
    )

    @field_validator("cooldowns_s")
    @classmethod
    def _merge_cooldowns(cls, value: dict[str, float]) -> dict[str, float]:
        # A partial override (e.g. only retrain) keeps the defaults of the other actions.
        return {**DEFAULT_COOLDOWNS_S, **{k: float(v) for k, v in value.items()}}

    # -- bindings: every topic read or written, declared once

    @property
    def drift(self) -> Binding:
        return Binding.to(Topic.DATA_DRIFT_DETECTED, self.drift_topic, key="model_name")

    @property
    def degraded(self) -> Binding:
        return Binding.to(Topic.MODEL_PERFORMANCE_DEGRADED, self.degraded_topic, key="model_name")

    @property
    def evaluations(self) -> Binding:
        return Binding.to(Topic.MODEL_EVALUATION_COMPLETED, self.evaluation_topic, key="model_name")

    @property
    def health(self) -> Binding:
        """Heartbeats read (a test may point this at a private topic)."""
        return Binding.to(Topic.SYSTEM_HEALTH, self.health_topic, key="service")

    @property
    def alerts(self) -> Binding:
        return Binding.to(Topic.SYSTEM_ALERTS, self.alerts_topic, key="dedup_key")

    @property
    def actions(self) -> Binding:
        """The decision log (keyed by model name: one responder per model keeps it ordered)."""
        return Binding.to(Topic.SYSTEM_ACTIONS, self.actions_topic)

    @property
    def requests(self) -> Binding:
        return Binding.to(Topic.PREDICTION_REQUEST, self.request_topic, key="transaction_id")

    @property
    def feedback(self) -> Binding:
        return Binding.to(Topic.PREDICTION_FEEDBACK, self.feedback_topic, key="transaction_id")

    @property
    def scale_requests(self) -> Binding:
        return Binding.to(Topic.SYSTEM_SCALE_REQUESTED, key="service")

    @property
    def training_started(self) -> Binding:
        return Binding.to(Topic.MODEL_TRAINING_STARTED, key="model_name")

    @property
    def training_completed(self) -> Binding:
        return Binding.to(Topic.MODEL_TRAINING_COMPLETED, key="model_name")

    @property
    def deployments(self) -> Binding:
        return Binding.to(Topic.MODEL_DEPLOYED, key="model_name")

    @property
    def triggers(self) -> list[Binding]:
        """What the decision loop consumes."""
        return [self.drift, self.degraded, self.evaluations, self.health, self.alerts]

    def bindings(self) -> ServiceBindings:
        return ServiceBindings.of(
            # The decision log is read back at start; requests and feedback by a retrain.
            consumes=[*self.triggers, self.actions, self.requests, self.feedback],
            produces=[
                self.actions,
                self.alerts,
                self.scale_requests,
                self.training_started,
                self.training_completed,
                self.deployments,
                self.heartbeats,
                self.system_metrics,
            ],
        )
