"""The incident scenario suite, shortened: what must hold whatever the machine's speed.

Runs ``python -m constellation scenarios`` (the code behind ``make scenarios``) for four
scenarios with small sizes: a short stable run, sudden data drift, a bad model deployed by
an operator, and a label outage. The services run as the suite starts them
(``constellation.stack``) against the local stack's Kafka, registry and MLflow, but from a
private state folder and on free ports, so they never meet the processes of ``make run``;
the state folder shares only the stack's credentials file (the broker knows those
principals). Each scenario works on a registered model of its own.

Asserted from the suite's JSON, never its timings: the stable run raises no drift or
degradation event and takes no action; the sudden drift is detected, retrained on and
the retrain succeeds, with a complete causal chain; the bad model is rolled back (and the
rollback succeeds) with a complete chain; during the label outage nothing acts on the
missing labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from constellation import credentials, stack
from tests.support.processes import free_port

# One module-scoped run of the suite: bootstraps and service restarts per scenario take minutes.
SUITE_TIMEOUT_S = 2400
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(SUITE_TIMEOUT_S + 120)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["stable", "sudden_drift", "bad_model", "label_outage"]


@pytest.fixture(scope="module")
def results(
    kafka: str, schema_registry: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The suite's JSON after running the shortened scenarios."""
    state = tmp_path_factory.mktemp("scenario-stack")
    shared = credentials.credentials_path()
    if not shared.exists():
        pytest.fail(f"no credentials file at {shared}: run `make stack-up`", pytrace=False)
    (state / "credentials.json").symlink_to(shared)
    env = {
        **os.environ,
        "STACK_DIR": str(state),
        "STACK_OBSERVABILITY": "0",
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "SCHEMA_REGISTRY_URL": schema_registry,
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }
    for spec in stack.SERVICES:
        env[f"{spec.env_prefix}HTTP_PORT"] = str(free_port())
    out = state / "scenarios.json"
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "constellation",
            "scenarios",
            "--only",
            *SCENARIOS,
            "--stable-events",
            "5000",
            "--baseline-s",
            "15",
            "--timeout-s",
            "360",
            # Drift ends once the retrain succeeded: the promotion is the closed-loop test's.
            "--quick",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the suite stop the services it started.
        process.terminate()
        output, _ = process.communicate(timeout=120)
    print(output[-20_000:])
    if not out.exists():
        pytest.fail(f"the suite wrote no results (exit {process.returncode}):\n{output[-5000:]}")
    payload = json.loads(out.read_text())
    logs = scenario_logs(output)
    # Each scenario carries its own part of the suite's output: the assertion messages
    # below show what the services did, not only the figures.
    return {s["name"]: {**s, "log": logs.get(s["name"], "")} for s in payload["scenarios"]}


def scenario_logs(output: str) -> dict[str, str]:
    """The suite's output cut at its ``=== scenario NAME`` headers."""
    logs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if "=== scenario " in line:
            current = logs.setdefault(line.split("=== scenario ", 1)[1].strip(), [])
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines[-80:]) for name, lines in logs.items()}


def report(scenario: dict[str, Any], *fields: str) -> str:
    """An assertion message: the named fields, the notes and the scenario's log."""
    shown = {name: scenario.get(name) for name in (*fields, "notes")}
    return f"{shown}\n--- {scenario['name']} log ---\n{scenario['log']}"


def test_every_scenario_ran(results: dict[str, Any]) -> None:
    assert sorted(results) == sorted(SCENARIOS)
    errors = {name: r["notes"] for name, r in results.items() if r["expectations"].get("ran") is False}
    assert not errors


def test_stable_traffic_raises_no_alarm_and_no_action(results: dict[str, Any]) -> None:
    stable = results["stable"]
    assert stable["events_sent"] == 5000
    assert stable["false_alarms"] == 0, report(stable, "false_alarms")
    # A burst may be scaled for; nothing may act on the model.
    acted = [a for a in stable["actions"] if not a.startswith(("scale:", "scale_down:"))]
    assert not acted, report(stable, "actions")


def test_sudden_drift_is_detected_and_retrained_on(results: dict[str, Any]) -> None:
    drift = results["sudden_drift"]
    assert drift["detection_windows"] is not None, report(drift, "detected")
    assert drift["actions"].get("retrain:succeeded", 0) >= 1, report(drift, "actions")
    assert drift["actions_failed"] == 0, report(drift, "actions")
    assert drift["chain_complete"] is True, report(drift, "chain")


def test_a_bad_model_is_rolled_back(results: dict[str, Any]) -> None:
    bad = results["bad_model"]
    assert bad["detection_windows"] is not None, report(bad, "detected")
    assert bad["actions"].get("rollback:succeeded", 0) >= 1, report(bad, "detected", "actions")
    assert bad["good_model_version"] is not None, report(bad, "actions", "good_model_version")
    assert bad["chain_complete"] is True, report(bad, "chain")
    # From the rollback's model.deployed back to the incident: the bad deployment or its degradation.
    assert len(bad["chain"]) >= 2 and bad["chain"][0] == "model.deployed", report(bad, "chain")
    assert bad["chain"][-1] in ("model.deployed", "model.performance.degraded"), report(bad, "chain")


def test_nothing_acts_on_missing_labels(results: dict[str, Any]) -> None:
    outage = results["label_outage"]
    assert outage["expectations"]["no action on missing labels"] is True, report(outage, "actions")
    assert outage["false_alarms"] == 0, report(outage, "false_alarms")
