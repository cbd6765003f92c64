"""Infrastructure faults with traffic through ingest: Kafka brokers, the schema registry and MLflow.

These scenarios kill infrastructure, so they never touch the shared stack: each test class
starts a PRIVATE stack with the project's own command (``python -m constellation stack up
--infra``) in a temporary ``STACK_DIR`` on free ports (one broker, or ``KAFKA_BROKERS=3``),
registers a small champion in its MLflow, runs ingest and a predictor against it, and tears
all of it down (``stack down``) when the class ends, whether its tests passed or not.
Faults go through the project's commands too: ``stack kill NAME`` (SIGKILL) and
``stack start NAME``.

Traffic: batches of generator transactions posted to ingest's ``POST /transactions/batch``,
each with its own ``Idempotency-Key``, retried with the same key on 503 or a lost connection
(like a real client) until ingest answers 202. At the end every transaction id is counted on
``prediction.completed`` read with ``isolation.level=read_committed``
(:mod:`tests.support.chaos`); the ledger also gets the recovery times and the longest gap
between two completions (the stall), reported and never asserted.

Settings (environment, ``CHAOS_`` prefix): ``CHAOS_TRANSACTIONS`` per scenario,
``CHAOS_REGISTRY_DOWN_S`` and ``CHAOS_MLFLOW_DOWN_S`` (how long the registry and MLflow stay
down; the defaults keep the tier within CI's budget, the issue's 60 s and 120 s are
``CHAOS_REGISTRY_DOWN_S=60 CHAOS_MLFLOW_DOWN_S=120``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import AdminClient
from pydantic_settings import BaseSettings, SettingsConfigDict

from constellation import credentials
from constellation.traffic import TransactionPool
from fraud_model.registry import ModelRegistry
from mlops_platform.settings import PlatformSettings
from tests.support.chaos import Ledger, Recovery, committed_ids, positions
from tests.support.models import log_small_models, register_copies
from tests.support.processes import (
    ROOT,
    ServiceLauncher,
    ServiceProcess,
    connection_env,
    free_port,
    wait_until,
)
from tests.support.scoring import COMPLETED, REQUEST

pytestmark = pytest.mark.chaos


class ChaosSettings(BaseSettings):
    """How much traffic and how long an outage (``CHAOS_*``)."""

    model_config = SettingsConfigDict(env_prefix="CHAOS_", extra="ignore")

    transactions: int = 2000
    batch_size: int = 50
    registry_down_s: float = 20.0
    mlflow_down_s: float = 30.0
    #: Upper bound for a stream to be accepted and for its predictions to arrive.
    settle_timeout_s: float = 300.0


SETTINGS = ChaosSettings()

# Connection and credential variables of the shared stack (tests/conftest.py exports the
# admin's): a private stack's commands and clients must not inherit them.
_SHARED_VARS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "SCHEMA_REGISTRY_URL",
    "MLFLOW_TRACKING_URI",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    *credentials.KAFKA_CREDENTIAL_VARS,
    *credentials.REGISTRY_CREDENTIAL_VARS,
)


def free_port_run(length: int, host: str = "127.0.0.1") -> int:
    """The first of ``length`` consecutive free ports (the brokers' and controllers' listeners)."""
    for _attempt in range(50):
        first = free_port(host)
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + length):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return first
    pytest.fail(f"no {length} consecutive free ports on {host}", pytrace=False)


# --------------------------------------------------------------------------- the private stack


@dataclass
class PrivateStack:
    """A stack of its own (``STACK_DIR``, ports, credentials), driven by ``python -m constellation stack``."""

    directory: Path
    brokers: int
    env: dict[str, str] = field(default_factory=dict)
    settings: PlatformSettings | None = None

    @classmethod
    def configure(cls, directory: Path, brokers: int) -> PrivateStack:
        env = {k: v for k, v in os.environ.items() if k not in _SHARED_VARS and not k.endswith("_HTTP_PORT")}
        kafka_port = free_port_run(2 * brokers)
        env.update(
            STACK_DIR=str(directory),
            KAFKA_BROKERS=str(brokers),
            KAFKA_PORT=str(kafka_port),
            KAFKA_CONTROLLER_PORT=str(kafka_port + brokers),
            SCHEMA_REGISTRY_PORT=str(free_port()),
            MLFLOW_PORT=str(free_port()),
            PROMETHEUS_PORT=str(free_port()),
            ALERTMANAGER_PORT=str(free_port()),
            # Not needed here, and it would be one more process on a small machine.
            STACK_OBSERVABILITY="0",
            # Small heaps: three brokers share the machine with everything else.
            KAFKA_HEAP_OPTS="-Xms128m -Xmx512m",
        )
        return cls(directory, brokers, env)

    def run(self, *args: str, timeout_s: float = 600) -> str:
        """``python -m constellation stack ARGS`` against this stack; fails the test on an error."""
        result = subprocess.run(  # noqa: S603 - our own command
            [sys.executable, "-m", "constellation", "stack", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"`stack {' '.join(args)}` failed ({result.returncode}) on {self.directory}:\n"
                f"{result.stdout}{result.stderr}{self.logs()}",
                pytrace=False,
            )
        return result.stdout

    def logs(self, lines: int = 30) -> str:
        tails = []
        for log in sorted((self.directory / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"----- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def up(self) -> PlatformSettings:
        self.run("up", "--infra")
        stack_credentials = credentials.load(credentials.credentials_path(self.directory))
        assert stack_credentials is not None, f"no credentials in {self.directory}"
        kafka_port = int(self.env["KAFKA_PORT"])
        self.settings = PlatformSettings(
            kafka_bootstrap_servers=",".join(f"127.0.0.1:{kafka_port + i}" for i in range(self.brokers)),
            schema_registry_url=f"http://127.0.0.1:{self.env['SCHEMA_REGISTRY_PORT']}/apis/ccompat/v7",
            mlflow_tracking_uri=f"http://127.0.0.1:{self.env['MLFLOW_PORT']}",
            kafka_security_protocol=credentials.SECURITY_PROTOCOL,
            kafka_sasl_mechanism=credentials.SASL_MECHANISM,
            kafka_sasl_username=credentials.ADMIN,
            kafka_sasl_password=stack_credentials.admin_password,
            schema_registry_username=credentials.REGISTRY_WRITER,
            schema_registry_password=stack_credentials.registry_password,
        )
        return self.settings

    def down(self) -> None:
        """Stop everything the stack runs; whatever still holds a pid file after that is killed."""
        try:
            self.run("down", timeout_s=300)
        finally:
            for pid_file in (self.directory / "run").glob("*.pid"):
                try:
                    os.killpg(int(pid_file.read_text().strip()), 9)
                except (ValueError, OSError):
                    pass

    def kill(self, name: str) -> None:
        self.run("kill", name)

    def start(self, name: str) -> None:
        self.run("start", name)


@dataclass
class Pipeline:
    """A private stack with ingest and a predictor serving a registered champion."""

    stack: PrivateStack
    settings: PlatformSettings
    ingest: ServiceProcess
    predictor: ServiceProcess


def start_pipeline(directory: Path, brokers: int) -> Iterator[Pipeline]:
    """Private stack, champion, ingest and predictor; everything stopped again afterwards."""
    stack = PrivateStack.configure(directory / "stack", brokers)
    launcher = ServiceLauncher(directory / "logs")
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    try:
        settings = stack.up()
        logged = log_small_models(settings.mlflow_tracking_uri, count=1)
        model = register_copies(settings.mlflow_tracking_uri, logged, prefix="fraud_detector_chaos")
        ModelRegistry(settings.mlflow_tracking_uri, model).set_alias("champion", "1")
        env = connection_env(settings)
        predictor = launcher.start(
            "predictor",
            "PREDICTOR_",
            {**env, "PREDICTOR_MODEL_NAME": model, "PREDICTOR_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:6]}"},
            timeout_s=240,
        )
        ingest = launcher.start(
            "ingest", "INGEST_", {**env, "INGEST_INSTANCE_ID": f"chaos-{uuid.uuid4().hex[:6]}"}, timeout_s=240
        )
        yield Pipeline(stack, settings, ingest, predictor)
    finally:
        try:
            launcher.close()
        finally:
            stack.down()


# --------------------------------------------------------------------------- traffic


@dataclass(eq=False)  # a thread must stay hashable
class Stream(threading.Thread):
    """Posts ``count`` transactions to ingest in batches, one every ``interval_s``, each retried until 202.

    A batch keeps its ``Idempotency-Key`` across retries (503, 429 or no answer); ids go into
    the ledger once ingest accepted them. ``statuses`` counts every answer (``None``: no answer).
    """

    ingest: ServiceProcess
    ledger: Ledger
    prefix: str
    count: int = SETTINGS.transactions
    interval_s: float = 0.5
    #: Called once from the stream's thread as soon as ``at`` of the stream was accepted: the
    #: fault lands at that point of the stream, whatever the machine's speed.
    at: float = 1.0
    on_reached: Callable[[], None] | None = None
    accepted: int = 0
    statuses: Counter[int | None] = field(default_factory=Counter)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(name=f"stream-{self.prefix}", daemon=True)

    def run(self) -> None:
        try:
            pool = TransactionPool.generate(min(self.count, 500), seed=len(self.prefix))
            txns = list(pool.take(self.count, self.prefix))
            for start in range(0, self.count, SETTINGS.batch_size):
                begun = time.monotonic()
                if self.on_reached is not None and self.accepted >= self.at * self.count:
                    reached, self.on_reached = self.on_reached, None
                    reached()
                self.post(txns[start : start + SETTINGS.batch_size])
                time.sleep(max(0.0, self.interval_s - (time.monotonic() - begun)))
        except BaseException as exc:  # the test thread reports it
            self.error = exc

    def post(self, txns: list[dict[str, Any]]) -> None:
        key = f"{self.prefix}-{uuid.uuid4().hex}"
        ids = [txn["transaction_id"] for txn in txns]
        deadline = time.monotonic() + SETTINGS.settle_timeout_s
        while True:
            try:
                response = self.ingest.post(
                    "/transactions/batch",
                    {"transactions": txns},
                    headers={"Idempotency-Key": key},
                    timeout=30,
                )
                status: int | None = response.status_code
            except httpx.HTTPError:
                status = None
            self.statuses[status] += 1
            if status == 202:
                self.ledger.sent(ids)
                self.accepted += len(ids)
                return
            if status not in (None, 429, 503):
                raise AssertionError(f"ingest answered a valid batch {status}: {response.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {key} not accepted within {SETTINGS.settle_timeout_s:.0f}s")
            time.sleep(0.5)

    def finish(self) -> None:
        self.join(SETTINGS.settle_timeout_s)
        assert not self.is_alive(), f"{self.prefix}: the stream did not finish"
        if self.error is not None:
            raise self.error


@dataclass
class Completions:
    """The scenario's records on ``prediction.completed`` (committed): ids, and timestamps (epoch s)."""

    prefix: str
    stamps: list[float] = field(default_factory=list)

    def id_of(self, msg: Message) -> str | None:
        key = msg.key()
        return key.decode() if key and key.startswith(f"{self.prefix}-".encode()) else None

    def between(self, begin: float, end: float) -> int:
        """Completions stamped in ``[begin, end]`` (wall-clock seconds)."""
        return sum(1 for stamp in self.stamps if begin <= stamp <= end)

    def longest_gap(self) -> float:
        """The longest pause between two consecutive completions (seconds): the stall."""
        ordered = sorted(self.stamps)
        return max((b - a for a, b in zip(ordered, ordered[1:], strict=False)), default=0.0)


def settle(settings: PlatformSettings, ledger: Ledger, start: list[Any], prefix: str) -> Completions:
    """Wait until every accepted id is on ``prediction.completed`` (committed); the final count is kept.

    A read that fails on a stale leader (a broker just died) is tried again at the next poll.
    """
    found = Completions(prefix)

    def complete() -> bool:
        stamps: list[float] = []
        try:
            ids = committed_ids(settings, start, found.id_of, timestamps=stamps)
        except KafkaException:
            return False
        ledger.recount(ids)
        found.stamps = stamps
        return ledger.complete()

    wait_until(complete, SETTINGS.settle_timeout_s, ledger.summary, interval_s=2)
    ledger.output_times(found.stamps)
    return found


class Fault:
    """One injected fault: the ledger's recovery timeline plus the wall-clock moments of it."""

    def __init__(self, ledger: Ledger, component: str, accepted_before: int = 0) -> None:
        self.recovery: Recovery = ledger.fault(component)
        self.accepted_before = accepted_before
        self.injected_wall = time.time()
        self.dead_wall = self.injected_wall
        self.back_wall: float | None = None

    def dead(self) -> None:
        """The kill command returned: the component is gone."""
        self.dead_wall = time.time()

    def back(self) -> None:
        """The start command returned: the component serves again."""
        self.recovery.restarted()
        self.recovery.ready()
        self.back_wall = time.time()


def run_stream(
    pipeline: Pipeline,
    ledger: Ledger,
    at: float,
    inject: Callable[[], Fault],
    recover: Callable[[Stream, Fault], None],
    interval_s: float = 0.5,
) -> tuple[Stream, list[Fault], Completions]:
    """Stream transactions; once ``at`` of them were accepted the stream itself calls ``inject``
    (the kill), then ``recover`` runs here while the stream goes on; then wait for every prediction."""
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    start = positions(pipeline.settings, COMPLETED)
    faults: list[Fault] = []
    stream = Stream(pipeline.ingest, ledger, prefix, interval_s=interval_s, at=at)
    stream.on_reached = lambda: faults.append(inject())
    stream.start()
    wait_until(lambda: faults or not stream.is_alive(), SETTINGS.settle_timeout_s, f"{at:.0%} of the stream")
    assert faults, f"the stream ended before the fault: {stream.error!r}"
    ledger.note(f"fault after {faults[0].accepted_before} accepted")
    recover(stream, faults[0])
    stream.finish()
    completions = settle(pipeline.settings, ledger, start, prefix)
    ledger.note(f"longest gap between completions {completions.longest_gap():.1f}s")
    ledger.note(f"ingest answers {dict(sorted(stream.statuses.items(), key=str))}")
    return stream, faults, completions


# --------------------------------------------------------------------------- single broker


@pytest.fixture(scope="class")
def single_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("chaos-1-broker"), brokers=1)


class TestSingleBroker:
    """One broker (the laptop default): its death stops intake; a restart brings everything back."""

    @pytest.mark.parametrize("at", [0.3, 0.7])
    def test_broker_sigkill_mid_stream_loses_and_repeats_nothing(
        self, single_broker: Pipeline, chaos_ledger: Callable[..., Ledger], at: float
    ) -> None:
        ledger = chaos_ledger()
        stack = single_broker.stack

        def kill_broker() -> Fault:
            fault = Fault(ledger, "kafka", ledger.sent_count)
            stack.kill("kafka")
            fault.dead()
            return fault

        def restart_broker(stream: Stream, fault: Fault) -> None:
            # While it is down, ingest refuses (503) and the stream retries the same batch.
            wait_until(lambda: stream.statuses[503] > 0 or not stream.is_alive(), 120, "a 503 from ingest")
            stack.start("kafka")
            fault.back()

        stream, _faults, _completions = run_stream(single_broker, ledger, at, kill_broker, restart_broker)
        assert stream.statuses[503] > 0, f"ingest never answered 503 while Kafka was down: {stream.statuses}"
        assert set(stream.statuses) <= {202, 503, None}, stream.statuses
        assert stream.accepted == stream.count, "ingest accepted the whole stream once Kafka was back"
        ledger.assert_exactly_once()

    def test_schema_registry_outage_scoring_continues(
        self, single_broker: Pipeline, chaos_ledger: Callable[..., Ledger]
    ) -> None:
        ledger = chaos_ledger()
        self._outage(single_broker, ledger, "schema-registry", SETTINGS.registry_down_s)

    def test_mlflow_outage_scoring_continues(
        self, single_broker: Pipeline, chaos_ledger: Callable[..., Ledger]
    ) -> None:
        ledger = chaos_ledger()
        self._outage(single_broker, ledger, "mlflow", SETTINGS.mlflow_down_s)

    @staticmethod
    def _outage(pipeline: Pipeline, ledger: Ledger, component: str, down_s: float) -> None:
        """``component`` killed at a quarter of a stream spread over twice the outage, restarted after it."""
        batches = SETTINGS.transactions / SETTINGS.batch_size
        ledger.note(f"{component} down {down_s:.0f}s")

        def kill() -> Fault:
            fault = Fault(ledger, component, ledger.sent_count)
            pipeline.stack.kill(component)
            fault.dead()
            return fault

        def restart(_stream: Stream, fault: Fault) -> None:
            time.sleep(max(0.0, down_s - (time.time() - fault.dead_wall)))
            outage_window.extend([fault.dead_wall, time.time()])
            pipeline.stack.start(component)
            fault.back()

        outage_window: list[float] = []
        stream, _faults, completions = run_stream(
            pipeline, ledger, 0.25, kill, restart, interval_s=2 * down_s / batches
        )
        dead, down_until = outage_window
        scored_while_down = completions.between(dead, down_until)
        ledger.note(f"{scored_while_down} scored while {component} was down")
        ledger.assert_exactly_once()
        assert scored_while_down > 0, (
            f"nothing was scored while {component} was down: {ledger.summary()}; {'; '.join(ledger.notes)}"
        )


# --------------------------------------------------------------------------- three brokers


@pytest.fixture(scope="class")
def three_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("chaos-3-brokers"), brokers=3)


def busiest_leader(settings: PlatformSettings, topics: tuple[str, ...]) -> int:
    """The broker that leads the most partitions of ``topics`` (one of each, at least)."""
    metadata = AdminClient(settings.admin_config()).list_topics(timeout=10)
    leads: Counter[int] = Counter()
    per_topic: dict[int, set[str]] = {}
    for topic in topics:
        for partition in metadata.topics[topic].partitions.values():
            leads[partition.leader] += 1
            per_topic.setdefault(partition.leader, set()).add(topic)
    candidates = [broker for broker, _n in leads.most_common() if per_topic[broker] == set(topics)]
    assert candidates, f"no broker leads partitions of every one of {topics}: {leads}"
    return candidates[0]


class TestThreeBrokers:
    """Replication factor 3, min.insync.replicas 2: one broker may die while traffic flows."""

    def test_leader_sigkill_with_traffic_on_loses_and_repeats_nothing(
        self, three_brokers: Pipeline, chaos_ledger: Callable[..., Ledger]
    ) -> None:
        ledger = chaos_ledger()

        def kill_leader() -> Fault:
            broker = busiest_leader(three_brokers.settings, (REQUEST, COMPLETED))
            fault = Fault(ledger, f"kafka-{broker}", ledger.sent_count)
            three_brokers.stack.kill(f"kafka-{broker}")
            fault.dead()
            return fault

        def restart(_stream: Stream, fault: Fault) -> None:
            three_brokers.stack.start(fault.recovery.component)
            fault.back()

        stream, _faults, completions = run_stream(three_brokers, ledger, 0.3, kill_leader, restart)
        ledger.assert_exactly_once()
        assert stream.accepted == stream.count
        print(
            f"three brokers, leader killed: longest gap between completions {completions.longest_gap():.1f}s"
        )
