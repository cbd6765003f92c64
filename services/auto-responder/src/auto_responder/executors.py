"""Action executors: the adapters that make decisions real.

Each executor takes an :class:`ActionContext` and an :class:`~mlops_platform.kafka.Outbox`
and returns an :class:`ActionResult` (succeeded, failed, or suppressed when a
precondition no longer holds, e.g. the challenger that won is not the current
challenger any more). Executors emit their events into the outbox; the caller delivers
it before the action's outcome is recorded (a retrain delivers ``model.training.started``
itself, before training begins). Every event an action publishes carries the triggering
event's envelope as its cause, so the chain from a ``model.deployed`` back to the drift
that started it can be followed by ids.

* retrain — recent labelled data from the topics, ``fraud_model.training.train`` with the
  fixed parameters and a bounded Optuna search (:mod:`auto_responder.search`, nested MLflow
  runs under the retrain run; the fixed model unless a trial beats it) +
  ``log_and_register(set_alias="challenger")``, ``model.training.started/completed``,
  ``model.deployed`` {alias challenger, action challenger};
* promote — the validation gate (champion and challenger scored on a recent labelled
  holdout the challenger never saw; a worse challenger is refused, not promoted), then
  ``ModelRegistry.promote`` (``@champion`` moves, ``@previous_champion`` kept),
  ``model.deployed`` {alias champion, action promote};
* rollback — ``ModelRegistry.rollback``, ``model.deployed`` {alias champion, action rollback};
* scale — ``system.scale.requested``, then the scale command (local stack) if configured;
* alert — ``system.alerts``;
* monitor — nothing beyond its own ``system.actions`` record, whose details
  ``window_size`` / ``duration_s`` the drift-detector honours.
"""

from __future__ import annotations

import math
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auto_responder.config import Settings
from auto_responder.data import DataUnavailable, LabelledData, collect_labelled
from auto_responder.model import Action, Condition, Decision, EventType, Severity, Status
from auto_responder.search import SearchOutcome, search_and_train
from mlops_platform.bindings import Binding
from mlops_platform.contracts import make_event
from mlops_platform.kafka import Outbox
from mlops_platform.logs import get_logger
from mlops_platform.serde import AvroSerde

log = get_logger(__name__)


@dataclass
class ActionContext:
    """One action to carry out."""

    action_id: str
    decision: Decision
    trigger: Mapping[str, Any]
    manual: bool = False
    params: dict[str, str] = field(default_factory=dict)
    #: The operator who asked for a manual action (``<role>:<key name>``).
    actor: str | None = None
    #: action id of the impossible action this one is the rule's fallback for
    fallback_of: str = ""

    @property
    def condition(self) -> Condition:
        return self.decision.condition

    @property
    def reason(self) -> str:
        c = self.condition
        if self.manual:
            by = f" by {self.actor}" if self.actor else ""
            return f"manual {self.decision.action.value} (operator request {c.trigger_event_id}{by})"
        return f"{c.event_type} {c.assessed.name} (rule {self.decision.rule_id}, event {c.trigger_event_id})"


@dataclass
class ActionResult:
    status: Status
    outcome: str
    details: dict[str, str] = field(default_factory=dict)
    suppressed_reason: str | None = None
    #: the action's precondition does not hold: the rule's fallback (if any) runs instead
    impossible: bool = False

    @classmethod
    def ok(cls, outcome: str, **details: Any) -> ActionResult:
        return cls(Status.SUCCEEDED, outcome, {k: str(v) for k, v in details.items() if v is not None})

    @classmethod
    def fail(cls, outcome: str, **details: Any) -> ActionResult:
        return cls(Status.FAILED, outcome, {k: str(v) for k, v in details.items() if v is not None})

    @classmethod
    def skip(cls, reason: str, outcome: str, **details: Any) -> ActionResult:
        return cls(
            Status.SUPPRESSED,
            outcome,
            {k: str(v) for k, v in details.items() if v is not None},
            suppressed_reason=reason,
        )

    @classmethod
    def precondition_failed(cls, reason: str, outcome: str, **details: Any) -> ActionResult:
        """Impossible as asked (e.g. nothing to roll back to): suppressed, not failed."""
        result = cls.skip(reason, outcome, **details)
        result.impossible = True
        return result


@dataclass(frozen=True)
class GateVerdict:
    """What the validation gate decided about a promotion, and on what evidence."""

    passed: bool
    reason: str
    details: dict[str, str] = field(default_factory=dict)


def _nan_to(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def dedup_key(condition: Condition, suffix: str = "") -> str:
    """Alert dedup key: event type + the model or service (and the top feature for drift)."""
    attrs = condition.attributes
    subject = condition.subject or attrs.get("service") or attrs.get("model_name", "")
    parts = [condition.event_type, subject]
    if condition.event_type == EventType.DATA_DRIFT and attrs.get("top_feature"):
        parts.append(attrs["top_feature"])
    if suffix:
        parts.append(suffix)
    return ":".join(p for p in parts if p)


class Executors:
    """The executors, sharing the registry and the settings."""

    def __init__(
        self,
        settings: Settings,
        serde: AvroSerde,
        *,
        registry_factory: Callable[[], Any] | None = None,
        current_instances: Callable[[str], int] = lambda _service: 0,
        run_command: Callable[[list[str], float], subprocess.CompletedProcess[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.serde = serde
        self._registry_factory = registry_factory or self._default_registry
        self._registry: Any = None
        self.current_instances = current_instances
        self.run_command = run_command or _run_command

    # ----------------------------------------------------------------- plumbing

    def _default_registry(self) -> Any:
        from fraud_model.registry import ModelRegistry

        return ModelRegistry(self.settings.mlflow_tracking_uri, self.settings.model_name)

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    def emit(
        self,
        outbox: Outbox,
        binding: Binding,
        payload: Mapping[str, Any],
        ctx: ActionContext,
        key: str | None = None,
    ) -> str:
        """Emit an event caused by the action's trigger into ``outbox``; returns its id."""
        event = make_event(self.settings.service_name, payload, cause=ctx.trigger)
        outbox.emit(binding, event, key=key or self.settings.model_name)
        return str(event["envelope"]["event_id"])

    def run(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        """Carry out the decided action, emitting its events into ``outbox``."""
        handler = {
            Action.RETRAIN: self.retrain,
            Action.PROMOTE: self.promote,
            Action.ROLLBACK: self.rollback,
            Action.SCALE: self.scale,
            Action.SCALE_DOWN: self.scale_down,
            Action.ALERT: self.alert,
            Action.MONITOR: self.monitor,
        }.get(ctx.decision.action)
        if handler is None:
            return ActionResult.ok("nothing to do")
        return handler(ctx, outbox)

    # ------------------------------------------------------------------ retrain

    def collect(self, ctx: ActionContext) -> LabelledData:
        s = self.settings
        if s.retrain_settle_s > 0 and not ctx.manual:
            # A drift is noticed within one window, long before the new regime's labels
            # arrive: training at once would learn the old world again.
            log.info("retrain_settling", seconds=s.retrain_settle_s, action_id=ctx.action_id)
            time.sleep(s.retrain_settle_s)
        windows = [s.retrain_window_s]
        if s.retrain_max_window_s > s.retrain_window_s:
            windows.append(s.retrain_max_window_s)
        data: LabelledData | None = None
        for window in windows:
            data = collect_labelled(
                s,
                self.serde,
                requests=s.requests,
                feedback=s.feedback,
                window_s=window,
                max_rows=s.retrain_max_rows,
                timeout_s=s.retrain_read_timeout_s,
                group_id=f"{s.service_name}-retrain-{ctx.action_id[:8]}",
            )
            if self._enough(data):
                return data
            log.info("retrain_window_too_small", window_s=window, rows=data.rows, positives=data.positives)
        assert data is not None
        return data

    def _enough(self, data: LabelledData) -> bool:
        s = self.settings
        return data.rows >= s.retrain_min_rows and data.positives >= s.retrain_min_positives

    def retrain(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        from fraud_model.registry import CHALLENGER
        from fraud_model.training import log_and_register

        s = self.settings
        try:
            data = self.collect(ctx)
        except DataUnavailable as exc:
            return ActionResult.fail(f"could not read the training data: {exc}")
        if not self._enough(data):
            return ActionResult.fail(
                f"too few labelled rows to retrain: {data.rows} rows with {data.positives} frauds in the "
                f"last {data.window_s:.0f}s (need {s.retrain_min_rows} rows and {s.retrain_min_positives} "
                f"frauds); no training run",
                rows=data.rows,
                positives=data.positives,
                window_s=f"{data.window_s:.0f}",
                requests_read=data.requests_read,
                labels_read=data.labels_read,
            )
        training_id = str(uuid.uuid4())
        seed = int(time.time()) % 2**31
        params = {
            "window_s": f"{data.window_s:.0f}",
            "rows": str(data.rows),
            "positives": str(data.positives),
            "seed": str(seed),
            "action_id": ctx.action_id,
            "min_auc": str(s.retrain_min_auc),
            "search_trials": str(s.retrain_search_trials),
        }
        started_event = self.emit(
            outbox,
            s.training_started,
            {
                "training_id": training_id,
                "model_name": s.model_name,
                "reason": ctx.reason,
                "trigger_event_id": ctx.condition.trigger_event_id,
                "dataset_size": data.rows,
                "params": params,
            },
            ctx,
        )
        # Stored before the (long) training run, so the log shows it while it runs.
        outbox.deliver()
        started = time.perf_counter()
        previous_challenger = None
        run_tags = {
            "trigger_event_id": ctx.condition.trigger_event_id,
            "trigger_event_type": ctx.condition.trigger_topic,
            "correlation_id": str(ctx.trigger.get("correlation_id", "")),
            "action_id": ctx.action_id,
            "training_id": training_id,
        }
        search: SearchOutcome | None = None
        try:
            previous_challenger = self.registry.version_for_alias(CHALLENGER)
            search = search_and_train(
                data.frame,
                seed=seed,
                trials=s.retrain_search_trials,
                timeout_s=s.retrain_search_timeout_s,
                tracking_uri=s.mlflow_tracking_uri,
                experiment_name=s.training_experiment,
                run_name=f"retrain-{training_id[:8]}",
                tags=run_tags,
            )
            info = log_and_register(
                search.result,
                tracking_uri=s.mlflow_tracking_uri,
                model_name=s.model_name,
                reason=f"auto-responder: {ctx.reason}",
                tags=run_tags,
                set_alias=CHALLENGER,
                experiment_name=s.training_experiment,
                min_auc=s.retrain_min_auc,
                run_name=f"retrain-{training_id[:8]}",
                run_id=search.run_id,
            )
        except Exception as exc:
            duration = time.perf_counter() - started
            if search is not None and search.run_id is not None:
                _terminate_failed(s.mlflow_tracking_uri, search.run_id)
            self.emit(
                outbox,
                s.training_completed,
                {
                    "training_id": training_id,
                    "model_name": s.model_name,
                    "status": "failed",
                    "duration_s": duration,
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                },
                ctx,
            )
            return ActionResult.fail(
                f"training failed: {type(exc).__name__}: {exc}", training_id=training_id, rows=data.rows
            )
        duration = time.perf_counter() - started
        self.emit(
            outbox,
            s.training_completed,
            {
                "training_id": training_id,
                "model_name": s.model_name,
                "status": "succeeded",
                "model_version": info.version,
                "run_id": info.run_id,
                "metrics": _finite(info.metrics),
                "threshold": float(info.threshold),
                "alias": info.alias,
                "duration_s": duration,
                "error": None,
            },
            ctx,
        )
        details = {
            "training_id": training_id,
            "training_started_event_id": started_event,
            "version": info.version,
            "run_id": info.run_id,
            "rows": data.rows,
            "positives": data.positives,
            "window_s": f"{data.window_s:.0f}",
            "val_auc": f"{info.metrics.get('auc_roc', math.nan):.4f}",
            "threshold": f"{info.threshold:.4f}",
            "validation_status": info.validation_status,
            **search.details(),
        }
        if info.alias != CHALLENGER:
            return ActionResult.fail(
                f"v{info.version} failed validation (val AUC {info.metrics.get('auc_roc', math.nan):.4f} < "
                f"{s.retrain_min_auc}); @challenger not set",
                **details,
            )
        deployed = self.emit(
            outbox,
            s.deployments,
            {
                "model_name": s.model_name,
                "alias": CHALLENGER,
                "version": info.version,
                "previous_version": previous_challenger,
                "action": "challenger",
                "reason": ctx.reason,
            },
            ctx,
        )
        return ActionResult.ok(
            f"trained v{info.version} on {data.rows} labelled rows (val AUC "
            f"{info.metrics.get('auc_roc', math.nan):.4f}); @challenger -> v{info.version}",
            deployed_event_id=deployed,
            previous_challenger=previous_challenger,
            **details,
        )

    # ------------------------------------------------------------------ promote

    def promote(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        from fraud_model.registry import CHALLENGER, CHAMPION, ModelRegistryError

        registry = self.registry
        requested = ctx.params.get("version") or ctx.condition.attributes.get("challenger_version") or ""
        current_challenger = registry.version_for_alias(CHALLENGER)
        champion = registry.version_for_alias(CHAMPION)
        version = requested or current_challenger
        if not version:
            return ActionResult.fail("nothing to promote: no version given and no @challenger")
        if champion == version:
            return ActionResult.skip("already_champion", f"v{version} already is @champion", version=version)
        if not ctx.manual and current_challenger != version:
            return ActionResult.skip(
                "stale",
                f"the evaluation was about v{version} but @challenger is "
                f"{'v' + current_challenger if current_challenger else 'unset'} now",
                version=version,
                challenger=current_challenger,
            )
        gate: dict[str, str] = {}
        if self.settings.promote_gate_enabled and not ctx.manual and champion is not None:
            verdict = self.validation_gate(ctx, champion, version)
            gate = verdict.details
            if not verdict.passed:
                # Not a failure: the automation decided, with evidence, to keep the champion.
                key = dedup_key(ctx.condition, "validation-gate")
                title = f"promotion of {self.settings.model_name} v{version} refused by the validation gate"
                message = f"{title}: {verdict.reason}. @champion stays v{champion}. Reason: {ctx.reason}."
                payload = self.alert_payload(
                    ctx, severity=Severity.HIGH, title=title, message=message, key=key
                )
                self.emit(outbox, self.settings.alerts, payload, ctx, key=key)
                return ActionResult.skip(
                    "validation_gate",
                    f"promotion refused by validation gate: {verdict.reason}; @champion stays v{champion}",
                    version=version,
                    champion=champion,
                    **gate,
                )
        try:
            previous, new = registry.promote(version)
        except ModelRegistryError as exc:
            return ActionResult.fail(f"promote failed: {exc}", version=version)
        deployed = self.emit(
            outbox,
            self.settings.deployments,
            {
                "model_name": self.settings.model_name,
                "alias": CHAMPION,
                "version": new,
                "previous_version": previous,
                "action": "promote",
                "reason": ctx.reason,
            },
            ctx,
        )
        return ActionResult.ok(
            f"@champion -> v{new} (@previous_champion -> {'v' + previous if previous else 'none'})",
            version=new,
            previous_version=previous,
            deployed_event_id=deployed,
            **gate,
        )

    def holdout(self, ctx: ActionContext, challenger: str) -> LabelledData:
        """Recent labelled transactions the challenger never saw: since it was registered."""
        s = self.settings
        window_s = s.promote_gate_window_s
        registered_ms = getattr(self.registry.get_version(challenger), "creation_timestamp", None)
        if registered_ms:
            window_s = min(window_s, max(time.time() - float(registered_ms) / 1000, 1.0))
        return collect_labelled(
            s,
            self.serde,
            requests=s.requests,
            feedback=s.feedback,
            window_s=window_s,
            max_rows=s.retrain_max_rows,
            timeout_s=s.retrain_read_timeout_s,
            group_id=f"{s.service_name}-gate-{ctx.action_id[:8]}",
        )

    def validation_gate(self, ctx: ActionContext, champion: str, challenger: str) -> GateVerdict:
        """Champion and challenger scored on the same recent labelled holdout.

        Passes when the challenger's business cost is at most the champion's (plus the cost
        margin) and its AUPRC at least the champion's (minus the AUPRC margin). Too little
        holdout: the setting decides (promote on the A/B evaluation alone, or refuse).
        """
        from fraud_model.contract import LABEL_KEY
        from fraud_model.metrics import fds_metrics

        s = self.settings
        try:
            data: LabelledData | None = self.holdout(ctx, challenger)
            unreadable = ""
        except Exception as exc:
            data, unreadable = None, f"{type(exc).__name__}: {exc}"
        rows = data.rows if data is not None else 0
        positives = data.positives if data is not None else 0
        if data is None or rows < s.promote_gate_min_rows or positives < s.promote_gate_min_positives:
            why = (
                f"holdout unreadable ({unreadable})"
                if unreadable
                else f"holdout too small ({rows} rows, {positives} frauds; need {s.promote_gate_min_rows} "
                f"and {s.promote_gate_min_positives})"
            )
            passed = s.promote_gate_insufficient == "promote"
            return GateVerdict(
                passed,
                why,
                {
                    "gate": "skipped" if passed else "refused",
                    "gate_reason": why[:500],
                    "gate_rows": str(rows),
                    "gate_positives": str(positives),
                },
            )
        labels = data.frame[LABEL_KEY].astype(bool).to_numpy()
        scores: dict[str, dict[str, float]] = {}
        for role, version in (("champion", champion), ("challenger", challenger)):
            scorer = self.registry.load_booster(version)
            threshold = float(scorer.threshold)
            if not math.isfinite(threshold):
                threshold = 0.5
            prob = scorer.score(data.frame)
            scores[role] = fds_metrics(
                labels, prob, threshold, s.promote_gate_fn_cost, s.promote_gate_fp_cost
            )
        champ, chall = scores["champion"], scores["challenger"]
        cost_ok = chall["business_cost"] <= champ["business_cost"] * (1 + s.promote_gate_cost_margin)
        auprc_ok = _nan_to(chall["auprc"], 0.0) >= _nan_to(champ["auprc"], 0.0) - s.promote_gate_auprc_margin
        summary = (
            f"on {rows} recent labelled rows ({positives} frauds): business cost challenger v{challenger} "
            f"{chall['business_cost']:.0f} vs champion v{champion} {champ['business_cost']:.0f}, AUPRC "
            f"{chall['auprc']:.4f} vs {champ['auprc']:.4f}"
        )
        details = {
            "gate": "passed" if cost_ok and auprc_ok else "refused",
            "gate_rows": str(rows),
            "gate_positives": str(positives),
            "gate_champion_cost": f"{champ['business_cost']:.0f}",
            "gate_challenger_cost": f"{chall['business_cost']:.0f}",
            "gate_champion_auprc": f"{champ['auprc']:.4f}",
            "gate_challenger_auprc": f"{chall['auprc']:.4f}",
        }
        if not cost_ok:
            return GateVerdict(False, f"higher business cost {summary}", details)
        if not auprc_ok:
            return GateVerdict(False, f"lower AUPRC {summary}", details)
        return GateVerdict(True, summary, details)

    # ----------------------------------------------------------------- rollback

    def rollback(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        from fraud_model.registry import CHAMPION, ModelRegistryError, NoPreviousChampionError

        registry = self.registry
        degraded = ctx.condition.attributes.get("model_version", "")
        champion = registry.version_for_alias(CHAMPION)
        if not ctx.manual and degraded and champion is not None and degraded != champion:
            return ActionResult.skip(
                "not_champion",
                f"v{degraded} is not the champion any more (@champion is v{champion}); nothing to roll back",
                degraded_version=degraded,
                champion=champion,
            )
        fallback = ctx.decision.fallback
        try:
            rolled_back, restored = registry.rollback()
        except NoPreviousChampionError as exc:
            if fallback is not None and not ctx.manual:
                # Precondition "a @previous_champion exists" does not hold: the rule table
                # says what to do instead; not a failed action.
                return ActionResult.precondition_failed(
                    "no_previous_champion",
                    f"rollback impossible: {exc}; the rule's fallback {fallback.value} runs instead",
                    champion=champion,
                    precondition="previous_champion",
                    fallback=fallback.value,
                )
            return ActionResult.fail(f"rollback impossible: {exc}", champion=champion)
        except ModelRegistryError as exc:
            return ActionResult.fail(f"rollback failed: {exc}", champion=champion)
        deployed = self.emit(
            outbox,
            self.settings.deployments,
            {
                "model_name": self.settings.model_name,
                "alias": CHAMPION,
                "version": restored,
                "previous_version": rolled_back,
                "action": "rollback",
                "reason": ctx.reason,
            },
            ctx,
        )
        return ActionResult.ok(
            f"@champion v{rolled_back} -> v{restored} (@previous_champion)",
            version=restored,
            previous_version=rolled_back,
            deployed_event_id=deployed,
        )

    # -------------------------------------------------------------------- scale

    def scale(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        s = self.settings
        service = s.scale_service
        current = max(self.current_instances(service), 1)
        if current >= s.scale_max_instances:
            return ActionResult.skip(
                "max_instances",
                f"{service} already runs {current} instances (max {s.scale_max_instances})",
                current_instances=current,
            )
        return self._resize(ctx, outbox, service, current, current + 1)

    def scale_down(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        """The overload passed: back to the configured minimum of instances."""
        s = self.settings
        service = s.scale_service
        current = max(self.current_instances(service), 1)
        if current <= s.scale_min_instances:
            return ActionResult.skip(
                "min_instances",
                f"{service} runs {current} instances (min {s.scale_min_instances}); nothing to scale down",
                current_instances=current,
            )
        return self._resize(ctx, outbox, service, current, s.scale_min_instances)

    def _resize(
        self, ctx: ActionContext, outbox: Outbox, service: str, current: int, desired: int
    ) -> ActionResult:
        """Publish ``system.scale.requested`` for ``desired`` instances, then run the scale command."""
        s = self.settings
        requested = self.emit(
            outbox,
            s.scale_requests,
            {
                "service": service,
                "current_instances": current,
                "desired_instances": desired,
                "reason": ctx.reason,
            },
            ctx,
            key=service,
        )
        # Announced before the command runs, as a request others (an operator, a controller) can act on.
        outbox.deliver()
        details: dict[str, Any] = {
            "service": service,
            "current_instances": current,
            "desired_instances": desired,
            "scale_event_id": requested,
        }
        if not s.scale_command:
            return ActionResult.ok(
                f"requested {service} x{desired} (no scale command here: in docker compose run "
                f"`docker compose up -d --scale {service}={desired}`)",
                **details,
            )
        # Plain token replacement, not str.format: a command may contain other braces.
        argv = [
            part.replace("{service}", service).replace("{instances}", str(desired))
            for part in s.scale_command
        ]
        try:
            completed = self.run_command(argv, s.scale_timeout_s)
        except subprocess.TimeoutExpired:
            return ActionResult.fail(f"scale command timed out after {s.scale_timeout_s:.0f}s", **details)
        except OSError as exc:
            return ActionResult.fail(f"scale command could not run: {exc}", **details)
        tail = (completed.stdout or "")[-400:] + (completed.stderr or "")[-400:]
        details["command"] = " ".join(argv)
        if completed.returncode != 0:
            return ActionResult.fail(
                f"scale command exited with {completed.returncode}: {tail.strip()}", **details
            )
        return ActionResult.ok(f"{service} scaled from {current} to {desired} instances", **details)

    # -------------------------------------------------------------------- alert

    def alert_payload(
        self,
        ctx: ActionContext,
        *,
        severity: Severity | str,
        title: str,
        message: str,
        key: str,
        status: str = "firing",
    ) -> dict[str, Any]:
        c = ctx.condition
        labels = {
            "source": self.settings.service_name,
            "event_type": c.event_type,
            "rule_id": ctx.decision.rule_id,
            "action": ctx.decision.action.value,
            "model_name": self.settings.model_name,
        }
        for name in ("service", "model_version", "alertname"):
            if c.attributes.get(name):
                labels[name] = c.attributes[name]
        return {
            "alert_id": str(uuid.uuid4()),
            "severity": severity.name if isinstance(severity, Severity) else severity,
            "title": title,
            "message": message,
            "dedup_key": key,
            "status": status,
            "labels": labels,
            "related_event_id": c.trigger_event_id or None,
        }

    def alert(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        c = ctx.condition
        attrs = c.attributes
        status = "firing"
        key = dedup_key(c)
        subject = attrs.get("service") or self.settings.model_name
        if c.event_type == EventType.HEALTH_RECOVERED:
            # Resolves the alert raised when the service failed (same dedup key).
            status = "resolved"
            key = ":".join(p for p in (EventType.HEALTH_CHECK_FAILED.value, c.subject) if p)
            title = f"{subject} is healthy again"
        elif c.event_type == EventType.HEALTH_CHECK_FAILED:
            title = f"{subject} failed its health check"
        elif ctx.decision.replaces is not None:
            title = f"{c.event_type} on {subject}: {ctx.decision.replaces.value} needs a person"
        else:
            title = f"{c.event_type.replace('_', ' ')} on {subject} ({c.assessed.name})"
        facts = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()) if v)
        message = f"{title}. {ctx.decision.note + '. ' if ctx.decision.note else ''}Facts: {facts}"
        payload = self.alert_payload(
            ctx, severity=c.assessed, title=title, message=message, key=key, status=status
        )
        event_id = self.emit(outbox, self.settings.alerts, payload, ctx, key=key)
        return ActionResult.ok(
            f"alert {status}: {title}", alert_id=payload["alert_id"], dedup_key=key, alert_event_id=event_id
        )

    def notify(self, ctx: ActionContext, result: ActionResult | None, outbox: Outbox) -> None:
        """Tell people what the automation does (rule ``notify``) or that it failed."""
        c = ctx.condition
        action = ctx.decision.action.value
        subject = c.attributes.get("service") or self.settings.model_name
        if result is None:
            severity: Severity | str = c.assessed
            title = f"{c.event_type.replace('_', ' ')} on {subject} ({c.assessed.name}): {action} started"
            key = dedup_key(c, action)
            message = f"{title}. Reason: {ctx.reason}."
        else:
            severity = max(c.assessed, Severity.HIGH)
            title = f"auto-response {action} failed for {subject}"
            key = dedup_key(c, f"{action}-failed")
            message = f"{title}: {result.outcome}. Reason: {ctx.reason}. A person has to look."
        payload = self.alert_payload(ctx, severity=severity, title=title, message=message, key=key)
        self.emit(outbox, self.settings.alerts, payload, ctx, key=key)

    # ------------------------------------------------------------------ monitor

    def monitor(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        s = self.settings
        return ActionResult.ok(
            f"monitoring {s.model_name} closely: drift window {s.monitor_window_size} for "
            f"{s.monitor_duration_s:.0f}s",
            window_size=str(int(s.monitor_window_size)),
            duration_s=f"{s.monitor_duration_s:g}",
        )


def _terminate_failed(tracking_uri: str, run_id: str) -> None:
    """Close a search's parent run whose model could not be logged (best effort)."""
    try:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status="FAILED")
    except Exception as exc:
        log.warning("search_run_not_closed", run_id=run_id, error=str(exc))


def _run_command(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv comes from the operator's settings, not from events
        argv, capture_output=True, text=True, timeout=timeout_s, check=False
    )
