"""Scoring benchmark: the predictor pipeline vs a naive per-event scorer vs the raw Kafka pipe,
next to the compute floor, and ingest's HTTP front door.

    python -m constellation bench [--rates 250,1000,5000] [--duration 10] [--saturation-events 60000]
                                  [--predictors N] [--running-predictor] [--via kafka|ingest] [--quick]

Three modes on the same broker, with the same generator transactions (Avro
``prediction.request`` values):

* **pipeline** — requests go to ``prediction.request`` (or through ingest's HTTP API with
  ``--via ingest``) and are scored by the predictor (micro-batches, Kafka transactions);
  arrival is when ``prediction.completed`` becomes readable (``read_committed``). By default
  ``--predictors`` instances (one per core) are started on private topics, in one consumer
  group; ``--running-predictor`` uses the running one (``--predictor-url``) instead.
* **naive** — a separate process consumes one message, builds features for one row, predicts
  one row, produces the result and waits for the broker's acknowledgement, then takes the next
  (offsets stored after the acknowledgement, committed in the background: at-least-once).
  Private topics, same model version as the pipeline's champion.
* **raw** — produce -> consume of the same request bytes on a private topic, no processing:
  the ceiling the broker and client set on this machine.

Besides the three modes:

* **compute floor** — decode -> features -> predict -> encode of the same events through the
  predictor's own handler in one process with no Kafka (``bench_floor``), with the time per
  event of each stage; the pipeline is reported as a multiple of it.
* **transaction floor** (``txn``) — single-record Kafka transactions back to back on the
  same broker (``bench_txn``): the cycle an exactly-once stage pays whatever it computes,
  and how soon a committed record is readable; the latency floor of the pipeline.
* **ingest** — the running ingest over HTTP (``bench_ingest``): accepted transactions/s and
  the 202's latency, and end to end to ``prediction.completed``, on ``/transactions`` and
  ``/transactions/batch``, at saturation and fixed rates (skipped when ingest is not running).
* **memory** — each started process's resident memory when ready and after every pipeline
  phase (saturation, each fixed rate): growth reads differently from a plateau.

Before measuring it waits (up to ``--settle-s``) for the host CPU to be mostly idle: a
constellation that ``make bench`` has just started is still warming up.

Each mode runs a saturation phase (a burst of N events: throughput = N / time until the last
one arrived) and fixed-rate phases (events scheduled at exact times; latency = arrival minus
scheduled send time, so a sender that falls behind counts against the system — no coordinated
omission). Fixed rates above 80 % of a mode's saturation throughput are skipped for that mode
(its queue would only grow). Results print as a table with ratios and go to
``bench-results/bench-<timestamp>.json`` (path printed last).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from constellation import ROOT, api_keys, stack
from constellation.bench_floor import compute_floor
from constellation.bench_ingest import MAX_LOAD_FACTOR, over_capacity, percentiles, run_ingest
from constellation.bench_txn import transaction_floor
from constellation.processes import Child, free_port, http_json, start_child, wait_until
from constellation.traffic import IngestSender, KafkaSender, Sender, TransactionPool, encode_request
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, load_catalogue, make_event
from mlops_platform.kafka import create_topic, delete_topics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from mlops_platform.sysmetrics import SystemSampler

RESULTS_DIR = ROOT / "bench-results"
REQUEST = Topic.PREDICTION_REQUEST.value
COMPLETED = Topic.PREDICTION_COMPLETED.value


# --------------------------------------------------------------------------- arguments


def viewer_headers() -> dict[str, str] | None:
    """The stack's viewer key (reads of the services' APIs need one)."""
    key = api_keys.client_key(Role.VIEWER, "VIEWER_API_KEY")
    return {"X-API-Key": key} if key else None


def service_url(name: str) -> str:
    """A service of the local stack (its catalogue port, or the one its environment sets)."""
    return f"http://{stack.HOST}:{stack.SERVICE_BY_NAME[name].port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m constellation bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("naive-worker", help="internal: the naive per-event scorer process")
    worker.add_argument("--input", required=True)
    worker.add_argument("--output", required=True)
    worker.add_argument("--group", required=True)
    worker.add_argument("--model-name", required=True)
    worker.add_argument("--version", required=True)

    parser.add_argument("--rates", default="250,1000,5000", help="fixed rates in events/s (comma separated)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per fixed-rate phase")
    parser.add_argument("--saturation-events", type=int, default=60_000, help="burst size (pipeline, raw)")
    parser.add_argument("--naive-events", type=int, default=3_000, help="burst size of the naive baseline")
    parser.add_argument("--warmup-events", type=int, default=300)
    parser.add_argument("--predictor-url", default=os.environ.get("PREDICTOR_URL", service_url("predictor")))
    parser.add_argument(
        "--predictors",
        type=int,
        default=os.cpu_count() or 1,
        help="predictor processes started on private topics, one consumer group (default: one per core)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help=(
            "partitions of each private topic (default: prediction.request's in the catalogue); "
            "a transaction's markers and produce requests go to every output partition it touches"
        ),
    )
    parser.add_argument(
        "--running-predictor", action="store_true", help="measure the running predictor instead"
    )
    parser.add_argument("--own-predictor", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--floor-events", type=int, default=10_000, help="events of the compute floor")
    parser.add_argument("--ingest-rates", default="50,100", help="fixed rates of /transactions (tx/s)")
    parser.add_argument("--ingest-batch-rates", default="1000,5000", help="fixed rates of the batch endpoint")
    parser.add_argument("--ingest-batch-size", type=int, default=100, help="transactions per batch request")
    parser.add_argument("--model-name", default=os.environ.get("PREDICTOR_MODEL_NAME", "fraud_detector"))
    parser.add_argument("--via", choices=("kafka", "ingest"), default="kafka", help="how requests enter")
    parser.add_argument("--ingest-url", default=os.environ.get("INGEST_URL", service_url("ingest")))
    parser.add_argument(
        "--modes", default="pipeline,naive,raw,txn,floor,ingest", help="which modes to run (comma separated)"
    )
    parser.add_argument("--quick", action="store_true", help="short run: 2 rates x 5 s, small bursts")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=90.0,
        help="wait up to this long for the host CPU to be mostly idle before measuring (0: don't)",
    )
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.duration = "250,1000", 5.0
        args.saturation_events, args.naive_events, args.warmup_events = 10_000, 1_000, 200
        args.floor_events, args.ingest_batch_rates = 3_000, "1000"
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arrival collector


class Collector:
    """Reads an output topic from its current end and records when each expected key arrives."""

    def __init__(self, settings: PlatformSettings, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer(
            {
                **settings.common_kafka_config(),
                "group.id": f"bench-collector-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.assign(end_offsets(settings, topic))
        self.expected: dict[bytes, float] = {}
        self.arrivals: dict[bytes, float] = {}
        self.duplicates = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"collect-{topic}", daemon=True)
        self._thread.start()

    def expect(self, key: bytes, scheduled: float) -> None:
        with self._lock:
            self.expected[key] = scheduled

    def _run(self) -> None:
        while not self._stop.is_set():
            # poll() returns as soon as one record is there; consume(timeout=0) then takes what is
            # already fetched. (consume(n, timeout) would wait for n records or the full timeout,
            # adding up to that timeout to every measured latency.)
            first = self.consumer.poll(0.05)
            now = time.time()
            if first is None:
                continue
            messages = [first, *self.consumer.consume(num_messages=2000, timeout=0)]
            with self._lock:
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    key = msg.key()
                    if key is None or key not in self.expected:
                        continue
                    if key in self.arrivals:
                        self.duplicates += 1
                    else:
                        self.arrivals[key] = now

    def wait_for(self, keys: list[bytes], timeout_s: float) -> int:
        """Wait until every key arrived (or the timeout passed); returns how many arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                arrived = sum(1 for k in keys if k in self.arrivals)
            if arrived == len(keys):
                return arrived
            time.sleep(0.05)
        with self._lock:
            return sum(1 for k in keys if k in self.arrivals)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.consumer.close()


def end_offsets(settings: PlatformSettings, topic: str) -> list[TopicPartition]:
    probe = Consumer({**settings.common_kafka_config(), "group.id": "bench-probe"})
    try:
        partitions = sorted(probe.list_topics(topic, timeout=10).topics[topic].partitions)
        return [
            TopicPartition(topic, p, probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in partitions
        ]
    finally:
        probe.close()


# --------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    mode: str
    phase: str
    target_rate: float | None
    sent: int
    received: int
    duplicates: int
    send_seconds: float
    elapsed_seconds: float
    throughput: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""


def run_phase(
    mode: str,
    phase: str,
    workload: TransactionPool,
    sender: Sender,
    collector: Collector,
    count: int,
    rate: float | None,
    drain_timeout_s: float,
) -> PhaseResult:
    """Send ``count`` events (at ``rate``/s, or all at once) and wait for their outputs."""
    # Ids must pass ingest's validation too: letters, digits, '.', '_', ':', '-'.
    prefix = f"bench-{mode}-{phase.replace('=', '-')}-{uuid.uuid4().hex[:6]}"
    failures_before = sender.failures
    txns = list(workload.take(count, prefix))
    keys = [t["transaction_id"].encode() for t in txns]
    duplicates_before = collector.duplicates
    if rate is None:
        # A burst: everything encoded up front, then sent as fast as the client allows.
        prepared = sender.prepare([(t, time.time()) for t in txns])
        start = time.time()
        schedule = [start] * count
        for key in keys:
            collector.expect(key, start)
        for index in range(0, count, 2000):
            sender.send(prepared[index : index + 2000])
    else:
        # Fixed rate: event i is due at start + i / rate and carries that time as its event_time.
        start = time.time() + 0.2
        schedule = [start + i / rate for i in range(count)]
        for key, scheduled in zip(keys, schedule, strict=True):
            collector.expect(key, scheduled)
        index = 0
        while index < count:
            due = min(count, int((time.time() - start) * rate) + 1) if time.time() >= start else 0
            if due > index:
                chunk = min(due, index + 2000)
                sender.send(sender.prepare(list(zip(txns[index:chunk], schedule[index:chunk], strict=True))))
                index = chunk
            else:
                time.sleep(min(0.005, max(schedule[index] - time.time(), 0.0005)))
    sender.flush()
    send_seconds = time.time() - start
    received = collector.wait_for(keys, drain_timeout_s)
    arrivals = [collector.arrivals[k] for k in keys if k in collector.arrivals]
    latencies = [
        collector.arrivals[k] - s for k, s in zip(keys, schedule, strict=True) if k in collector.arrivals
    ]
    last = max(arrivals) if arrivals else time.time()
    elapsed = max(last - start, 1e-9)
    result = PhaseResult(
        mode=mode,
        phase=phase,
        target_rate=rate,
        sent=count,
        received=received,
        duplicates=collector.duplicates - duplicates_before,
        send_seconds=round(send_seconds, 3),
        elapsed_seconds=round(elapsed, 3),
        throughput=round(received / elapsed, 1),
        latency_ms=percentiles(latencies),
        note="" if received == count else f"{count - received} outputs missing after {drain_timeout_s:.0f}s",
    )
    if sender.failures > failures_before:
        result.note += f" ({sender.failures - failures_before} requests refused by ingest)"
    log(
        f"{mode:8s} {phase:12s} sent {count:6d} received {received:6d} "
        f"{result.throughput:9.1f} ev/s  p50 {result.latency_ms.get('p50', float('nan')):8.1f} ms  "
        f"p99 {result.latency_ms.get('p99', float('nan')):8.1f} ms"
    )
    return result


def run_mode(
    mode: str,
    args: argparse.Namespace,
    workload: TransactionPool,
    sender: Sender,
    collector: Collector,
    burst: int,
    rates: list[float],
    after_phase: Callable[[str], None] | None = None,
) -> list[PhaseResult]:
    """Warm-up, saturation, then each fixed rate; ``after_phase(name)`` runs after each measured phase."""
    # Warm-up: group assignment, model caches, connections; not reported.
    run_phase(mode, "warmup", workload, sender, collector, args.warmup_events, None, 120)
    results = [run_phase(mode, "saturation", workload, sender, collector, burst, None, 300)]
    if after_phase is not None:
        after_phase("saturation")
    capacity = results[0].throughput
    for rate in rates:
        skipped = over_capacity(rate, capacity, "ev/s")
        if skipped is not None:
            results.append(PhaseResult(mode, f"rate={rate:g}", rate, 0, 0, 0, 0.0, 0.0, 0.0, note=skipped))
            log(f"{mode:8s} rate={rate:g} {skipped}")
            continue
        count = max(int(rate * args.duration), 1)
        results.append(
            run_phase(mode, f"rate={rate:g}", workload, sender, collector, count, rate, 60 + args.duration)
        )
        if after_phase is not None:
            after_phase(f"rate={rate:g}")
    return results


# --------------------------------------------------------------------------- processes and topics


@contextmanager
def private_topics(settings: PlatformSettings, partitions: int, *names: str) -> Iterator[list[str]]:
    tag = uuid.uuid4().hex[:8]
    topics = [f"bench.{name}.{tag}" for name in names]
    for topic in topics:
        create_topic(settings, topic, partitions)
    try:
        yield topics
    finally:
        # Left behind, every run would add its topics and their records to the broker's disk.
        try:
            left = delete_topics(settings, topics)
        except KafkaException as exc:
            left = dict.fromkeys(topics, str(exc))
        for topic, reason in left.items():
            log(f"could not delete {topic}: {reason}")


def ensure_champion(model_name: str, settings: PlatformSettings) -> None:
    from fraud_model.registry import ModelRegistry

    if ModelRegistry(settings.mlflow_tracking_uri, model_name).version_for_alias("champion") is None:
        log(f"{model_name} has no @champion: training one (python -m constellation bootstrap-model)")
        try:
            stack.bootstrap_model("--model-name", model_name)
        except stack.StackError as exc:
            raise SystemExit(str(exc)) from exc


def champion_version(model_name: str, settings: PlatformSettings) -> str:
    """The registry's @champion version (``/model`` answers 401 when the service requires an API key)."""
    from fraud_model.registry import ModelRegistry

    return str(ModelRegistry(settings.mlflow_tracking_uri, model_name).version_for_alias("champion") or "")


def settle(
    max_wait_s: float, busy_below_percent: float = 35.0, window_s: float = 3.0, calm_windows: int = 3
) -> float:
    """Wait until the host CPU is mostly idle (a stack just started is still warming up).

    Calm means ``calm_windows`` windows in a row below ``busy_below_percent``: services that
    have just started work in bursts, and one quiet window between two bursts is no
    sign of a settled machine. Returns the busy percentage of the last window; gives up
    after ``max_wait_s``.
    """
    sampler = SystemSampler()
    deadline = time.monotonic() + max_wait_s
    busy, calm = 100.0, 0
    while max_wait_s > 0:
        time.sleep(window_s)
        busy = sampler.sample().host_cpu_percent
        calm = calm + 1 if busy < busy_below_percent else 0
        if calm >= calm_windows or time.monotonic() >= deadline:
            break
    return busy


def refusal_logger() -> Callable[[int, str], None]:
    """Log ingest's first refusal: it says why (the later ones repeat it)."""
    said = False

    def refused(status: int, body: str) -> None:
        nonlocal said
        if not said:
            log(f"ingest answered {status}: {body[:300]}")
            said = True

    return refused


def wait_ready(child: Child, ready: Callable[[], bool], what: str) -> None:
    """Wait (up to three minutes) until ``ready()`` holds; exits with the child's log otherwise."""
    if wait_until(ready, child.alive, 180) != "ready":
        raise SystemExit(f"{what}:\n{child.tail()}")


def start_predictors(
    args: argparse.Namespace, request_topic: str, completed_topic: str, log_dir: Path
) -> tuple[list[Child], list[str]]:
    """``--predictors`` processes on private topics in one consumer group; waits until all are ready."""
    group = f"bench-predictor-{uuid.uuid4().hex[:6]}"
    children, urls = [], []
    for index in range(1, max(args.predictors, 1) + 1):
        port = free_port()
        env = {
            **os.environ,
            "PREDICTOR_HTTP_PORT": str(port),
            "PREDICTOR_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
            "PREDICTOR_GROUP_ID": group,
            "PREDICTOR_MODEL_NAME": args.model_name,
            "PREDICTOR_REQUEST_TOPIC": request_topic,
            "PREDICTOR_COMPLETED_TOPIC": completed_topic,
            "PREDICTOR_HEARTBEAT_INTERVAL_S": "3600",
        }
        child = start_child(f"predictor-{index}", [sys.executable, "-m", "predictor"], env, log_dir)
        children.append(child)
        urls.append(f"http://127.0.0.1:{port}")
        log(f"starting predictor {index}/{args.predictors} on private topics ({urls[-1]}, {child.log_path})")
    for child, url in zip(children, urls, strict=True):
        wait_ready(
            child,
            lambda url=url: bool((http_json(f"{url}/ready") or {}).get("ready")),  # type: ignore[misc]
            f"{child.name} did not become ready",
        )
    # Ready is not yet assigned: a member joining mid-run would rebalance the group (and abort
    # the transaction in flight) inside a measured phase.
    admin = AdminClient(PlatformSettings().admin_config())
    if wait_until(lambda: group_balanced(admin, group, len(children)), children[0].alive, 120) != "ready":
        log(f"the {len(children)} predictors did not all get partitions within two minutes; measuring anyway")
    return children, urls


def group_balanced(admin: AdminClient, group: str, members: int) -> bool:
    """Every one of ``members`` consumers of ``group`` holds partitions."""
    with suppress(Exception):
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
        assigned = [m for m in description.members if m.assignment and m.assignment.topic_partitions]
        return len(assigned) == members
    return False


def resident_memory(processes: list[Child]) -> dict[str, float]:
    """Resident memory (MB) of each started process that is still running."""
    sizes = {}
    for child in processes:
        if not child.alive():
            continue
        with suppress(OSError):
            for line in Path(f"/proc/{child.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[child.name] = round(int(line.split()[1]) / 1024, 1)
    return sizes


def measure_ingest(args: argparse.Namespace, settings: PlatformSettings, workload: TransactionPool) -> Any:
    """Ingest over HTTP against the running stack; None (and a note) when ingest or the predictor is down."""
    if not (http_json(f"{args.ingest_url}/ready", headers=viewer_headers()) or {}).get("ready"):
        log(f"ingest at {args.ingest_url} is not ready: ingest phases skipped (make up)")
        return None
    if not (http_json(f"{args.predictor_url}/ready", headers=viewer_headers()) or {}).get("ready"):
        log(f"no running predictor at {args.predictor_url}: ingest phases skipped (make up)")
        return None
    collector = Collector(settings, COMPLETED)
    try:
        return run_ingest(
            args.ingest_url,
            workload,
            collector,
            single_rates=[float(r) for r in args.ingest_rates.split(",") if r.strip()],
            batch_rates=[float(r) for r in args.ingest_batch_rates.split(",") if r.strip()],
            batch_size=args.ingest_batch_size,
            duration_s=args.duration,
            api_key=api_keys.client_key(Role.PRODUCER, "INGEST_API_KEY"),
            log=log,
        )
    finally:
        collector.close()


# --------------------------------------------------------------------------- naive worker


def naive_worker(args: argparse.Namespace) -> int:
    """Consume one, score one row, produce one and wait for its acknowledgement; repeat."""
    from fraud_model.features import build_features, feature_dict
    from fraud_model.registry import ModelRegistry

    settings = PlatformSettings()
    serde = AvroSerde(settings)
    scorer = ModelRegistry(settings.mlflow_tracking_uri, args.model_name).load_booster(
        args.version, nthread=1
    )
    consumer = Consumer(
        settings.consumer_config(
            args.group,
            client_id="bench-naive",
            **{"enable.auto.commit": True, "enable.auto.offset.store": False, "fetch.wait.max.ms": 10},
        )
    )
    producer = Producer(settings.producer_config("bench-naive", **{"linger.ms": 0}))
    consumer.subscribe([args.input])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thresholds = (0.18, 0.40, 0.65)
    levels = ("approve", "verify", "hold", "block")
    print("ready", flush=True)
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is None or msg.error() is not None:
            continue
        request = serde.decode(args.input, msg.value(), schema_topic=REQUEST)
        features = build_features([request])
        probability = float(scorer.predict_proba(features)[0])
        level = levels[sum(probability >= t for t in thresholds)]
        envelope = request["envelope"]
        event = make_event(
            "bench-naive",
            {
                "transaction_id": request["transaction_id"],
                "account_id": request["account_id"],
                "request_event_id": envelope["event_id"],
                "fraud_probability": probability,
                "risk_level": level,
                "model_name": args.model_name,
                "model_version": args.version,
                "model_alias": "champion",
                "ab_arm": "champion",
                "features": feature_dict(features[0]),
                "latency_ms": max(time.time() * 1000 - envelope["event_time"].timestamp() * 1000, 0.0),
            },
            cause=envelope,
        )
        producer.produce(args.output, serde.encode(args.output, event, schema_topic=COMPLETED), key=msg.key())
        producer.flush(30)  # the per-event acknowledgement
        consumer.store_offsets(message=msg)
    consumer.close()
    producer.flush(30)
    return 0


# --------------------------------------------------------------------------- report


MODES = ("pipeline", "naive", "raw")
LABELS = {"pipeline": "pipeline (predictor)", "naive": "naive per-event", "raw": "raw Kafka pipe"}


def comparison(
    results: dict[str, list[PhaseResult]],
    floor: dict[str, Any] | None = None,
    ingest: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    def saturation(mode: str) -> float | None:
        for r in results.get(mode, []):
            if r.phase == "saturation" and r.received:
                return r.throughput
        return None

    def ratio(a: float | None, b: float | None) -> float | None:
        return float(f"{a / b:.4g}") if a and b else None

    sat = {mode: saturation(mode) for mode in MODES}
    latency: dict[str, dict[str, Any]] = {}
    for mode, phases in results.items():
        for r in phases:
            if r.phase.startswith("rate=") and r.latency_ms:
                latency.setdefault(r.phase, {})[mode] = r.latency_ms
    latency_ratios = {
        phase: {
            f"pipeline_vs_{other}_p99": ratio(modes["pipeline"]["p99"], modes[other]["p99"])
            for other in ("naive", "raw")
            if "pipeline" in modes and other in modes
        }
        for phase, modes in latency.items()
    }
    floor_rate = floor["events_per_s"] if floor else None
    return {
        "saturation_throughput": {**sat, "compute_floor": floor_rate},
        "throughput_ratios": {
            "pipeline_vs_naive": ratio(sat["pipeline"], sat["naive"]),
            "pipeline_vs_raw": ratio(sat["pipeline"], sat["raw"]),
            "naive_vs_raw": ratio(sat["naive"], sat["raw"]),
            "pipeline_vs_compute_floor": ratio(sat["pipeline"], floor_rate),
        },
        "compute_floor_stages_us_per_event": floor["stages_us_per_event"] if floor else None,
        "ingest": [
            {
                key: r[key]
                for key in ("endpoint", "phase", "accepted_per_s", "latency_202_ms", "end_to_end_ms", "note")
            }
            for r in ingest or []
        ],
        "latency_at_fixed_rates_ms": latency,
        "latency_ratios": latency_ratios,
    }


def table(results: dict[str, list[PhaseResult]], summary: dict[str, Any]) -> str:
    phases: list[str] = []
    for mode_results in results.values():
        for r in mode_results:
            if r.phase not in phases:
                phases.append(r.phase)
    modes = [m for m in MODES if m in results]
    width = 34
    header = f"{'phase':<14}" + "".join(f"| {LABELS[m]:<{width - 2}}" for m in modes)
    sub = f"{'':<14}" + "".join(f"| {'ev/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} " for _ in modes)
    lines = [header, sub, "-" * len(sub)]
    for phase in phases:
        row = f"{phase:<14}"
        for mode in modes:
            found = next((x for x in results[mode] if x.phase == phase), None)
            if found is None or not found.received:
                label = "skipped" if found is not None and found.note.startswith("skipped") else "n/a"
                row += f"| {label:>{width - 2}}"
                continue
            lat = found.latency_ms
            row += f"| {found.throughput:>8.0f} {lat['p50']:>7.1f} {lat['p95']:>7.1f} {lat['p99']:>7.1f} "
        lines.append(row)
    lines.append(
        "latency in ms (scheduled send -> output readable); saturation latency includes queueing of the burst"
    )
    ratios = summary["throughput_ratios"]
    lines.append(
        "saturation throughput ratios: "
        + ", ".join(f"{k.replace('_vs_', '/')} = {v:.3g}x" for k, v in ratios.items() if v is not None)
    )
    for phase, values in summary["latency_ratios"].items():
        if values:
            lines.append(
                f"p99 latency ratios at {phase}: "
                + ", ".join(
                    f"{k.replace('_vs_', '/').removesuffix('_p99')} = {v:.3g}x"
                    for k, v in values.items()
                    if v
                )
            )
    return "\n".join(lines)


def extras(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The columns beyond the three modes: compute floor, its profile, ingest, memory, targets."""
    sat, ratios = summary["saturation_throughput"], summary["throughput_ratios"]
    instances = summary.get("predictor_instances", 1)

    def rate(value: float | None, unit: str = "ev/s") -> str:
        return f"{value:,.0f} {unit}" if value else "n/a"

    ingest = summary.get("ingest") or []
    saturated = [r for r in ingest if r["phase"] == "saturation"]
    batch_sat = next((r for r in saturated if "batch" in r["endpoint"]), None)
    single_sat = next((r for r in saturated if "batch" not in r["endpoint"]), None)
    processes = f"{instances} predictor process{'es' if instances != 1 else ''}"
    if summary.get("partitions"):
        processes += f", {summary['partitions']} partitions"
    lines = [
        "",
        "side by side at saturation: "
        + " | ".join(
            [
                f"pipeline ({processes}) {rate(sat['pipeline'])}",
                f"naive {rate(sat['naive'])}",
                f"raw pipe {rate(sat['raw'])}",
                f"compute floor (1 process) {rate(sat['compute_floor'])}",
                f"ingest batch {rate(batch_sat['accepted_per_s'] if batch_sat else None, 'tx/s')}",
                f"ingest single {rate(single_sat['accepted_per_s'] if single_sat else None, 'tx/s')}",
            ]
        ),
        "ratios: "
        + ", ".join(f"{k.replace('_vs_', '/')} = {v:.3g}x" for k, v in ratios.items() if v is not None),
    ]
    stages = summary.get("compute_floor_stages_us_per_event")
    if stages:
        floor = meta["compute_floor"]
        lines.append(
            f"compute floor profile, us/event ({floor['us_per_event']:.1f} in all): "
            + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        )
    txn = summary.get("transaction_floor_ms")
    if txn:
        cycle, visible = txn["cycle_ms"], txn["readable_ms"]
        lines.append(
            "exactly-once latency floor (one-record transactions back to back, "
            f"{txn.get('producers', 1)} transactional producer(s) taking turns as the predictor's): "
            f"cycle p50 {cycle['p50']:.1f} / p99 {cycle['p99']:.1f} ms, "
            f"begin -> readable p50 {visible.get('p50', 0):.1f} / p99 {visible.get('p99', 0):.1f} ms; "
            "an event waits for the cycle in progress, then rides its own"
        )
    if ingest:
        lines.append(f"{'ingest':<38}{'tx/s':>9}  {'202 p50/p95/p99 ms':>22}  {'score p50/p95/p99 ms':>26}")
        for r in ingest:
            a, e = r["latency_202_ms"], r["end_to_end_ms"]
            if not a:  # skipped (or nothing answered): no figures to print
                lines.append(f"{r['endpoint'] + ' ' + r['phase']:<38}{'-':>9}  {r['note']}")
                continue
            lines.append(
                f"{r['endpoint'] + ' ' + r['phase']:<38}{r['accepted_per_s']:>9,.0f}  "
                f"{a.get('p50', 0):>6.1f} {a.get('p95', 0):>7.1f} {a.get('p99', 0):>7.1f}  "
                f"{e.get('p50', 0):>8.1f} {e.get('p95', 0):>8.1f} {e.get('p99', 0):>8.1f} {r['note']}"
            )
    memory = summary.get("resident_memory_mb") or {}
    if memory.get("ready"):
        moments = list(memory)
        lines.append(
            f"resident memory, MB ({' -> '.join(moments)}): "
            + ", ".join(
                f"{name} " + " -> ".join(f"{memory[m].get(name, float('nan')):.0f}" for m in moments)
                for name in memory["ready"]
            )
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "naive-worker":
        return naive_worker(args)

    settings = PlatformSettings()
    serde = AvroSerde(settings)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    workload = TransactionPool.generate(5_000, args.seed)
    partitions = args.partitions or load_catalogue(settings.schemas_dir).spec(REQUEST).partitions
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"bench-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[Child] = []
    meta: dict[str, Any] = {}
    if args.settle_s > 0:
        log(f"waiting up to {args.settle_s:.0f} s for the host CPU to settle")
        meta["host_cpu_busy_percent_at_start"] = round(settle(args.settle_s), 1)
        log(f"host CPU busy {meta['host_cpu_busy_percent_at_start']:.0f} % at the start")
    started_at = datetime.now(UTC)
    results: dict[str, list[PhaseResult]] = {}
    memory: dict[str, dict[str, float]] = {}
    try:
        # ---- the pipeline: our own predictors on private topics, or the running one
        use_running = args.running_predictor or args.via == "ingest"
        predictor_model = (
            http_json(f"{args.predictor_url}/model", headers=viewer_headers()) if use_running else None
        )
        ready = http_json(f"{args.predictor_url}/ready") if predictor_model else None
        with private_topics(
            settings, partitions, "request", "completed", "naive-in", "naive-out", "raw", "txn"
        ) as topics:
            req_topic, out_topic, naive_in, naive_out, raw_topic, txn_topic = topics
            if predictor_model and ready and ready.get("ready"):
                pipeline_in, pipeline_out = REQUEST, COMPLETED
                meta["predictor"] = {"url": args.predictor_url, "own": False, "model": predictor_model}
                log(f"using the running predictor at {args.predictor_url}")
            else:
                if args.via == "ingest":
                    raise SystemExit("--via ingest needs the running predictor (make up)")
                ensure_champion(args.model_name, settings)
                predictors, urls = start_predictors(args, req_topic, out_topic, log_dir)
                processes.extend(predictors)
                predictor_model = http_json(f"{urls[0]}/model", headers=viewer_headers()) or {}
                pipeline_in, pipeline_out = req_topic, out_topic
                meta["predictor"] = {
                    "urls": urls,
                    "own": True,
                    "instances": len(predictors),
                    "model": predictor_model,
                }
            champion = (predictor_model or {}).get("champion") or {}
            model_name = str((predictor_model or {}).get("model_name") or args.model_name)
            version = str(champion.get("version") or "") or champion_version(model_name, settings)

            def measure(
                mode: str,
                sender: Sender,
                output: str,
                burst: int,
                after_phase: Callable[[str], None] | None = None,
            ) -> None:
                collector = Collector(settings, output)
                try:
                    results[mode] = run_mode(
                        mode, args, workload, sender, collector, burst, rates, after_phase
                    )
                finally:
                    collector.close()
                    sender.close()

            def to_kafka(topic: str) -> KafkaSender:
                return KafkaSender(settings, topic, serde, source="bench")

            memory["ready"] = resident_memory(processes)
            if "pipeline" in modes:
                sender: Sender = (
                    IngestSender(
                        args.ingest_url,
                        on_refused=refusal_logger(),
                        api_key=api_keys.client_key(Role.PRODUCER, "INGEST_API_KEY"),
                    )
                    if args.via == "ingest"
                    else to_kafka(pipeline_in)
                )

                def remember_memory(phase: str) -> None:
                    # After every phase, not only at the end: a plateau reads differently from growth.
                    memory[f"after {phase}"] = resident_memory(processes)

                measure("pipeline", sender, pipeline_out, args.saturation_events, remember_memory)

            if "naive" in modes:
                worker = start_child(
                    "naive-worker",
                    [
                        sys.executable,
                        "-m",
                        "constellation",
                        "bench",
                        "naive-worker",
                        "--input",
                        naive_in,
                        "--output",
                        naive_out,
                        "--group",
                        f"bench-naive-{uuid.uuid4().hex[:6]}",
                        "--model-name",
                        model_name,
                        "--version",
                        version,
                    ],
                    dict(os.environ),
                    log_dir,
                )
                processes.append(worker)
                wait_ready(
                    worker,
                    lambda: "ready" in worker.log_path.read_text(errors="replace"),
                    "the naive worker did not start",
                )
                try:
                    measure("naive", to_kafka(naive_in), naive_out, args.naive_events)
                finally:
                    worker.stop()

            if "raw" in modes:
                measure("raw", to_kafka(raw_topic), raw_topic, args.saturation_events)

            if "txn" in modes:
                log("transaction floor: single-record transactions back to back, nothing else")
                txn_collector = Collector(settings, txn_topic)
                try:
                    meta["transaction_floor"] = transaction_floor(settings, txn_topic, txn_collector)
                finally:
                    txn_collector.close()
                cycle, visible = (
                    meta["transaction_floor"]["cycle_ms"],
                    meta["transaction_floor"]["readable_ms"],
                )
                log(
                    f"transaction cycle p50 {cycle['p50']:.1f} p99 {cycle['p99']:.1f} ms, "
                    f"readable p50 {visible.get('p50', 0):.1f} p99 {visible.get('p99', 0):.1f} ms"
                )

            if "floor" in modes:
                log(f"compute floor: {args.floor_events} events, one process, no Kafka")
                now = time.time()
                blobs = [encode_request(serde, t, now) for t in workload.take(args.floor_events, "floor")]
                meta["compute_floor"] = compute_floor(settings, serde, blobs, model_name)
                log(
                    f"compute floor {meta['compute_floor']['events_per_s']:.0f} ev/s "
                    f"({meta['compute_floor']['us_per_event']:.1f} us/event)"
                )

            if "ingest" in modes:
                meta["ingest"] = measure_ingest(args, settings, workload)
    finally:
        for process in processes:
            process.stop()

    summary = comparison(results, meta.get("compute_floor"), meta.get("ingest"))
    summary["resident_memory_mb"] = memory
    summary["transaction_floor_ms"] = meta.get("transaction_floor")
    summary["predictor_instances"] = (meta.get("predictor") or {}).get("instances", 1)
    summary["partitions"] = partitions
    report = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "host": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "broker": settings.kafka_bootstrap_servers,
        "config": {
            "via": args.via,
            "rates": rates,
            "partitions": partitions,
            "duration_s": args.duration,
            "saturation_events": args.saturation_events,
            "naive_events": args.naive_events,
            "warmup_events": args.warmup_events,
            "max_load_factor": MAX_LOAD_FACTOR,
            "message_bytes": len(encode_request(serde, next(workload.take(1, "size")), time.time())),
        },
        **meta,
        "summary": summary,
        "results": {mode: [asdict(r) for r in phases] for mode, phases in results.items()},
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"bench-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(table(results, summary))
    print(extras(summary, meta))
    print(json.dumps(summary, indent=2, default=str))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
