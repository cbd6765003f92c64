"""The demo scenario: live traffic, an injected drift, and the loop closing by itself.

    python -m constellation demo [--rate 150] [--baseline-s 60] [--scenario fraud_wave] [--exit-after-loop]

Expects the constellation to run (``python -m constellation run`` starts it first). It then

1. streams generated card transactions through ingest (HTTP), their fraud labels a few
   seconds later straight onto ``prediction.feedback`` (as a chargeback system would), and
   user interactions and clicks through ingest;
2. after ``--baseline-s`` switches the generator to a drifted scenario (``fraud_wave``: a new
   merchant mix *and* a new fraud pattern);
3. prints every event of the control plane as it happens (drift, alerts, actions, training,
   evaluation, deployment) with its causal ids, and a status line every few seconds;
4. when a promotion (or rollback) arrives, prints the causal chain from that
   ``model.deployed`` back to the drift event that started it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from constellation import api_keys, stack
from constellation.events import Timeline, describe, log, short
from constellation.processes import http_json
from constellation.traffic import DelayedLabelSender, LiveTraffic
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic
from mlops_platform.kafka import EventProducer
from mlops_platform.settings import PlatformSettings

# The local alert sinks (``tests.support.alert_sinks``) that ``run`` starts for the alerter.
SINKS_HTTP_PORT = int(os.environ.get("DEMO_SINKS_HTTP_PORT", "9901"))
SINKS_SMTP_PORT = int(os.environ.get("DEMO_SINKS_SMTP_PORT", "2525"))


@dataclass
class Urls:
    """Where the demo sends traffic and reads status from."""

    ingest: str
    predictor: str
    sinks: str | None

    @classmethod
    def local(cls) -> Urls:
        """The local stack's services (on their catalogue ports) and the local alert sinks."""

        def url(service: str) -> str:
            return f"http://{stack.HOST}:{stack.SERVICE_BY_NAME[service].port}"

        return cls(url("ingest"), url("predictor"), f"http://{stack.HOST}:{SINKS_HTTP_PORT}")


def status_line(urls: Urls, traffic: LiveTraffic, phase: str) -> str:
    viewer = api_keys.client_key(Role.VIEWER, "VIEWER_API_KEY")
    model = http_json(f"{urls.predictor}/model", headers={"X-API-Key": viewer} if viewer else None) or {}
    serving = [
        f"{arm}=v{model[arm]['version']}"
        for arm in ("champion", "challenger")
        if isinstance(model.get(arm), dict)
    ]
    sinks = http_json(f"{urls.sinks}/") if urls.sinks else None
    delivered = len(sinks.get("requests", [])) + len(sinks.get("mails", [])) if isinstance(sinks, dict) else 0
    c = traffic.counters
    return (
        f"[{phase}] sent {c.transactions} transactions, {c.labels} labels, {c.interactions} interactions"
        f" | serving {' '.join(serving) or '?'} | alert deliveries {delivered}"
        + (f" | rejected {c.rejected} errors {c.errors}" if c.rejected or c.errors else "")
    )


def run_demo(args: argparse.Namespace, urls: Urls | None = None, stop: threading.Event | None = None) -> int:
    urls = urls or Urls.local()
    stop = stop or threading.Event()
    settings = PlatformSettings()
    closed = threading.Event()
    drift_seen = threading.Event()

    def on_event(topic: str, value: dict[str, Any]) -> None:
        log(
            f"{describe(topic, value):<110} id={short(value['envelope']['event_id'])} "
            f"cause={short(value['envelope'].get('causation_id'))}"
        )
        if topic == Topic.DATA_DRIFT_DETECTED and value.get("state") == "drift":
            drift_seen.set()
        if (
            topic == Topic.MODEL_DEPLOYED
            and value["action"] in ("promote", "rollback")
            and drift_seen.is_set()
        ):
            print_chain(value["envelope"]["event_id"])
            closed.set()

    timeline = Timeline(settings, on_event)

    def print_chain(event_id: str) -> None:
        chain = timeline.chain(event_id)
        log("LOOP CLOSED. Causal chain, newest first (follow causation_id):")
        for topic, value in chain:
            print(
                f"           {short(value['envelope']['event_id'])}"
                f" <- {short(value['envelope'].get('causation_id'))}"
                f"  {topic:<28} {describe(topic, value)[:100]}",
                flush=True,
            )

    timeline.start()
    timeline.assigned.wait(30)
    labels_producer = EventProducer(settings, "chargeback-simulator", timeline.serde)
    labels = DelayedLabelSender(labels_producer, (args.label_delay_min, args.label_delay_max), seed=2026)
    traffic = LiveTraffic(
        urls.ingest, args.rate, labels, api_key=api_keys.client_key(Role.PRODUCER, "INGEST_API_KEY")
    )
    traffic.start()
    started = time.monotonic()
    phase = "baseline"
    log(
        f"Streaming {args.rate:.0f} transactions/s through ingest with labels after "
        f"{args.label_delay_min:.0f}-{args.label_delay_max:.0f}s; "
        f"drift ({args.scenario}) in {args.baseline_s:.0f}s"
    )
    next_status = started
    try:
        while not stop.is_set():
            now = time.monotonic()
            if phase == "baseline" and now - started >= args.baseline_s:
                phase = args.scenario
                traffic.switch(args.scenario)
                log(f">>> Injecting drift: the generator now produces the '{args.scenario}' scenario")
            if now >= next_status:
                log(status_line(urls, traffic, phase))
                next_status = now + args.status_every_s
            if closed.is_set() and args.exit_after_loop:
                log("The loop closed; stopping the demo as asked.")
                return 0
            if args.duration_s and now - started >= args.duration_s:
                log("Demo duration reached.")
                return 0 if closed.is_set() or not args.exit_after_loop else 1
            stop.wait(0.5)
    finally:
        traffic.stop()
        timeline.stop_event.set()
        traffic.join(10)
        timeline.join(10)
        labels_producer.close()
    return 0


def parser(
    prog: str = "python -m constellation demo", description: str | None = __doc__
) -> argparse.ArgumentParser:
    """The demo's options (``run`` takes the same)."""
    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=float, default=150.0, help="transactions per second")
    p.add_argument(
        "--baseline-s", type=float, default=60.0, help="seconds of baseline traffic before the drift"
    )
    p.add_argument("--scenario", default="fraud_wave", help="drift scenario of fraud_model.generator")
    p.add_argument("--label-delay-min", type=float, default=3.0)
    p.add_argument("--label-delay-max", type=float, default=10.0)
    p.add_argument("--status-every-s", type=float, default=10.0)
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this many seconds (0: never)")
    p.add_argument(
        "--exit-after-loop", action="store_true", help="stop once a promotion/rollback closed the loop"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return run_demo(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
