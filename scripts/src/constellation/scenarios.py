"""The incident scenario suite: every incident type replayed on the real constellation, measured.

    python -m constellation scenarios [--only NAME ...] [--stable-events N] [--json PATH]

Starts the infrastructure when it is not running (``stack up --infra``, idempotent), then for
each scenario, from a known-good state: a fresh registered model (its own name, so no alias,
cooldown or decision of an earlier scenario applies), a baseline ``@champion`` trained for it,
and the model services (predictor, drift-detector, auto-responder) restarted on that name with
the suite's accelerated settings (:data:`SUITE_ENV`: small windows, short label delays,
cooldowns and heartbeat timeouts; settings already in the environment win). Traffic goes
through ingest (HTTP) with the fraud labels a few seconds later on ``prediction.feedback``,
except the stable run, which produces its requests straight onto ``prediction.request``
(HTTP is too slow for a million events on a laptop) and says so.

For each scenario it reports

* detection delay: onset to the first drift/degradation event (health and overload: the
  responder's first decision on it), in seconds of event time ("demo time") and in drift
  windows (evaluations of ``DRIFT_WINDOW_STEP`` predictions at the traffic's rate);
* false alarms: drift/degradation events before the onset, or at all in the stable run;
* actions taken (``system.actions``) and the share that succeeded (suppressed decisions are
  policy, not failures, and are listed but not counted; started ones without an outcome yet
  are listed as ``unfinished``);
* time until a good model serves again: onset to the ``model.deployed`` of a ``@champion``
  at least as good (AUPRC) as the pre-incident one on a holdout of the incident's regime;
* whether the causal chain from the last ``model.deployed`` (or the last action) back to the
  incident's first cause is complete (every ``causation_id`` resolves, the root is the cause).

and prints them as a table beside the targets (:data:`TARGETS`), and writes them as JSON.
Exit code 0 when every scenario met its expectations (see ``Outcome.ok``), 1 otherwise.

The suite acts on the stack named by ``STACK_DIR`` and the port variables (see
``constellation.stack``), the normal stack by default; run it on a private one to leave a
shared stack alone: ``STACK_DIR=/tmp/scn KAFKA_PORT=19092 ... python -m constellation scenarios``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sklearn.metrics import average_precision_score

from constellation import api_keys, credentials, stack
from constellation.events import CONTROL_TOPICS, Seen, Timeline, describe, log
from constellation.traffic import DelayedLabelSender, KafkaSender, LiveTraffic, TransactionPool
from fraud_model.generator import DelayedLabels, TransactionGenerator
from fraud_model.registry import CHAMPION, ModelRegistry
from fraud_model.training import log_and_register, train
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.settings import PlatformSettings

#: The services a scenario needs (the recommender only joins the silent-service scenario).
CORE_SERVICES = ["ingest", "predictor", "drift-detector", "auto-responder", "alerter"]
#: Restarted for every scenario with the scenario's model name.
MODEL_SERVICES = ["predictor", "drift-detector", "auto-responder"]
#: What keeps running while the broken-predictor scenario has its predictor killed.
SURVIVORS_OF_PREDICTOR_KILL = ["drift-detector", "auto-responder"]
SILENT_SERVICE = "recommender"

WINDOW_SIZE, WINDOW_STEP = 1500, 500
HEARTBEAT_S = 3.0
#: How long a started action may take to report its outcome once a scenario is measured.
ACTION_OUTCOME_WAIT_S = 30.0
#: The world every scenario lives in: the champion is trained on its first rows, traffic
#: continues it (another seed would be another population of accounts and merchants, on
#: which the champion is a little worse: a degradation alarm without an incident).
WORLD_SEED = 2024

#: The accelerated clock: production windows, label minimums and cooldowns are sized for hours
#: of traffic; these make each incident play out in a few minutes of wall time.
SUITE_ENV: dict[str, str] = {
    "DRIFT_WINDOW_SIZE": str(WINDOW_SIZE),
    "DRIFT_WINDOW_STEP": str(WINDOW_STEP),
    "DRIFT_TARGET_WINDOW": str(WINDOW_SIZE),
    "DRIFT_TARGET_STEP": str(WINDOW_STEP),
    "DRIFT_MIN_LABELLED_SAMPLES": "4000",
    "DRIFT_MIN_LABELLED_POSITIVES": "60",
    "DRIFT_QUALITY_EVAL_EVERY": "200",
    "DRIFT_AB_MIN_SAMPLES": "1000",
    "DRIFT_AB_MIN_POSITIVES": "15",
    "DRIFT_REPORT_MIN_INTERVAL_S": "30",
    "DRIFT_REPEAT_INTERVAL_S": "60",
    "DRIFT_CHAMPION_REFRESH_S": "10",
    "PREDICTOR_CHALLENGER_SHARE": "0.3",
    "PREDICTOR_MODEL_REFRESH_INTERVAL_S": "5",
    "RESPONDER_RETRAIN_MIN_ROWS": "2000",
    "RESPONDER_RETRAIN_MIN_POSITIVES": "20",
    # Train on the new regime: wait for its labels, then use only the recent window.
    "RESPONDER_RETRAIN_SETTLE_S": "30",
    "RESPONDER_RETRAIN_WINDOW_S": "40",
    "RESPONDER_RETRAIN_SEARCH_TRIALS": "2",
    "RESPONDER_RETRAIN_SEARCH_TIMEOUT_S": "10",
    "RESPONDER_COOLDOWNS_S": json.dumps(
        {"retrain": 60, "rollback": 60, "scale": 30, "scale_down": 30, "alert": 30, "monitor": 20}
    ),
    "RESPONDER_DAMPENING_WINDOW_S": "120",
    # Every scenario starts with cleared cooldowns: no decision history is replayed.
    "RESPONDER_HISTORY_LOOKBACK_S": "0",
    "RESPONDER_HEARTBEAT_TIMEOUT_S": "15",
    "RESPONDER_HEALTH_CHECK_INTERVAL_S": "1",
    "RESPONDER_OVERLOAD_LAG_MESSAGES": "3000",
    "RESPONDER_OVERLOAD_CALM_LAG_MESSAGES": "300",
    "RESPONDER_OVERLOAD_CALM_S": "20",
    "RESPONDER_SCALE_MAX_INSTANCES": "2",
}

#: What the table reports against (issue 14).
TARGETS = {
    "detection_windows": 2,
    "stable_false_alarms": 0,
    "stable_events": 1_000_000,
    "action_success": 0.99,
    "good_model_s": 300.0,
    "chain_complete": True,
}

DRIFT_EVENTS = {Topic.DATA_DRIFT_DETECTED.value, Topic.MODEL_PERFORMANCE_DEGRADED.value}


# --------------------------------------------------------------------------- results


@dataclass
class Outcome:
    """One scenario's measurements (a row of the table, an object of the JSON)."""

    name: str
    title: str
    model_name: str = ""
    onset: float | None = None
    events_sent: int = 0
    via: str = "ingest HTTP"
    detected: str | None = None
    detection_s: float | None = None
    detection_windows: int | None = None
    false_alarms: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    actions_succeeded: int = 0
    actions_failed: int = 0
    good_model_s: float | None = None
    good_model_version: str | None = None
    chain: list[str] = field(default_factory=list)
    chain_complete: bool | None = None
    expectations: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def action_success(self) -> float | None:
        done = self.actions_succeeded + self.actions_failed
        return self.actions_succeeded / done if done else None

    @property
    def ok(self) -> bool:
        """Every expectation of the scenario held."""
        return all(self.expectations.values())

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "action_success": self.action_success, "ok": self.ok}


# --------------------------------------------------------------------------- the suite


@dataclass
class Options:
    rate: float = 200.0
    baseline_s: float = 30.0
    timeout_s: float = 420.0
    label_delay_s: tuple[float, float] = (3.0, 8.0)
    stable_events: int = 1_000_000
    bootstrap_rows: int = 20_000
    holdout_rows: int = 20_000
    #: Drift scenarios end once the response (a retrain) succeeded, not when a better model serves.
    quick: bool = False


class Suite:
    """The running constellation, the control-plane timeline and the traffic of one suite run."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.tag = uuid.uuid4().hex[:6]
        # This process's own clients talk to the stack the suite drives (STACK_DIR, ports), as
        # its admin: the infrastructure is started first, since a fresh stack writes the
        # credentials these clients need.
        stack.up(infra_only=True)
        credentials.export_operator_env(os.environ, credentials.credentials_path(stack.STATE))
        connection = stack.platform_env()
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
            os.environ.setdefault(name, connection[name])
        self.settings = PlatformSettings()
        topics = [*CONTROL_TOPICS, Topic.SYSTEM_HEALTH]
        self.timeline = Timeline(self.settings, self.on_event, topics=topics)
        self.serde = self.timeline.serde
        self.model_name = ""
        self.registry: ModelRegistry | None = None
        self.lags: dict[str, int] = {}
        self.scores: dict[tuple[str, str], float] = {}
        self.labels_producer: EventProducer | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for key, value in SUITE_ENV.items():
            os.environ.setdefault(key, value)
        for spec in stack.SERVICES:
            os.environ.setdefault(f"{spec.env_prefix}HEARTBEAT_INTERVAL_S", str(HEARTBEAT_S))
        self.timeline.start()
        if not self.timeline.assigned.wait(60):
            raise stack.StackError("the timeline consumer got no partitions within 60s")
        self.labels_producer = EventProducer(self.settings, "chargeback-simulator", self.serde)
        for name in CORE_SERVICES:
            if name not in MODEL_SERVICES:
                stack.start_service(stack.SERVICE_BY_NAME[name])

    def close(self) -> None:
        self.timeline.stop_event.set()
        if self.timeline.is_alive():
            self.timeline.join(10)
        if self.labels_producer is not None:
            self.labels_producer.close()

    @property
    def labels(self) -> EventProducer:
        """The chargeback feed's producer (labels straight onto prediction.feedback)."""
        if self.labels_producer is None:
            raise stack.StackError("the suite is not started")
        return self.labels_producer

    def on_event(self, topic: str, value: dict[str, Any]) -> None:
        if topic == Topic.SYSTEM_HEALTH:
            lag = (value.get("details") or {}).get("consumer_lag")
            if lag is not None:
                self.lags[str(value.get("instance_id") or value.get("service"))] = int(float(lag))
            return
        if self.ours(topic, value):
            log(f"  {describe(topic, value)[:150]}")

    def ours(self, topic: str, value: dict[str, Any]) -> bool:
        """Events of this scenario's model (events without a model name count as ours)."""
        name = value.get("model_name")
        return topic != Topic.SYSTEM_HEALTH and (name is None or name == self.model_name)

    def fresh_model(self, scenario: str) -> str:
        """A registered model for this scenario with a baseline champion; model services restarted."""
        self.model_name = f"fraud_scn_{scenario}_{self.tag}"
        for prefix in ("PREDICTOR_", "DRIFT_", "RESPONDER_"):
            os.environ[f"{prefix}MODEL_NAME"] = self.model_name
        # The drift-detector's durable state (windows, labelled samples, deployments) belongs
        # to the model it monitored: a fresh topic, so nothing of the last scenario is restored.
        os.environ["DRIFT_STATE_TOPIC"] = f"drift-detector-state-{self.model_name}"
        version = stack.bootstrap_model(
            "--model-name",
            self.model_name,
            "--rows",
            str(self.options.bootstrap_rows),
            "--seed",
            str(WORLD_SEED),
            "--force",
        )
        self.registry = ModelRegistry(stack.platform_env()["MLFLOW_TRACKING_URI"], self.model_name)
        # The responder last: it must not see the others' restart as silence.
        for name in reversed(MODEL_SERVICES):
            stop_service(name)
        for name in MODEL_SERVICES:
            stack.start_service(stack.SERVICE_BY_NAME[name])
        log(f"model {self.model_name}: @champion v{version}; model services restarted")
        return version

    # ------------------------------------------------------------ traffic

    def traffic(self, label_delay_s: tuple[float, float] | None = None) -> LiveTraffic:
        delay = label_delay_s or self.options.label_delay_s
        labels = DelayedLabelSender(self.labels, delay, seed=int(time.time()))
        traffic = LiveTraffic(
            f"http://{stack.HOST}:{stack.SERVICE_BY_NAME['ingest'].port}",
            self.options.rate,
            labels,
            seed=int(time.time()) % 100_000,
            interactions_per_tick=0,
            api_key=api_keys.client_key(Role.PRODUCER, "INGEST_API_KEY"),
        )
        traffic.generator = self.world()
        traffic.start()
        return traffic

    def world(self) -> TransactionGenerator:
        """The champion's world, past the rows it was trained on."""
        generator = TransactionGenerator(seed=WORLD_SEED)
        generator.generate_frame(self.options.bootstrap_rows)
        return generator

    def window_s(self) -> float:
        """Seconds of traffic one drift window step spans at the suite's rate."""
        return WINDOW_STEP / self.options.rate

    # ------------------------------------------------------------ observing

    def events(self, start: float, end: float | None = None) -> list[Seen]:
        return [s for s in self.timeline.since(start, end) if self.ours(s.topic, s.value)]

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float, guard: Callable[[], None]) -> bool:
        """Poll ``done`` (``guard`` checks the traffic) until it holds or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            guard()
            if done():
                return True
            time.sleep(1.0)
        log(f"  ! gave up waiting for {what} after {timeout_s:.0f}s")
        return False

    def auprc(self, version: str, regime: str) -> float:
        """AUPRC of ``version`` on a holdout of the ``regime`` scenario (cached per version)."""
        key = (version, regime)
        if key not in self.scores:
            assert self.registry is not None
            generator = self.world()
            generator.generate_frame(50_000)  # past what traffic sends in a scenario
            generator.scenario = regime
            rows = generator.generate(self.options.holdout_rows)
            scores = self.registry.load_booster(version).score(rows)
            self.scores[key] = float(average_precision_score([r["is_fraud"] for r in rows], scores))
        return self.scores[key]

    def deployed(self, start: float) -> list[Seen]:
        return [
            s
            for s in self.events(start)
            if s.topic == Topic.MODEL_DEPLOYED and s.value.get("alias") == CHAMPION
        ]

    def good_deployment(self, start: float, reference: str, regime: str, exclude: str = "") -> Seen | None:
        """The first champion deployment since ``start`` at least as good as ``reference``."""
        floor = self.auprc(reference, regime)
        for seen in self.deployed(start):
            version = str(seen.value["version"])
            if version != exclude and self.auprc(version, regime) >= floor - 1e-9:
                return seen
        return None


def stop_service(name: str) -> None:
    spec = stack.SERVICE_BY_NAME[name]
    for instance, index in stack._instance_names(spec):
        stack.stop(instance)
        stack.set_scrape_target(spec, index, present=False)


def signal_service(name: str, signum: signal.Signals) -> int:
    """Send ``signum`` to every process of a service's first instance; returns its pid."""
    pid = stack.running_pid(name)
    if pid is None:
        raise stack.StackError(f"{name} is not running")
    os.killpg(pid, signum)
    return pid


# --------------------------------------------------------------------------- measuring


def measure(
    suite: Suite,
    outcome: Outcome,
    start: float,
    *,
    detect: Callable[[Seen], bool] | None,
    cause_topics: Iterable[str],
    regime: str | None = None,
    reference: str | None = None,
    exclude: str = "",
    chain_from: Callable[[Seen], bool] | None = None,
    outcome_wait_s: float = ACTION_OUTCOME_WAIT_S,
) -> None:
    """Fill ``outcome`` from the events since ``start`` (the scenario's known-good start).

    The chain is walked from the last event ``chain_from`` accepts, by default the last
    ``model.deployed`` since the onset (or else the last decision). An action started and
    not finished yet gets up to ``outcome_wait_s`` to report its outcome first: a scenario's
    own wait ends when the action's effect is visible (the good model's ``model.deployed``),
    which the auto-responder publishes a moment before the action's ``succeeded`` record.
    """
    if unfinished_actions(suite.events(start)):
        suite.wait(
            "the started actions' outcomes",
            lambda: not unfinished_actions(suite.events(start)),
            outcome_wait_s,
            guard_for(suite, None),
        )
    events = suite.events(start)
    onset = outcome.onset
    if onset is not None and detect is not None:
        detection = next((s for s in events if s.received_at >= onset and detect(s)), None)
        if detection is not None:
            outcome.detected = describe(detection.topic, detection.value)[:80]
            delay = max(0.0, min(detection.event_time, detection.received_at) - onset)
            outcome.detection_s = round(delay, 1)
            outcome.detection_windows = max(1, math.ceil(delay / suite.window_s()))
    alarms = [s for s in events if is_alarm(s)]
    outcome.false_alarms = len(alarms if onset is None else [s for s in alarms if s.received_at < onset])
    for seen in events:
        if seen.topic != Topic.SYSTEM_ACTIONS or seen.value["status"] == "started":
            continue
        key = f"{seen.value['action']}:{seen.value['status']}"
        outcome.actions[key] = outcome.actions.get(key, 0) + 1
        outcome.actions_succeeded += seen.value["status"] == "succeeded"
        outcome.actions_failed += seen.value["status"] == "failed"
    # Still running when measured: counted apart, so a slow action is told from no action.
    for action in unfinished_actions(events).values():
        outcome.actions[f"{action}:unfinished"] = outcome.actions.get(f"{action}:unfinished", 0) + 1
    stopped = [name for name in MODEL_SERVICES if stack.running_pid(name) is None]
    if stopped:
        outcome.notes.append(f"not running when measured: {', '.join(stopped)}")
    if onset is not None and regime and reference:
        good = suite.good_deployment(onset, reference, regime, exclude)
        if good is not None:
            outcome.good_model_s = round(good.received_at - onset, 1)
            outcome.good_model_version = str(good.value["version"])
    deployed = [
        s for s in events if s.topic == Topic.MODEL_DEPLOYED and (onset is None or s.received_at >= onset)
    ]
    actions = [s for s in events if s.topic == Topic.SYSTEM_ACTIONS and s.value["status"] != "started"]
    last = deployed[-1] if deployed else (actions[-1] if actions else None)
    if chain_from is not None:
        last = next((s for s in reversed(events) if chain_from(s)), None)
    if last is not None:
        chain, complete = suite.timeline.walk(last.event_id, cause_topics)
        outcome.chain = [s.topic for s in chain]
        outcome.chain_complete = complete


def is_alarm(seen: Seen) -> bool:
    """A drift (or watch) or degradation event: what must not happen without an incident."""
    if seen.topic == Topic.MODEL_PERFORMANCE_DEGRADED:
        return True
    return seen.topic == Topic.DATA_DRIFT_DETECTED and seen.value.get("state") != "stable"


def decided_by(*rule_ids: str, service: str | None = None) -> Callable[[Seen], bool]:
    """A decision of the responder by one of ``rule_ids`` (a health/overload detection).

    ``service``: only decisions about that service (named in the outcome or details).
    """

    def match(seen: Seen) -> bool:
        if seen.topic != Topic.SYSTEM_ACTIONS or seen.value["rule_id"] not in rule_ids:
            return False
        about = json.dumps(seen.value.get("details") or {}) + seen.value["outcome"]
        return service is None or service in about

    return match


HEALTH_FAILED = ("predictor-health-check-failed", "service-health-check-failed")
HEALTH_RECOVERED = ("service-health-recovered",)


def unfinished_actions(events: Iterable[Seen]) -> dict[str, str]:
    """Actions (id → name) with a ``started`` record and no outcome yet among ``events``."""
    started: dict[str, str] = {}
    for seen in events:
        if seen.topic != Topic.SYSTEM_ACTIONS:
            continue
        if seen.value["status"] == "started":
            started[seen.value["action_id"]] = seen.value["action"]
        else:
            started.pop(seen.value["action_id"], None)
    return started


def action_done(suite: Suite, start: float, action: str, status: str | None = "succeeded") -> bool:
    return any(
        s.topic == Topic.SYSTEM_ACTIONS
        and s.value["action"] == action
        and (s.value["status"] == status if status else s.value["status"] != "started")
        for s in suite.events(start)
    )


def guard_for(suite: Suite, traffic: LiveTraffic | None, services: Sequence[str] = ()) -> Callable[[], None]:
    """A check run while a scenario waits: what it measures with must still be there.

    The timeline (a dead one would read as "nothing happened"), the traffic, and
    ``services``: the ones the scenario leaves running, named with their log's tail.
    """

    def guard() -> None:
        try:
            suite.timeline.check()
        except RuntimeError as exc:
            raise stack.StackError(str(exc)) from exc
        if traffic is not None and not traffic.is_alive():
            raise stack.StackError("the traffic thread died")
        for name in services:
            if stack.running_pid(name) is None:
                tail = stack.log_tail(name)
                raise stack.StackError(f"{name} stopped during the scenario; its log:\n{tail}")

    return guard


# --------------------------------------------------------------------------- scenarios


def drift_scenario(suite: Suite, name: str, title: str, regime: str, switch_to: str | None = None) -> Outcome:
    """Baseline traffic, then the generator switches to ``switch_to``; the loop must close."""
    outcome = Outcome(name, title)
    champion = suite.fresh_model(name)
    outcome.model_name = suite.model_name
    start = time.time()
    traffic = suite.traffic()
    try:
        time.sleep(suite.options.baseline_s)
        traffic.switch(switch_to or regime)
        outcome.onset = time.time()
        log(f"  onset: the generator now produces '{switch_to or regime}'")
        onset = outcome.onset
        suite.wait(
            "a better model serving",
            lambda: (
                (suite.options.quick and action_done(suite, onset, "retrain"))
                or suite.good_deployment(onset, champion, regime, exclude=champion) is not None
            ),
            suite.options.timeout_s,
            guard_for(suite, traffic, MODEL_SERVICES),
        )
    finally:
        traffic.stop()
        traffic.join(10)
        outcome.events_sent = traffic.counters.transactions
    measure(
        suite,
        outcome,
        start,
        detect=is_alarm,
        cause_topics=DRIFT_EVENTS,
        regime=regime,
        reference=champion,
        exclude=champion,
    )
    outcome.expectations = {
        "detected": outcome.detection_windows is not None,
        "good model serving": outcome.good_model_s is not None or suite.options.quick,
        "no action failed": outcome.actions_failed == 0,
        "chain complete": bool(outcome.chain_complete),
    }
    return outcome


def sudden_drift(suite: Suite) -> Outcome:
    return drift_scenario(suite, "sudden_drift", "sudden data drift (fraud_wave)", "fraud_wave")


def gradual_drift(suite: Suite) -> Outcome:
    # The holdout is the regime the ramp ends in.
    return drift_scenario(
        suite, "gradual_drift", "gradual drift (ramp to fraud_wave)", "fraud_wave", "gradual"
    )


def concept_drift(suite: Suite) -> Outcome:
    return drift_scenario(suite, "concept_drift", "concept drift, features unchanged", "concept")


def label_delay(suite: Suite) -> Outcome:
    """Concept drift while labels arrive many windows late: detection waits for the labels."""
    windows = 8
    delay = windows * suite.window_s()
    outcome = Outcome("label_delay", f"concept drift, labels {windows} windows late")
    champion = suite.fresh_model("label_delay")
    outcome.model_name = suite.model_name
    start = time.time()
    traffic = suite.traffic(label_delay_s=(delay, delay * 1.2))
    try:
        time.sleep(suite.options.baseline_s + delay)
        traffic.switch("concept")
        outcome.onset = onset = time.time()
        log(f"  onset: concept drift; labels arrive {delay:.0f}-{delay * 1.2:.0f}s late")
        suite.wait(
            "a better model serving",
            lambda: suite.good_deployment(onset, champion, "concept", exclude=champion) is not None,
            suite.options.timeout_s,
            guard_for(suite, traffic, MODEL_SERVICES),
        )
    finally:
        traffic.stop()
        traffic.join(10)
        outcome.events_sent = traffic.counters.transactions
    measure(
        suite,
        outcome,
        start,
        detect=is_alarm,
        cause_topics=DRIFT_EVENTS,
        regime="concept",
        reference=champion,
        exclude=champion,
    )
    outcome.notes.append(f"label delay {delay:.0f}-{delay * 1.2:.0f}s ({windows} windows)")
    outcome.expectations = {
        # Not before the labels could show it: no guess on missing data.
        "detected after the labels": outcome.detection_s is not None and outcome.detection_s >= delay * 0.9,
        "no action failed": outcome.actions_failed == 0,
        "chain complete": outcome.chain_complete is not False,
    }
    return outcome


def label_outage(suite: Suite) -> Outcome:
    """Concept drift while no label arrives: invisible, and nothing may be done on missing data."""
    outage_windows = 24
    outcome = Outcome("label_outage", f"labels stop ({outage_windows} windows), concept drift")
    suite.fresh_model("label_outage")
    outcome.model_name = suite.model_name
    start = time.time()
    traffic = suite.traffic()
    try:
        time.sleep(suite.options.baseline_s)
        # From now on no label is scheduled: the chargeback feed is down.
        traffic.labels.drop_rate = 1.0
        traffic.labels.pending = DelayedLabels()
        traffic.switch("concept")
        outcome.onset = onset = time.time()
        log("  onset: labels stop, the world drifts (concept)")
        time.sleep(outage_windows * suite.window_s() + suite.options.label_delay_s[1])
        guard_for(suite, traffic, MODEL_SERVICES)()
    finally:
        traffic.stop()
        traffic.join(10)
        outcome.events_sent = traffic.counters.transactions
    measure(suite, outcome, start, detect=is_alarm, cause_topics=DRIFT_EVENTS)
    after = [s for s in suite.events(onset) if s.topic == Topic.SYSTEM_ACTIONS]
    acted = [s for s in after if s.value["action"] not in ("none", "monitor")]
    outcome.notes.append(f"{len(acted)} actions after the labels stopped")
    outcome.expectations = {
        "no alarm before onset": outcome.false_alarms == 0,
        "no action on missing labels": not acted,
    }
    return outcome


def bad_model(suite: Suite) -> Outcome:
    """An operator promotes a deliberately bad version: the quality drop must roll it back."""
    outcome = Outcome("bad_model", "bad model deployed (operator promote)")
    champion = suite.fresh_model("bad_model")
    outcome.model_name = suite.model_name
    start = time.time()
    traffic = suite.traffic()
    try:
        bad = register_bad_model(suite)
        time.sleep(max(0.0, suite.options.baseline_s - (time.time() - start)))
        assert suite.registry is not None
        previous, _new = suite.registry.promote(bad)
        event = make_event(
            "operator",
            {
                "model_name": suite.model_name,
                "alias": CHAMPION,
                "version": str(bad),
                "previous_version": previous,
                "action": "promote",
                "reason": "scenario bad_model: an operator promotes an untested version",
            },
        )
        producer = EventProducer(suite.settings, "operator", suite.serde)
        producer.produce(Topic.MODEL_DEPLOYED, event, key=suite.model_name)
        producer.close()
        outcome.onset = onset = time.time()
        log(f"  onset: bad v{bad} promoted to @champion (was v{previous})")
        suite.wait(
            "the rollback",
            lambda: suite.good_deployment(onset, champion, "baseline", exclude=str(bad)) is not None,
            suite.options.timeout_s,
            guard_for(suite, traffic, MODEL_SERVICES),
        )
    finally:
        traffic.stop()
        traffic.join(10)
        outcome.events_sent = traffic.counters.transactions
    measure(
        suite,
        outcome,
        start,
        detect=is_alarm,
        cause_topics=[*DRIFT_EVENTS, Topic.MODEL_DEPLOYED.value],
        regime="baseline",
        reference=champion,
        exclude=str(bad),
    )
    outcome.expectations = {
        "detected": outcome.detection_windows is not None,
        "rolled back": action_done(suite, start, "rollback"),
        "good model serving": outcome.good_model_s is not None,
        "chain complete": bool(outcome.chain_complete),
    }
    return outcome


def register_bad_model(suite: Suite) -> str:
    """A version trained on shuffled labels (useless, but it loads and scores)."""
    frame = TransactionGenerator(seed=99).generate_frame(8_000)
    frame["is_fraud"] = frame["is_fraud"].sample(frac=1.0, random_state=1).to_numpy()
    info = log_and_register(
        train(frame, seed=1),
        tracking_uri=stack.platform_env()["MLFLOW_TRACKING_URI"],
        model_name=suite.model_name,
        reason="scenario bad_model: trained on shuffled labels",
        min_auc=0.0,
    )
    return str(info.version)


def broken_predictor(suite: Suite) -> Outcome:
    """The predictor dies (SIGKILL): silence on system.health -> rollback, or an alert without one."""
    outcome = Outcome("broken_predictor", "predictor killed")
    suite.fresh_model("broken_predictor")
    outcome.model_name = suite.model_name
    start = time.time()
    traffic = suite.traffic()
    detect = decided_by(*HEALTH_FAILED, service="predictor")
    try:
        time.sleep(suite.options.baseline_s)
        signal_service("predictor", signal.SIGKILL)
        outcome.onset = onset = time.time()
        log("  onset: predictor killed (SIGKILL)")
        suite.wait(
            "a decision on the silent predictor",
            lambda: any(detect(s) and s.value["status"] != "started" for s in suite.events(onset)),
            suite.options.timeout_s,
            guard_for(suite, traffic, SURVIVORS_OF_PREDICTOR_KILL),
        )
        # The operator (here: the suite) restarts it; the responder must see it recover.
        stack.start_service(stack.SERVICE_BY_NAME["predictor"])
        suite.wait(
            "the recovery",
            lambda: any(decided_by(*HEALTH_RECOVERED, service="predictor")(s) for s in suite.events(onset)),
            60,
            guard_for(suite, traffic, MODEL_SERVICES),
        )
    finally:
        traffic.stop()
        traffic.join(10)
        outcome.events_sent = traffic.counters.transactions
    measure(suite, outcome, start, detect=detect, cause_topics=[Topic.SYSTEM_HEALTH.value])
    outcome.notes.append("the process is restarted by the suite (no automation restarts processes)")
    outcome.expectations = {
        "detected": outcome.detection_s is not None,
        "rollback or alert": action_done(suite, onset, "rollback") or action_done(suite, onset, "alert"),
        "no action failed": outcome.actions_failed == 0,
        "chain complete": bool(outcome.chain_complete),
    }
    return outcome


def overload(suite: Suite) -> Outcome:
    """A burst far above what one predictor scores: lag -> scale up, then scale down when it passes."""
    outcome = Outcome("overload", "overload burst (lag)", via="Kafka (prediction.request)")
    suite.fresh_model("overload")
    outcome.model_name = suite.model_name
    start = time.time()
    traffic = suite.traffic()
    burst = 60_000
    try:
        time.sleep(suite.options.baseline_s)
        outcome.onset = onset = time.time()
        log(f"  onset: {burst} requests at once onto prediction.request")
        outcome.events_sent = send_straight(suite, burst, "overload")
        suite.wait(
            "scale up and scale down",
            lambda: action_done(suite, onset, "scale_down", None),
            suite.options.timeout_s,
            guard_for(suite, traffic, MODEL_SERVICES),
        )
    finally:
        traffic.stop()
        traffic.join(10)
        outcome.events_sent += traffic.counters.transactions
        stack.scale("predictor", 1)
    # The overload's own decisions: a retrain the run's labels may trigger is another story.
    measure(
        suite,
        outcome,
        start,
        detect=decided_by("system-overload"),
        cause_topics=[Topic.SYSTEM_HEALTH.value],
        chain_from=decided_by("system-overload", "system-overload-cleared"),
    )
    outcome.expectations = {
        "scaled up": action_done(suite, start, "scale"),
        "scaled down": action_done(suite, start, "scale_down"),
        "no action failed": outcome.actions_failed == 0,
        "chain complete": bool(outcome.chain_complete),
    }
    return outcome


def silent_service(suite: Suite) -> Outcome:
    """The recommender freezes (SIGSTOP): its heartbeats stop -> alert; it resumes -> recovered."""
    outcome = Outcome("silent_service", f"{SILENT_SERVICE} goes silent (SIGSTOP)")
    suite.fresh_model("silent_service")
    outcome.model_name = suite.model_name
    stack.start_service(stack.SERVICE_BY_NAME[SILENT_SERVICE])
    start = time.time()
    detect = decided_by(*HEALTH_FAILED, service=SILENT_SERVICE)
    try:
        time.sleep(max(suite.options.baseline_s, 3 * HEARTBEAT_S))
        signal_service(SILENT_SERVICE, signal.SIGSTOP)
        outcome.onset = onset = time.time()
        log(f"  onset: {SILENT_SERVICE} frozen")
        suite.wait(
            "an alert on the silent service",
            lambda: any(detect(s) and s.value["status"] != "started" for s in suite.events(onset)),
            suite.options.timeout_s,
            lambda: None,
        )
    finally:
        signal_service(SILENT_SERVICE, signal.SIGCONT)
    suite.wait(
        "the recovery",
        lambda: any(decided_by(*HEALTH_RECOVERED, service=SILENT_SERVICE)(s) for s in suite.events(onset)),
        60,
        lambda: None,
    )
    stop_service(SILENT_SERVICE)
    measure(suite, outcome, start, detect=detect, cause_topics=[Topic.SYSTEM_HEALTH.value])
    outcome.via = "-"
    outcome.expectations = {
        "detected": outcome.detection_s is not None,
        "alerted": action_done(suite, onset, "alert"),
        "no action failed": outcome.actions_failed == 0,
        "chain complete": bool(outcome.chain_complete),
    }
    return outcome


def stable(suite: Suite) -> Outcome:
    """Baseline traffic only, straight onto Kafka with its labels: nothing may fire."""
    count = suite.options.stable_events
    outcome = Outcome("stable", f"stable traffic, {count:,} events", via="Kafka (prediction.request)")
    suite.fresh_model("stable")
    outcome.model_name = suite.model_name
    start = time.time()
    outcome.events_sent = send_straight(suite, count, "stable", with_labels=True)
    # Done when the predictor and the drift-detector caught up (their heartbeats' lag).
    suite.lags.clear()
    suite.wait(
        "the pipeline to catch up",
        lambda: (
            bool(suite.lags)
            and all(v == 0 for k, v in suite.lags.items() if k.startswith(("predictor", "drift-detector")))
            and any(k.startswith("drift-detector") for k in suite.lags)
        ),
        max(suite.options.timeout_s, count / 500),
        lambda: None,
    )
    # The last windows and label evaluations land a heartbeat later.
    time.sleep(3 * HEARTBEAT_S)
    # A scaling decision for the burst goes back to the heartbeat that reported the lag.
    measure(suite, outcome, start, detect=None, cause_topics=[*DRIFT_EVENTS, Topic.SYSTEM_HEALTH.value])
    # Sent as fast as Kafka takes it, the run is also a burst: scaling the predictor for the
    # lag is the right response, not a false alarm. Any model action is one.
    model_actions = [k for k in outcome.actions if k.split(":")[0] not in ("scale", "scale_down")]
    outcome.expectations = {
        "no false alarm": outcome.false_alarms == 0,
        "no model action": not model_actions,
    }
    if count < TARGETS["stable_events"]:
        outcome.notes.append(f"shortened: {count:,} events (target run: {TARGETS['stable_events']:,})")
    return outcome


def send_straight(suite: Suite, count: int, prefix: str, with_labels: bool = False) -> int:
    """``count`` baseline requests produced straight onto ``prediction.request`` (and their labels)."""
    sender = KafkaSender(suite.settings, Topic.PREDICTION_REQUEST.value, suite.serde, source="scenarios")
    rows = suite.world()
    pool = TransactionPool([dict(r) for r in rows.generate(50_000)])
    labels = DelayedLabelSender(suite.labels, suite.options.label_delay_s, drop_rate=0.0, seed=5)
    sent, chunk = 0, 5_000
    tag = f"{prefix}-{suite.tag}"
    try:
        while sent < count:
            n = min(chunk, count - sent)
            if with_labels:
                batch = [
                    {**row, "transaction_id": f"{tag}-{sent + i}"} for i, row in enumerate(rows.generate(n))
                ]
            else:
                batch = list(pool.take(n, f"{tag}-{sent}"))
            now = time.time()
            sender.send(sender.prepare([(txn, now) for txn in batch]))
            if with_labels:
                labels.schedule(batch)
                labels.send_due()
            sent += n
        sender.flush()
        while with_labels and len(labels.pending):
            labels.send_due()
            time.sleep(0.2)
        suite.labels.flush()
    finally:
        sender.close()
    return sent


SCENARIOS: dict[str, Callable[[Suite], Outcome]] = {
    "stable": stable,
    "sudden_drift": sudden_drift,
    "gradual_drift": gradual_drift,
    "concept_drift": concept_drift,
    "label_delay": label_delay,
    "label_outage": label_outage,
    "bad_model": bad_model,
    "broken_predictor": broken_predictor,
    "overload": overload,
    "silent_service": silent_service,
}


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def table(outcomes: list[Outcome], options: Options) -> str:
    """The suite's table, with the targets beside the figures."""
    window_s = WINDOW_STEP / options.rate
    header = (
        f"{'scenario':<17} {'events':>9} {'detect (win / s)':>17} {'false':>5} "
        f"{'actions (succeeded/failed)':<44} {'good model':>10} {'chain':>6}  result"
    )
    lines = [
        f"Drift windows: {WINDOW_SIZE} predictions sliding by {WINDOW_STEP} "
        f"(one step = {window_s:.1f}s of demo time at {options.rate:.0f} tx/s)",
        header,
        "-" * len(header),
    ]
    for o in outcomes:
        detect = (
            f"{o.detection_windows} / {o.detection_s:.0f}s"
            if o.detection_windows is not None and o.detection_s is not None
            else "-"
        )
        actions = " ".join(f"{short_action(k)}x{v}" for k, v in sorted(o.actions.items())) or "none"
        actions = f"{actions} ({o.actions_succeeded}/{o.actions_failed})"
        chain = "-" if o.chain_complete is None else ("yes" if o.chain_complete else "NO")
        failed = [k for k, v in o.expectations.items() if not v]
        result = "ok" if not failed else "FAILED: " + ", ".join(failed)
        lines.append(
            f"{o.name:<17} {o.events_sent:>9,} {detect:>17} {o.false_alarms:>5} {actions:<44} "
            f"{_fmt(o.good_model_s, 's'):>10} {chain:>6}  {result}"
        )
    lines.append("-" * len(header))
    lines += summary(outcomes)
    return "\n".join(lines)


def short_action(key: str) -> str:
    """``retrain:succeeded`` -> ``retrain:ok`` (suppressed: ``sup``, failed: ``FAILED``)."""
    action, _, status = key.partition(":")
    return f"{action}:{ {'succeeded': 'ok', 'suppressed': 'sup', 'failed': 'FAILED'}.get(status, status) }"


def summary(outcomes: list[Outcome]) -> list[str]:
    """The targets, each with the suite's figure."""
    detections = [o.detection_windows for o in outcomes if o.name in DRIFT_SCENARIOS and o.detection_windows]
    stable_runs = [o for o in outcomes if o.name == "stable"]
    succeeded = sum(o.actions_succeeded for o in outcomes)
    done = succeeded + sum(o.actions_failed for o in outcomes)
    good = [o.good_model_s for o in outcomes if o.good_model_s is not None]
    chains = [o.chain_complete for o in outcomes if o.chain_complete is not None]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    rows = [
        (
            f"drift detected within {TARGETS['detection_windows']} windows of onset",
            f"worst {max(detections)} windows" if detections else "no drift scenario detected",
            verdict(bool(detections) and max(detections) <= TARGETS["detection_windows"])
            if detections
            else None,
        ),
        (
            f"0 drift/degradation events over {TARGETS['stable_events']:,} stable events",
            ", ".join(f"{o.false_alarms} over {o.events_sent:,}" for o in stable_runs) or "not run",
            verdict(all(o.false_alarms == 0 for o in stable_runs)) if stable_runs else None,
        ),
        (
            f">= {TARGETS['action_success']:.0%} of actions succeed",
            f"{succeeded}/{done}" if done else "no action",
            verdict(succeeded / done >= TARGETS["action_success"]) if done else None,
        ),
        (
            f"a better model serving within {TARGETS['good_model_s']:.0f}s of demo time",
            f"worst {max(good):.0f}s" if good else "none",
            verdict(max(good) <= TARGETS["good_model_s"]) if good else None,
        ),
        (
            "causal chains complete",
            f"{sum(bool(c) for c in chains)}/{len(chains)}",
            verdict(all(chains)) if chains else None,
        ),
    ]
    return ["Targets:"] + [
        f"  {target:<62} {figure:<28} {verdict_ or 'n/a'}" for target, figure, verdict_ in rows
    ]


DRIFT_SCENARIOS = {"sudden_drift", "gradual_drift", "concept_drift"}


# --------------------------------------------------------------------------- command


def write_json(path: Path, outcomes: list[Outcome], options: Options) -> None:
    """The run's figures, targets, window and options as JSON."""
    payload = {
        "targets": TARGETS,
        "window": {"size": WINDOW_SIZE, "step": WINDOW_STEP, "step_s": WINDOW_STEP / options.rate},
        "options": asdict(options),
        "scenarios": [o.as_json() for o in outcomes],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m constellation scenarios",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME", help="run only these")
    p.add_argument("--stable-events", type=int, default=1_000_000, help="events of the stable run")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--rate", type=float, default=200.0, help="transactions per second through ingest")
    p.add_argument("--baseline-s", type=float, default=30.0, help="baseline traffic before each onset")
    p.add_argument("--timeout-s", type=float, default=420.0, help="longest wait for a scenario's outcome")
    p.add_argument(
        "--quick",
        action="store_true",
        help="drift scenarios end once the retrain succeeded (no wait for the better model to serve)",
    )
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the services running at the end (default: stop them)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.stable_events < 1 or args.rate <= 0 or args.baseline_s < 0:
        print("--stable-events and --rate must be positive, --baseline-s not negative", file=sys.stderr)
        return 2
    options = Options(
        rate=args.rate,
        baseline_s=args.baseline_s,
        timeout_s=args.timeout_s,
        stable_events=args.stable_events,
        quick=args.quick,
    )
    names = args.only or list(SCENARIOS)
    # SIGTERM (a supervisor, a test's timeout) unwinds like Ctrl+C: the services get stopped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    suite = Suite(options)
    outcomes: list[Outcome] = []
    try:
        suite.start()
        for name in names:
            log(f"=== scenario {name}")
            began = time.monotonic()
            try:
                outcome = SCENARIOS[name](suite)
            except Exception as exc:  # one broken scenario must not hide the others' results
                outcome = Outcome(name, name, notes=[f"error: {exc!r}"], expectations={"ran": False})
                log(f"  ! {name} failed: {exc!r}")
            outcome.wall_s = round(time.monotonic() - began, 1)
            outcomes.append(outcome)
            log(f"  {name}: {'ok' if outcome.ok else 'FAILED'} in {outcome.wall_s:.0f}s wall")
            if args.json:
                # After every scenario: an interrupted run keeps what it measured.
                write_json(args.json, outcomes, options)
    except stack.StackError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    finally:
        suite.close()
        if not args.keep_running:
            for name in reversed([*CORE_SERVICES, SILENT_SERVICE]):
                stop_service(name)
    print()
    print(table(outcomes, options))
    if args.json:
        write_json(args.json, outcomes, options)
        print(f"\nwritten: {args.json}")
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
