"""The product's main command: the whole constellation and the demo scenario, in the foreground.

    python -m constellation run [demo options, see python -m constellation demo --help]

1. starts the infrastructure (Kafka, schema registry, MLflow, Prometheus, Alertmanager) and
   local alert sinks (``tests.support.alert_sinks``: a webhook receiver and an SMTP server
   standing in for Slack/e-mail);
2. trains a fresh baseline champion for this run, so every demo starts from the same place;
3. (re)starts the six services with demo tuning (smaller windows and sample minimums, a
   larger challenger share) so the loop closes in minutes instead of hours, and prints the
   API keys (generated once into ``.stack/api-keys.json``) with curl examples;
4. runs the demo (``constellation.demo``): traffic, drift injection, the live event timeline;
5. on Ctrl+C (or when the demo ends with --exit-after-loop) stops everything it started.

Settings already present in the environment win over the demo tuning.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from constellation import api_keys, demo, stack

SINKS_HTTP_PORT, SINKS_SMTP_PORT = demo.SINKS_HTTP_PORT, demo.SINKS_SMTP_PORT

# Production defaults want thousands of labelled samples per arm and hour-long cooldowns;
# the demo shrinks them so the loop visibly closes within a few minutes.
DEMO_ENV = {
    "ALERTER_WEBHOOK_URL": f"http://{stack.HOST}:{SINKS_HTTP_PORT}/webhook",
    "ALERTER_SLACK_WEBHOOK_URL": f"http://{stack.HOST}:{SINKS_HTTP_PORT}/slack",
    "ALERTER_SMTP_HOST": stack.HOST,
    "ALERTER_SMTP_PORT": str(SINKS_SMTP_PORT),
    "ALERTER_SMTP_FROM": "alerter@localhost",
    "ALERTER_SMTP_TO": "oncall@localhost",
    "PREDICTOR_CHALLENGER_SHARE": "0.3",
    "PREDICTOR_MODEL_REFRESH_INTERVAL_S": "10",
    "DRIFT_WINDOW_SIZE": "1500",
    "DRIFT_WINDOW_STEP": "500",
    "DRIFT_MIN_LABELLED_SAMPLES": "4000",
    "DRIFT_MIN_LABELLED_POSITIVES": "60",
    "DRIFT_QUALITY_EVAL_EVERY": "200",
    "DRIFT_AB_MIN_SAMPLES": "1000",
    "DRIFT_AB_MIN_POSITIVES": "15",
    "DRIFT_REPORT_MIN_INTERVAL_S": "20",
    "RESPONDER_RETRAIN_MIN_ROWS": "2000",
    "RESPONDER_RETRAIN_MIN_POSITIVES": "20",
    # Train on the drifted regime: wait for its labels, then use only the recent window.
    "RESPONDER_RETRAIN_SETTLE_S": "45",
    "RESPONDER_RETRAIN_WINDOW_S": "45",
}


def start_sinks() -> None:
    name = "alert-sinks"
    if stack.running_pid(name):
        return
    stack.spawn(
        name,
        [
            stack.PYTHON,
            # A module of the repository's test support, so it runs from the checkout's root.
            "-m",
            "tests.support.alert_sinks",
            "--host",
            stack.HOST,
            "--http-port",
            str(SINKS_HTTP_PORT),
            "--smtp-port",
            str(SINKS_SMTP_PORT),
        ],
        stack.platform_env(),
        cwd=stack.ROOT,
    )
    stack.wait_for(name, lambda: stack.http_ok(f"http://{stack.HOST}:{SINKS_HTTP_PORT}/"), 30)
    print(
        f"  alert-sinks: webhook http://{stack.HOST}:{SINKS_HTTP_PORT}/ , SMTP {stack.HOST}:{SINKS_SMTP_PORT}"
    )


def fresh_champion() -> None:
    """A baseline champion trained for this run (the previous run may have promoted another)."""
    version = stack.bootstrap_model("--force", "--clear-challenger")
    print(f"  model: fraud_detector@champion is version {version}")


def print_urls() -> None:
    print("\nOpen while it runs:")
    print(f"  MLflow UI           {stack.MLFLOW_URL}")
    print(f"  Prometheus          {stack.PROMETHEUS_URL}   (alerts: {stack.PROMETHEUS_URL}/alerts)")
    print(f"  Alertmanager        {stack.ALERTMANAGER_URL}")
    print(f"  Schema registry     {stack.REGISTRY_URL}/subjects")
    for spec in stack.SERVICES:
        print(f"  {spec.name:<19} http://{stack.HOST}:{spec.port}/docs")
    print(f"  Drift reports       http://{stack.HOST}:{stack.SERVICE_BY_NAME['drift-detector'].port}/reports")
    print(f"  Delivered alerts    http://{stack.HOST}:{SINKS_HTTP_PORT}/")
    print("  Status              make status\n")
    # The operator's own keys (generated once, .stack/api-keys.json, 0600): how to call the APIs.
    ingest = f"http://{stack.HOST}:{stack.SERVICE_BY_NAME['ingest'].port}"
    responder = f"http://{stack.HOST}:{stack.SERVICE_BY_NAME['auto-responder'].port}"
    print(api_keys.usage(api_keys.ensure(stack.STATE), ingest, responder) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = demo.parser(prog="python -m constellation run", description=__doc__).parse_args(argv)
    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nStopping (Ctrl+C again to force)...", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 1
    try:
        print("Starting the constellation...")
        stack.up(infra_only=True)
        start_sinks()
        fresh_champion()
        # Services restart so they pick up the demo tuning and the fresh champion.
        stack.down(infra=False, services=True)
        stack.up(infra_only=False)
        print_urls()
        code = demo.run_demo(args, stop=stop)
    except stack.StackError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
    finally:
        print("\nStopping the constellation...", flush=True)
        stack.down(infra=True, services=True)
        stack.stop("alert-sinks")
    return code


if __name__ == "__main__":
    sys.exit(main())
