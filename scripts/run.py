#!/usr/bin/env python3
"""The product's main command: bring the constellation up and show it live.

Starts everything (``scripts/stack.py up``), prints where to look, then refreshes a
status view until Ctrl+C, which stops the whole constellation cleanly.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack  # noqa: E402


def main() -> int:
    try:
        stack.up(infra_only=False)
    except stack.StackError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print("\nOpen:")
    print(f"  MLflow UI          {stack.MLFLOW_URL}")
    print(f"  Schema registry    {stack.REGISTRY_URL}/subjects")
    for spec in stack.SERVICES:
        if stack.service_available(spec):
            print(f"  {spec.name:<18} http://{stack.HOST}:{spec.port}/docs")
    print("\nCtrl+C stops everything.\n")
    stopping = {"flag": False}

    def request_stop(_signum: int, _frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping["flag"]:
        print(f"--- {time.strftime('%H:%M:%S')}")
        stack.print_status(as_json=False)
        for _ in range(20):
            if stopping["flag"]:
                break
            time.sleep(0.5)
    print("\nStopping the constellation...")
    stack.down(infra=True, services=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
