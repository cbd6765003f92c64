"""Soak run: the whole constellation under mixed traffic for N minutes while a kill loop crashes services.

``python -m constellation soak --minutes 60`` (``make soak MINUTES=60``):

1. ``stack up`` (infrastructure, first champion, every service; whatever runs already is kept);
2. mixed traffic through ingest with the one traffic driver (:class:`~constellation.traffic.LiveTraffic`):
   transactions, their delayed labels, user interactions and clicks;
3. a kill loop: every ``--kill-every`` seconds one random service instance gets SIGKILL
   (``stack kill``) and is started again (``stack start``), its time to ready recorded;
4. every minute: consumer lag per service group and the running counts;
5. at the end: transactions sent (202-accepted) / completed once / lost / duplicated on
   ``prediction.completed`` (read_committed, by transaction id), the resident memory (RSS) of
   every process of the stack at start and end, lag over time, the kills; all of it also as
   JSON (``--json``).

It never stops anything: infrastructure and services keep running afterwards (``stack down``
stops them). To soak without touching a shared stack, give it its own ``STACK_DIR`` and ports
(``KAFKA_PORT``, ``KAFKA_CONTROLLER_PORT``, ``SCHEMA_REGISTRY_PORT``, ``MLFLOW_PORT``,
``PROMETHEUS_PORT``, ``ALERTMANAGER_PORT``); the services always listen on their catalogue ports.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from constellation import api_keys, stack
from constellation.lag import group_offsets
from constellation.traffic import DelayedLabelSender, IngestSender, LiveTraffic
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, load_catalogue
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

COMPLETED = Topic.PREDICTION_COMPLETED.value


# --------------------------------------------------------------------------- counting


class CountingSender(IngestSender):
    """The traffic's ingest sender, remembering the id of every transaction ingest accepted (202)."""

    def __init__(self, url: str, *, api_key: str | None) -> None:
        super().__init__(url, timeout_s=30, api_key=api_key)
        self.accepted: list[str] = []
        self.lock = threading.Lock()

    def post(self, chunk: list[dict[str, Any]]) -> int | None:
        status = super().post(chunk)
        if status == 202:
            with self.lock:
                self.accepted.extend(str(txn["transaction_id"]) for txn in chunk)
        return status

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return list(self.accepted)


class CompletedCounter(threading.Thread):
    """Counts ``prediction.completed`` records by key (transaction id), committed only, from now on."""

    def __init__(self, settings: PlatformSettings) -> None:
        super().__init__(name="completed-counter", daemon=True)
        self.consumer = Consumer(
            {
                **settings.common_kafka_config(),
                "group.id": f"soak-counter-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        partitions = self.consumer.list_topics(COMPLETED, timeout=10).topics[COMPLETED].partitions
        assignment = []
        for partition in sorted(partitions):
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(COMPLETED, partition), timeout=10)
            assignment.append(TopicPartition(COMPLETED, partition, high))
        self.consumer.assign(assignment)
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                keys = [
                    key.decode(errors="replace")
                    for msg in self.consumer.consume(num_messages=1000, timeout=0.5)
                    if msg.error() is None and (key := msg.key())
                ]
                if keys:
                    with self.lock:
                        self.seen.update(keys)
        finally:
            self.consumer.close()

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.seen)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


@dataclass
class Tally:
    """Sent (202-accepted) transactions against what came out on ``prediction.completed``."""

    sent: int
    completed_once: int
    lost: int
    duplicated: int
    lost_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)


def tally(sent: Sequence[str], seen: Counter[str]) -> Tally:
    lost = [one for one in sent if one not in seen]
    duplicated = [one for one in sent if seen[one] > 1]
    return Tally(
        sent=len(sent),
        completed_once=sum(1 for one in sent if seen[one] == 1),
        lost=len(lost),
        duplicated=len(duplicated),
        lost_sample=lost[:10],
        duplicated_sample=duplicated[:10],
    )


# --------------------------------------------------------------------------- processes


def _process_group_rss(pgid: int) -> int:
    """Resident memory (bytes) of every process in process group ``pgid`` (the stack starts each
    component in its own session, so its workers count with it)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # after the command: state, ppid, pgrp
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


def component_names() -> list[str]:
    """Every process the stack may run: Kafka nodes, registry, MLflow, observers, service instances."""
    names = list(stack.INFRA)
    for spec in stack.SERVICES:
        names += [name for name, _index in stack._instance_names(spec)] or [spec.name]
    return names


def memory() -> dict[str, dict[str, int | None]]:
    """``{component: {"pid": pid, "rss_bytes": rss}}`` of every running component."""
    found: dict[str, dict[str, int | None]] = {}
    for name in component_names():
        pid = stack.running_pid(name)
        if pid is not None:
            found[name] = {"pid": pid, "rss_bytes": _process_group_rss(pid)}
    return found


def service_instances() -> list[str]:
    """The running service instances (what the kill loop picks from)."""
    return [
        name
        for spec in stack.SERVICES
        for name, _index in stack._instance_names(spec)
        if stack.running_pid(name)
    ]


def lag_by_group(settings: PlatformSettings) -> dict[str, int]:
    """Lag of every service's shared consumer group over the topics it has committed offsets on."""
    lags: dict[str, int] = {}
    for spec in stack.SERVICES:
        for group in spec.groups:
            if "{" in group or not spec.consumes:  # per-instance groups read from the end, uncommitted
                continue
            try:
                offsets = group_offsets(settings, group, spec.consumes)
            except Exception as exc:  # noqa: BLE001 - a probe failing is reported, the soak goes on
                print(f"  lag of {group}: {exc}", flush=True)
                continue
            read = {topic for (topic, _p), (committed, _high) in offsets.items() if committed is not None}
            lags[group] = sum(
                max(high - (committed or 0), 0)
                for (topic, _p), (committed, high) in offsets.items()
                if topic in read
            )
    return lags


# --------------------------------------------------------------------------- the kill loop


@dataclass
class Kill:
    service: str
    at_s: float
    ready_after_s: float | None
    error: str | None = None


class KillLoop(threading.Thread):
    """Every ``every_s`` seconds: SIGKILL a random service instance, start it again, time it to ready."""

    def __init__(self, every_s: float, rng: random.Random, started: float) -> None:
        super().__init__(name="kill-loop", daemon=True)
        self.every_s = every_s
        self.rng = rng
        self.started = started
        self.kills: list[Kill] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            candidates = service_instances()
            if not candidates:
                continue
            victim = self.rng.choice(candidates)
            at = time.monotonic()
            print(f"[{at - self.started:7.0f}s] KILL {victim}", flush=True)
            stack.kill(victim)
            try:
                stack.start(victim)
                kill = Kill(victim, round(at - self.started, 1), round(time.monotonic() - at, 1))
            except stack.StackError as exc:
                kill = Kill(victim, round(at - self.started, 1), None, str(exc)[:500])
            print(f"[{time.monotonic() - self.started:7.0f}s] RESTARTED {kill}", flush=True)
            self.kills.append(kill)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(300)


# --------------------------------------------------------------------------- the run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m constellation soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, required=True, help="how long traffic runs")
    p.add_argument("--rate", type=float, default=50.0, help="transactions per second through ingest")
    p.add_argument("--kill-every", type=float, default=60.0, help="seconds between two kills (0: no kills)")
    p.add_argument("--report-every", type=float, default=60.0, help="seconds between two progress lines")
    p.add_argument(
        "--drain", type=float, default=120.0, help="seconds to wait for the last outputs at the end"
    )
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--no-up", action="store_true", help="do not run `stack up` first (it must be running)")
    p.add_argument(
        "--json", type=Path, default=None, help="where the results go (default: STACK_DIR/soak-*.json)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        raise SystemExit("--minutes and --rate must be positive")
    if not args.no_up:
        stack.up(infra_only=False)
    settings = stack.admin_settings()
    serde = AvroSerde(settings, load_catalogue(settings.schemas_dir))
    ingest_url = f"http://{stack.HOST}:{stack.SERVICE_BY_NAME['ingest'].port}"
    producer_key = api_keys.ensure(stack.STATE).key(Role.PRODUCER)

    rss_start = memory()
    counter = CompletedCounter(settings)
    counter.start()
    labels_producer = EventProducer(settings, "soak-chargebacks", serde)
    labels = DelayedLabelSender(labels_producer, (5.0, 30.0), seed=args.seed)
    traffic = LiveTraffic(ingest_url, args.rate, labels, seed=args.seed, user_prefix="soak-user")
    traffic.sender.close()
    sender = CountingSender(ingest_url, api_key=producer_key)
    traffic.sender = sender
    started = time.monotonic()
    kills = KillLoop(args.kill_every, random.Random(args.seed), started)
    lag_series: list[dict[str, Any]] = []

    def report() -> None:
        lags = lag_by_group(settings)
        now = round(time.monotonic() - started, 1)
        lag_series.append({"at_s": now, "lag": lags})
        counts = tally(sender.accepted_ids(), counter.counts())
        c = traffic.counters
        print(
            f"[{now:7.0f}s] sent {counts.sent} completed once {counts.completed_once} "
            f"not yet/lost {counts.lost} duplicated {counts.duplicated} | labels {c.labels} "
            f"interactions {c.interactions} rejected {c.rejected} errors {c.errors} | lag "
            + " ".join(f"{group}={lag}" for group, lag in lags.items()),
            flush=True,
        )

    print(
        f"Soak: {args.minutes:g} min of {args.rate:g} transactions/s through {ingest_url}, "
        f"a kill every {args.kill_every:g}s",
        flush=True,
    )
    traffic.start()
    if args.kill_every > 0:
        kills.start()
    try:
        deadline = started + args.minutes * 60
        next_report = started + args.report_every
        while time.monotonic() < deadline:
            time.sleep(max(0.0, min(deadline, next_report) - time.monotonic()))
            if time.monotonic() >= next_report:
                report()
                next_report += args.report_every
    except KeyboardInterrupt:
        print("interrupted: finishing up", flush=True)
    finally:
        traffic.stop()
        traffic.join(60)
        if args.kill_every > 0:
            kills.stop()

    # The last outputs: wait until every accepted transaction came out (or the drain time passed).
    sent = sender.accepted_ids()
    drain_until = time.monotonic() + args.drain
    while time.monotonic() < drain_until and tally(sent, counter.counts()).lost:
        time.sleep(1)
    report()
    counter.stop()
    labels_producer.close()
    serde.close()
    final = tally(sent, counter.counts())
    rss_end = memory()
    result = {
        "started_at": datetime.now(UTC).isoformat(),
        "minutes": args.minutes,
        "rate": args.rate,
        "kill_every_s": args.kill_every,
        "counts": asdict(final),
        "traffic": {
            "labels": traffic.counters.labels,
            "interactions_and_clicks": traffic.counters.interactions,
            "rejected": traffic.counters.rejected,
            "errors": traffic.counters.errors,
        },
        "kills": [asdict(kill) for kill in kills.kills],
        "rss_bytes": {
            name: {
                "start": (rss_start.get(name) or {}).get("rss_bytes"),
                "end": (rss_end.get(name) or {}).get("rss_bytes"),
                # A killed and restarted component ends with another process.
                "pids": [(rss_start.get(name) or {}).get("pid"), (rss_end.get(name) or {}).get("pid")],
            }
            for name in dict.fromkeys([*rss_start, *rss_end])
        },
        "lag": lag_series,
    }
    print_summary(result)
    path = args.json or stack.STATE / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")
    return 0 if final.lost == 0 and final.duplicated == 0 else 1


def print_summary(result: dict[str, Any]) -> None:
    counts = result["counts"]
    print("\n=== soak summary")
    print(
        f"transactions sent {counts['sent']}, completed once {counts['completed_once']}, "
        f"lost {counts['lost']} {counts['lost_sample']}, duplicated {counts['duplicated']} "
        f"{counts['duplicated_sample']}"
    )
    print(f"kills: {len(result['kills'])}")
    for kill in result["kills"]:
        print(
            f"  {kill['at_s']:>7}s {kill['service']:<16} ready after {kill['ready_after_s']}s "
            f"{kill['error'] or ''}"
        )
    print("resident memory (MiB)      start      end")

    def mib(value: int | None) -> str:
        return "-" if value is None else f"{value / 2**20:8.1f}"

    for name, rss in result["rss_bytes"].items():
        restarted = " (restarted)" if len(set(rss["pids"])) > 1 else ""
        print(f"  {name:<22} {mib(rss['start']):>8} {mib(rss['end']):>8}{restarted}")
    print("lag over time:")
    for point in result["lag"]:
        print(f"  {point['at_s']:>7}s " + " ".join(f"{g}={lag}" for g, lag in point["lag"].items()))
