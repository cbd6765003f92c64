"""The decision layer: trigger events in, decisions recorded, actions dispatched.

Flow for every trigger event (stream loop thread) and every heartbeat condition
(watcher thread), under one lock so policies see a consistent history:

1. the engine turns the event into a condition (or ignores it, counted by reason);
2. a trigger already decided (same event, same understanding) is skipped: re-delivery
   after a crash or a new consumer group never repeats an action;
3. rule + policies give the decisions; each is emitted to ``system.actions`` and the
   outbox delivered (acknowledged) *before* anything runs and before the decision joins
   the history (``suppressed``, or ``started`` for external actions); quick actions
   (alert, monitor) run inline and record one terminal record;
4. external actions run in worker pools (training: one at a time; registry moves: one at
   a time, in order; scale commands) and record their terminal record when done, so
   event consumption never waits for a training run.

Inside the stream loop every event goes through the outbox of the batch at hand; the
watcher, the worker pools and manual actions have no batch and use an outbox of their own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auto_responder import metrics
from auto_responder.config import Settings
from auto_responder.engine import EngineContext, Ignored, plan, to_condition
from auto_responder.executors import ActionContext, ActionResult, Executors
from auto_responder.history import ActionHistory, ReplayError, replay_actions
from auto_responder.model import (
    EXTERNAL_ACTIONS,
    Action,
    ActionRecord,
    Condition,
    Decision,
    EventType,
    Severity,
    Status,
)
from auto_responder.policies import PolicyConfig, QuietHours, apply_policies
from auto_responder.rules import RuleSet, load_rules
from auto_responder.watcher import HeartbeatWatcher
from mlops_platform.contracts import Topic, make_event, new_envelope
from mlops_platform.errors import KafkaUnavailable, PublishError, SchemaRegistryUnavailable
from mlops_platform.kafka import EventProducer, Outbox, Record
from mlops_platform.logs import bind_event, get_logger
from mlops_platform.serde import AvroSerde

log = get_logger(__name__)

Clock = Callable[[], datetime]

POOL_OF = {
    Action.RETRAIN: "training",
    Action.PROMOTE: "registry",
    Action.ROLLBACK: "registry",
    Action.SCALE: "ops",
    Action.SCALE_DOWN: "ops",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def policy_config(settings: Settings) -> PolicyConfig:
    return PolicyConfig(
        cooldowns_s=dict(settings.cooldowns_s),
        dampening_max_responses=settings.dampening_max_responses,
        dampening_window_s=settings.dampening_window_s,
        quiet_hours=QuietHours(
            enabled=settings.quiet_hours_enabled,
            start=settings.quiet_hours_start,
            end=settings.quiet_hours_end,
            timezone=settings.quiet_hours_timezone,
        ),
    )


# The reason given for an action closed as failed because the process died while it ran.
INTERRUPTED_REASON = "interrupted by restart"


@dataclass
class _Running:
    ctx: ActionContext
    started: float
    future: Future[ActionRecord] | None = None


class Responder:
    """Decides and acts; owns the history, the heartbeat watcher and the worker pools."""

    def __init__(
        self,
        settings: Settings,
        producer: EventProducer,
        serde: AvroSerde,
        *,
        rules: RuleSet | None = None,
        executors: Executors | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.serde = serde
        self.clock = clock
        self.rules = rules or load_rules(settings.rules_file)
        self.context = EngineContext(
            rules=self.rules,
            model_name=settings.model_name,
            service_name=settings.service_name,
            max_trigger_age_s=settings.max_trigger_age_s,
        )
        self.policies = policy_config(settings)
        self.history = ActionHistory(settings.history_max)
        self.watcher = HeartbeatWatcher(
            own_service=settings.service_name,
            timeout_s=settings.heartbeat_timeout_s,
            scale_service=settings.scale_service,
            overload_lag=settings.overload_lag_messages,
            repeat_s=settings.health_condition_repeat_s,
            min_instances=settings.scale_min_instances,
            calm_lag=settings.overload_calm_lag_messages,
            calm_s=settings.overload_calm_s,
            availability_period_s=settings.availability_period_s,
            watched=settings.watched_services,
            now=clock(),
        )
        self.executors = executors or Executors(settings, serde, current_instances=self.live_instances)
        self._lock = threading.RLock()
        self._running: dict[str, _Running] = {}
        self._pools = {
            "training": ThreadPoolExecutor(1, thread_name_prefix="responder-training"),
            "registry": ThreadPoolExecutor(1, thread_name_prefix="responder-registry"),
            "ops": ThreadPoolExecutor(2, thread_name_prefix="responder-ops"),
        }
        self.restored = threading.Event()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ inputs

    def handle_batch(self, records: list[Record], outbox: Outbox) -> None:
        """Stream-loop handler: decide on every record of the batch.

        Each decision is delivered as it is made (see :meth:`_publish`). When Kafka
        refuses it, the error goes to the loop, which retries the batch later: nothing
        ran, and the triggers already decided are skipped as duplicates then.
        """
        if len(outbox):
            # Dead letters of undecodable records: stored first, so a decision's delivery
            # failing later can never take them down with it.
            outbox.deliver()
        for record in records:
            with bind_event(record.envelope):
                self.handle(record.contract or record.topic, record.value, outbox)

    def handle(
        self, contract: str, value: dict[str, Any], outbox: Outbox | None = None
    ) -> list[ActionRecord]:
        """Decide on one decoded event of the given contract (catalogue topic).

        ``outbox`` is the stream loop's for the batch at hand; without one each event
        gets an outbox of its own.
        """
        now = self.clock()
        if contract == Topic.SYSTEM_HEALTH:
            with self._lock:
                conditions = self.watcher.observe(value, now)
            metrics.TRIGGERS.labels(contract, "observed").inc()
        else:
            outcome = to_condition(contract, value, self.context, now)
            if isinstance(outcome, Ignored):
                metrics.TRIGGERS.labels(contract, outcome.reason).inc()
                return []
            conditions = [outcome]
        records: list[ActionRecord] = []
        for condition in conditions:
            records.extend(self.respond(condition, outbox))
        return records

    def tick(self) -> list[ActionRecord]:
        """Periodic check for silent services (watcher thread)."""
        now = self.clock()
        with self._lock:
            conditions = self.watcher.check(now)
            snapshot = self.watcher.snapshot(now)
        for row in snapshot:
            service = str(row["service"])
            if row["silent_s"] is not None:
                metrics.HEARTBEAT_AGE.labels(service).set(float(row["silent_s"]))
            metrics.SERVICE_UP.labels(service).set(0 if row["failed"] else 1)
            metrics.SERVICE_INSTANCES.labels(service).set(float(row["live_instances"]))
        records: list[ActionRecord] = []
        for condition in conditions:
            records.extend(self.respond(condition))
        return records

    def policy_view(self) -> dict[str, Any]:
        """Configured and active cooldowns, dampening counts and quiet hours (for the API)."""
        now = self.clock()
        config = self.policies
        with self._lock:
            policy = self.history.policy
            responses = {
                key: policy.responses_within(key, now, config.dampening_window_s)
                for key in list(policy.responses)
            }
            active = policy.active_cooldowns(config, now)
        return {
            "cooldowns_s": dict(config.cooldowns_s),
            "active": active,
            "dampening": {
                "max_responses": config.dampening_max_responses,
                "window_s": config.dampening_window_s,
                "responses": {key: count for key, count in responses.items() if count},
            },
            "quiet_hours": {
                "enabled": config.quiet_hours.enabled,
                "start": config.quiet_hours.start,
                "end": config.quiet_hours.end,
                "timezone": config.quiet_hours.timezone,
                "active_now": config.quiet_hours.active(now),
            },
        }

    def services(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.watcher.snapshot(self.clock())

    def live_instances(self, service: str) -> int:
        with self._lock:
            return self.watcher.live_instances(service, self.clock())

    # --------------------------------------------------------------- deciding

    def respond(self, condition: Condition, outbox: Outbox | None = None) -> list[ActionRecord]:
        """Record (and start) every decision the rules and policies make for ``condition``."""
        if not condition.trigger.get("event_id"):
            # A condition observed by the responder itself (a service silent since start).
            condition = Condition(
                event_type=condition.event_type,
                trigger_topic=condition.trigger_topic,
                trigger=new_envelope(self.settings.service_name),
                severity=condition.severity,
                assessed=condition.assessed,
                subject=condition.subject,
                attributes=condition.attributes,
            )
        contract = condition.trigger_topic
        with self._lock:
            if self.history.already_decided(
                condition.trigger_event_id, condition.event_type, condition.assessed.name
            ):
                metrics.TRIGGERS.labels(contract, "duplicate").inc()
                log.info("trigger_already_decided", trigger_event_id=condition.trigger_event_id)
                return []
            decisions = plan(
                condition,
                self.rules,
                self.history.policy,
                self.policies,
                self.clock(),
                in_progress=self.in_progress(),
            )
            if not decisions:
                metrics.TRIGGERS.labels(contract, "no_rule").inc()
                return []
            metrics.TRIGGERS.labels(contract, "decided").inc()
            records = []
            for decision in decisions:
                ctx = ActionContext(str(uuid.uuid4()), decision, condition.trigger)
                if decision.suppressed:
                    records.append(self._suppressed(ctx, outbox))
                else:
                    records.append(self._start(ctx, outbox))
            return records

    def in_progress(self) -> set[Action]:
        with self._lock:
            return {running.ctx.decision.action for running in self._running.values()}

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "action_id": action_id,
                    "action": r.ctx.decision.action.value,
                    "trigger_event_id": r.ctx.condition.trigger_event_id,
                    "running_s": round(time.perf_counter() - r.started, 3),
                }
                for action_id, r in self._running.items()
            ]

    # --------------------------------------------------------------- manual

    def manual(
        self,
        action: Action,
        version: str | None = None,
        timeout_s: float = 300.0,
        *,
        actor: str | None = None,
    ) -> ActionRecord:
        """An operator's promote / rollback: same executor and records, no rule or policy.

        The trigger is the operator's request (its id is ``trigger_event_id``, type ``manual``);
        ``actor`` (who asked, ``<role>:<key name>``) is recorded in every ``system.actions``
        record of the action and in the logs. Blocks until the action finished; returns its
        terminal record.
        """
        trigger = new_envelope(f"{self.settings.service_name}-api")
        attributes = {"model_name": self.settings.model_name}
        if version:
            attributes["requested_version"] = version
        condition = Condition(
            event_type=EventType.MANUAL,
            trigger_topic="manual",
            trigger=trigger,
            severity=Severity.MEDIUM,
            assessed=Severity.MEDIUM,
            attributes=attributes,
        )
        decision = Decision(condition=condition, rule_id=f"manual-{action.value}", action=action)
        ctx = ActionContext(
            str(uuid.uuid4()),
            decision,
            trigger,
            manual=True,
            params={"version": version} if version else {},
            actor=actor,
        )
        log.info("manual_action_requested", action=action.value, version=version, actor=actor)
        with self._lock:
            self._start(ctx)
            running = self._running.get(ctx.action_id)
        if running is None or running.future is None:
            raise RuntimeError("the action did not start")
        return running.future.result(timeout=timeout_s)

    # -------------------------------------------------------------- recording

    def _details(self, ctx: ActionContext, extra: dict[str, str] | None = None) -> dict[str, str]:
        c = ctx.condition
        details = {k: v for k, v in c.attributes.items() if v != ""}
        details |= {
            "model_name": self.settings.model_name,
            "event_type": c.event_type,
            "policy_key": c.policy_key,
        }
        if ctx.manual:
            details["manual"] = "true"
        if ctx.fallback_of:
            details["fallback_of"] = ctx.fallback_of
        if ctx.decision.replaces is not None:
            details["replaces"] = ctx.decision.replaces.value
        if ctx.decision.note:
            details["note"] = ctx.decision.note
        if ctx.decision.action is Action.PROMOTE:
            # Link the promotion to the retrain (and so the event) that produced the version.
            version = ctx.params.get("version") or c.attributes.get("challenger_version", "")
            origin = self.history.trained(version) if version else None
            if origin is not None:
                details["challenger_action_id"] = origin.action_id
                details["challenger_trigger_event_id"] = origin.trigger_event_id
        if extra:
            details |= extra
        return details

    def _publish(
        self,
        ctx: ActionContext,
        status: Status,
        outcome: str,
        *,
        details: dict[str, str] | None = None,
        duration_ms: float = 0.0,
        suppressed_reason: str | None = None,
        cause: dict[str, Any] | None = None,
        outbox: Outbox | None = None,
    ) -> ActionRecord:
        """Emit the decision record and deliver it; only a stored record joins the history."""
        c = ctx.condition
        record = ActionRecord(
            action_id=ctx.action_id,
            trigger_event_id=c.trigger_event_id,
            trigger_event_type=c.trigger_topic,
            rule_id=ctx.decision.rule_id,
            action=ctx.decision.action.value,
            status=status.value,
            outcome=outcome,
            at=self.clock(),
            trigger_severity=c.severity.name,
            assessed_severity=c.assessed.name,
            suppressed_reason=suppressed_reason,
            duration_ms=duration_ms,
            details=self._details(ctx, details),
            actor=ctx.actor,
        )
        event = make_event(self.settings.service_name, record.payload(), cause=cause or dict(ctx.trigger))
        outbox = outbox if outbox is not None else Outbox(self.producer)
        outbox.emit(self.settings.actions, event, key=self.settings.model_name)
        outbox.deliver()
        record.envelope = event["envelope"]
        self.history.add(record)
        metrics.ACTIONS.labels(record.action, record.status).inc()
        if status is Status.SUPPRESSED:
            metrics.SUPPRESSED.labels(record.action, suppressed_reason or "").inc()
        self._update_ratio()
        log.info(
            "action_recorded",
            action_id=record.action_id,
            action=record.action,
            status=record.status,
            rule_id=record.rule_id,
            trigger_event_id=record.trigger_event_id,
            reason=suppressed_reason,
            outcome=outcome,
            actor=record.actor,
        )
        return record

    def _update_ratio(self) -> None:
        ratio = self.history.success_ratio(self.clock())
        if ratio is not None:
            metrics.SUCCESS_RATIO.set(ratio)

    def _suppressed(self, ctx: ActionContext, outbox: Outbox | None = None) -> ActionRecord:
        return self._publish(
            ctx,
            Status.SUPPRESSED,
            ctx.decision.note or f"{ctx.decision.action.value} suppressed",
            suppressed_reason=ctx.decision.suppressed_reason,
            outbox=outbox,
        )

    # -------------------------------------------------------------- executing

    def _start(self, ctx: ActionContext, outbox: Outbox | None = None) -> ActionRecord:
        action = ctx.decision.action
        if action not in EXTERNAL_ACTIONS:
            return self._run_inline(ctx, outbox)
        record = self._publish(ctx, Status.STARTED, f"{action.value} started: {ctx.reason}", outbox=outbox)
        running = _Running(ctx, time.perf_counter())
        self._running[ctx.action_id] = running
        metrics.IN_PROGRESS.labels(action.value).inc()
        if ctx.decision.notify:
            self._notify(ctx, None)
        # The worker runs after this batch is committed: its events get outboxes of their own.
        running.future = self._pools[POOL_OF[action]].submit(self._execute, ctx, running.started)
        return record

    def _run_inline(self, ctx: ActionContext, outbox: Outbox | None) -> ActionRecord:
        outbox = outbox if outbox is not None else Outbox(self.producer)
        started = time.perf_counter()
        result = self._run_safely(ctx, outbox)
        duration = time.perf_counter() - started
        metrics.ACTION_SECONDS.labels(ctx.decision.action.value, result.status.value).observe(duration)
        record = self._publish(
            ctx,
            result.status,
            result.outcome,
            details=result.details,
            duration_ms=duration * 1000,
            suppressed_reason=result.suppressed_reason,
            outbox=outbox,
        )
        if result.status is Status.FAILED and ctx.decision.action is not Action.ALERT:
            self._notify(ctx, result)
        return record

    def _run_safely(self, ctx: ActionContext, outbox: Outbox) -> ActionResult:
        """Run the executor and deliver the events it emitted; every failure becomes a result."""
        try:
            result = self.executors.run(ctx, outbox)
        except (KafkaUnavailable, PublishError, SchemaRegistryUnavailable) as exc:
            result = ActionResult.fail(f"could not publish: {exc}")
        except Exception as exc:
            log.exception("action_crashed", action=ctx.decision.action.value, action_id=ctx.action_id)
            result = ActionResult.fail(f"{type(exc).__name__}: {exc}")
        try:
            # What the action did before it ended (e.g. a registry move) is stored either way.
            outbox.deliver()
        except (KafkaUnavailable, PublishError) as exc:
            return ActionResult.fail(f"could not publish: {exc}")
        return result

    def _execute(self, ctx: ActionContext, started: float) -> ActionRecord:
        """Worker-pool body of an external action: run it, then record its outcome."""
        action = ctx.decision.action.value
        with bind_event(ctx.trigger):
            result = self._run_safely(ctx, Outbox(self.producer))
            duration = time.perf_counter() - started
            metrics.ACTION_SECONDS.labels(action, result.status.value).observe(duration)
            try:
                record = self._publish_terminal(ctx, result, duration)
            finally:
                with self._lock:
                    self._running.pop(ctx.action_id, None)
                metrics.IN_PROGRESS.labels(action).dec()
            if result.status is Status.FAILED and not ctx.manual:
                self._notify(ctx, result)  # the operator of a manual action has the answer already
            if result.impossible and ctx.decision.fallback is not None:
                self._fallback(ctx, result)
            return record

    def _fallback(self, ctx: ActionContext, result: ActionResult) -> list[ActionRecord]:
        """The rule's fallback for an action found impossible: decided as its own action.

        It goes through the policies (cooldown, one at a time) like any decision, and names
        the impossible action (``details.fallback_of``, ``details.replaces``).
        """
        fallback = ctx.decision.fallback
        assert fallback is not None
        decision = Decision(
            condition=ctx.condition,
            rule_id=ctx.decision.rule_id,
            action=fallback,
            replaces=ctx.decision.action,
            notify=ctx.decision.notify,
            note=f"fallback for {ctx.decision.action.value}: {result.suppressed_reason}",
        )
        records: list[ActionRecord] = []
        try:
            with self._lock:
                decisions = apply_policies(
                    decision, self.history.policy, self.policies, self.clock(), self.in_progress()
                )
                for planned in decisions:
                    fctx = ActionContext(str(uuid.uuid4()), planned, ctx.trigger, fallback_of=ctx.action_id)
                    if planned.suppressed:
                        records.append(self._suppressed(fctx))
                    else:
                        records.append(self._start(fctx))
        except Exception as exc:  # the impossible action is recorded; say why nothing followed
            log.error(
                "fallback_not_started", action_id=ctx.action_id, fallback=fallback.value, error=repr(exc)
            )
        return records

    def _publish_terminal(self, ctx: ActionContext, result: ActionResult, duration: float) -> ActionRecord:
        # The outcome must reach the log; Kafka may be briefly unavailable after a long run.
        attempts = 5
        for attempt in range(1, attempts + 1):
            try:
                with self._lock:
                    return self._publish(
                        ctx,
                        result.status,
                        result.outcome,
                        details=result.details,
                        duration_ms=duration * 1000,
                        suppressed_reason=result.suppressed_reason,
                    )
            except (KafkaUnavailable, PublishError, SchemaRegistryUnavailable) as exc:
                if attempt == attempts or self._stop.wait(min(2.0**attempt, 30.0)):
                    log.error("terminal_record_lost", action_id=ctx.action_id, error=str(exc))
                    raise
        raise AssertionError("unreachable")

    def _notify(self, ctx: ActionContext, result: ActionResult | None) -> None:
        # An outbox of its own: a lost notification must not fail the batch or the action.
        outbox = Outbox(self.producer)
        try:
            self.executors.notify(ctx, result, outbox)
            outbox.deliver()
        except Exception as exc:  # telling people must not break the action's bookkeeping
            log.warning("notification_failed", action_id=ctx.action_id, error=str(exc))

    # -------------------------------------------------------------- lifecycle

    def restore(self) -> None:
        """Replay this responder's decisions from ``system.actions`` (blocking, before consuming)."""
        s = self.settings
        deadline = time.monotonic() + s.replay_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                result = replay_actions(
                    self.history,
                    settings=s,
                    serde=self.serde,
                    binding=s.actions,
                    keep=self._mine,
                    lookback_s=s.history_lookback_s,
                    timeout_s=max(deadline - time.monotonic(), 5.0),
                    group_id=f"{s.consumer_group}-replay-{uuid.uuid4().hex[:8]}",
                )
                break
            except ReplayError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("history_replay_retrying", attempt=attempt, error=str(exc))
                time.sleep(min(2.0 * attempt, 10.0))
        metrics.REPLAYED.set(result.restored)
        self._close_interrupted()
        self._update_ratio()
        self.restored.set()
        log.info(
            "history_restored",
            read=result.read,
            restored=result.restored,
            skipped=result.skipped,
            cooldowns=len(self.history.policy.active_cooldowns(self.policies, self.clock())),
        )

    def _mine(self, record: ActionRecord) -> bool:
        source = str(record.envelope.get("source", ""))
        return source == self.settings.service_name and record.model_name == self.settings.model_name

    def _close_interrupted(self) -> None:
        """Close every action ``started`` but never finished (the process died while it ran).

        An action's ``started`` record is acknowledged before it runs, so after a crash
        the replayed history knows it. It is not repeated (a half-done retrain or alias
        move is not safe to run blind): a terminal ``failed`` record with reason
        ``interrupted by restart`` goes to ``system.actions`` (so history, metrics and the
        success ratio stay truthful; the ``started`` record already holds the cooldown),
        then an alert tells a person to look. The record is stored first: a crash between
        the two loses at most the alert, never closes the action twice.
        """
        for started in self.history.unfinished():
            try:
                action = Action(started.action)
            except ValueError:
                action = Action.NONE
            condition = Condition(
                event_type=started.event_type,
                trigger_topic=started.trigger_event_type,
                trigger={"event_id": started.trigger_event_id},
                severity=Severity.parse(started.trigger_severity, Severity.MEDIUM),
                assessed=Severity.parse(started.assessed_severity, Severity.MEDIUM),
                attributes={k: v for k, v in started.details.items() if k not in ("note",)},
            )
            ctx = ActionContext(
                started.action_id,
                Decision(condition=condition, rule_id=started.rule_id, action=action),
                started.envelope,
                manual=started.details.get("manual") == "true",
                actor=started.actor,
            )
            outcome = (
                f"{INTERRUPTED_REASON}: the auto-responder stopped before this {started.action} finished "
                f"(started {started.at.isoformat()}); not repeated"
            )
            details = {"interrupted": "true", "reason": INTERRUPTED_REASON, "policy_key": started.policy_key}
            self._publish(ctx, Status.FAILED, outcome, details=details, cause=started.envelope)
            metrics.INTERRUPTED.labels(started.action).inc()
            log.warning("action_interrupted", action_id=started.action_id, action=started.action)
            self._notify(ctx, ActionResult.fail(outcome))

    def start(self) -> None:
        """Replay the history, then watch heartbeats (runtime ``on_start`` hook)."""
        self.restore()
        # Import MLflow now (seconds on a busy host) rather than while the first action waits,
        # without delaying the start of consumption.
        threading.Thread(target=self._warm_up, name="responder-warm-up", daemon=True).start()
        self._ticker = threading.Thread(target=self._tick_loop, name="responder-health", daemon=True)
        self._ticker.start()

    def _warm_up(self) -> None:
        try:
            _ = self.executors.registry
            import fraud_model.training  # noqa: F401 - the retrain's imports (xgboost, sklearn)
        except Exception as exc:
            log.warning("warm_up_failed", error=str(exc))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.settings.health_check_interval_s):
            try:
                self.tick()
            except Exception as exc:
                log.warning("health_tick_failed", error=repr(exc))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the watcher; let running actions finish for up to ``timeout_s`` (queued ones are dropped)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            # Queued actions that never ran stay "started" in the log: the next start closes
            # them as interrupted. Only the ones running now are worth waiting for.
            for action_id, running in list(self._running.items()):
                if running.future is not None and running.future.cancelled():
                    del self._running[action_id]
        deadline = time.monotonic() + timeout_s
        while self._running and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._running:
            log.warning("actions_still_running_at_stop", running=self.running())
