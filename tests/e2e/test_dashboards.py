"""Every Grafana query and every Prometheus rule returns data from the live constellation.

Runs against the local stack with all six services and its Prometheus (``make up``; the
module starts what is missing with ``python -m constellation stack up`` and stops, at the end, the
services it started). While traffic flows — transactions through ingest, their delayed
fraud labels, user interactions and clicks on served recommendations, and after a while
transactions from a drifted world — each dashboard query (Grafana variables replaced by
a short range) and each rule expression (alert thresholds turned into ``bool``
comparisons, so a quiet system still returns its measure) is run on Prometheus' HTTP
API. The test fails on any query that errors or still returns no series when the
deadline passes, and names them.

Environment: PROMETHEUS_URL (default http://127.0.0.1:9090), E2E_DASHBOARD_DEADLINE_S
(default 600), E2E_DRIFT_AFTER_S (when to switch to drifted traffic, default 90; a
negative value never does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from constellation import api_keys, stack
from fraud_model.contract import transaction_payload
from fraud_model.generator import DelayedLabels, TransactionGenerator
from mlops_platform.auth import Role
from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from recsys_data.generator import InteractionGenerator
from tests import promql

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL", stack.PROMETHEUS_URL).rstrip("/")
DEADLINE_S = float(os.environ.get("E2E_DASHBOARD_DEADLINE_S", "600"))
DRIFT_AFTER_S = float(os.environ.get("E2E_DRIFT_AFTER_S", "90"))
DRIFT_SCENARIO = "amount_inflation"
SOURCE = "e2e-traffic"


def _url(spec: stack.ServiceSpec) -> str:
    return f"http://{stack.HOST}:{spec.port}"


def _ready(spec: stack.ServiceSpec) -> bool:
    return stack.http_ok(f"{_url(spec)}/ready")


@pytest.fixture(scope="module")
def constellation() -> Iterator[dict[str, str]]:
    """URL of each service; the whole constellation and Prometheus are running."""
    before = {spec.name: _ready(spec) for spec in stack.SERVICES}
    if not all(before.values()):
        result = subprocess.run(
            [sys.executable, "-m", "constellation", "stack", "up"], cwd=ROOT, timeout=1500
        )
        if result.returncode != 0:
            pytest.fail("`python -m constellation stack up` failed (output above)", pytrace=False)
    not_ready = [spec.name for spec in stack.SERVICES if not _ready(spec)]
    if not_ready:
        pytest.fail(f"services not ready: {', '.join(not_ready)} (see .stack/logs/)", pytrace=False)
    if not stack.http_ok(f"{PROMETHEUS_URL}/-/ready"):
        pytest.fail(
            f"Prometheus is not running at {PROMETHEUS_URL}: `make up` starts it "
            "(Debian's prometheus package; see .stack/logs/prometheus.log)",
            pytrace=False,
        )
    yield {spec.name: _url(spec) for spec in stack.SERVICES}
    # Leave the services as found: stop what this module started, including instances the
    # auto-responder added while the traffic ran (it scales the predictor).
    if not any(before.values()):
        stack.down(infra=False, services=True)
        return
    for spec in stack.SERVICES:
        if not before[spec.name]:
            for name, index in stack._instance_names(spec):
                stack.stop(name)
                stack.set_scrape_target(spec, index, present=False)


# --------------------------------------------------------------------------- traffic


@dataclass
class TrafficStats:
    transactions: int = 0
    labels: int = 0
    interactions: int = 0
    clicks: int = 0
    recommendations: int = 0
    drifted: bool = False
    errors: list[str] = field(default_factory=list)


class Traffic(threading.Thread):
    """Transactions, delayed labels, interactions and clicks until stopped.

    Transactions, interactions and clicks go through ingest's HTTP API (so its metrics
    move too); labels are published straight to ``prediction.feedback`` like an external
    chargeback feed would. After ``drift_after_s`` the transactions come from a drifted
    world (amounts inflate), so the drift detector has something to detect.
    """

    def __init__(
        self,
        urls: dict[str, str],
        settings: PlatformSettings,
        serde: AvroSerde,
        drift_after_s: float,
        batch: int = 200,
        tick_s: float = 0.5,
    ) -> None:
        super().__init__(name="e2e-traffic", daemon=True)
        self.urls = urls
        self.producer = EventProducer(settings, SOURCE, serde)
        self.drift_after_s = drift_after_s
        self.batch = batch
        self.tick_s = tick_s
        self.stats = TrafficStats()
        self.stopped = threading.Event()
        self.transactions = TransactionGenerator(seed=int(time.time()) % 100_000, fraud_rate=0.03)
        self.labels = DelayedLabels(seed=11)
        self.users = InteractionGenerator(n_users=200, seed=int(time.time()) % 1000, user_prefix="e2e-user")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)
        self.producer.flush(10)
        self.producer.close()

    def run(self) -> None:
        started = time.monotonic()
        # The stack's producer key: ingest's writes need it, and it reads the recommender too.
        headers = api_keys.ensure().headers(Role.PRODUCER)
        with httpx.Client(timeout=30, headers=headers) as client:
            while not self.stopped.is_set():
                tick = time.monotonic()
                if 0 <= self.drift_after_s <= tick - started and not self.stats.drifted:
                    self.transactions.scenario = DRIFT_SCENARIO
                    self.stats.drifted = True
                try:
                    self._transactions(client)
                    self._labels()
                    self._recommendations(client)
                except (httpx.HTTPError, RuntimeError) as exc:
                    self._error(repr(exc))
                self.producer.poll(0)
                self.stopped.wait(max(0.0, self.tick_s - (time.monotonic() - tick)))

    def _error(self, message: str) -> None:
        if len(self.stats.errors) < 50:
            self.stats.errors.append(message)

    def _transactions(self, client: httpx.Client) -> None:
        rows = self.transactions.generate(self.batch)
        for row in rows:
            row["transaction_id"] = f"e2e-{uuid.uuid4()}"
        body = {"transactions": [transaction_payload(row) for row in rows]}
        response = client.post(f"{self.urls['ingest']}/transactions/batch", json=body)
        if response.status_code != 202:
            self._error(f"POST /transactions/batch: {response.status_code} {response.text[:300]}")
            return
        self.stats.transactions += len(rows)
        now = time.monotonic()
        for row in rows:
            self.labels.add(row, now, delay_s=(2.0, 20.0), drop_rate=0.05)

    def _labels(self) -> None:
        for label in self.labels.due(time.monotonic()):
            self.producer.produce(
                Topic.PREDICTION_FEEDBACK.value,
                make_event(SOURCE, label),
                key=label["transaction_id"],
            )
            self.stats.labels += 1

    def _recommendations(self, client: httpx.Client) -> None:
        # One short session: a few interactions through ingest, then the user's list, and a
        # click on one of its items.
        user = self.users.users[int(self.users.rng.integers(len(self.users.users)))]
        events = list(self.users.session(user, int(time.time() * 1000)))[:5]
        for event in events:
            if event.kind != "interaction":
                continue
            payload = {k: v for k, v in event.payload().items() if v is not None and v != {}}
            response = client.post(f"{self.urls['ingest']}/interactions", json=payload)
            if response.status_code == 202:
                self.stats.interactions += 1
            else:
                self._error(f"POST /interactions: {response.status_code} {response.text[:300]}")
        listing = client.get(f"{self.urls['recommender']}/recommendations/{user.user_id}", params={"k": 10})
        if listing.status_code != 200:
            self._error(f"GET /recommendations: {listing.status_code} {listing.text[:300]}")
            return
        self.stats.recommendations += 1
        shown: dict[str, Any] = listing.json()
        items = shown.get("items") or []
        if not items:
            return
        position = int(self.users.rng.integers(len(items)))
        click = {
            "user_id": user.user_id,
            "item_id": items[position]["item_id"],
            "recommendation_id": shown["recommendation_id"],
            "strategy": shown["strategy"],
            "position": position,
        }
        response = client.post(f"{self.urls['ingest']}/clicks", json=click)
        if response.status_code == 202:
            self.stats.clicks += 1
        else:
            self._error(f"POST /clicks: {response.status_code} {response.text[:300]}")


@pytest.fixture(scope="module")
def traffic(
    constellation: dict[str, str], platform_settings: PlatformSettings, serde: AvroSerde
) -> Iterator[Traffic]:
    runner = Traffic(constellation, platform_settings, serde, DRIFT_AFTER_S)
    runner.start()
    yield runner
    runner.stop()


# --------------------------------------------------------------------------- queries


@dataclass
class Outcome:
    query: promql.Query
    evaluated: str
    series: int = 0
    error: str = ""


def evaluate(client: httpx.Client, query: promql.Query) -> Outcome:
    expr = promql.without_thresholds(query.expr) if query.kind == "alert" else query.expr
    outcome = Outcome(query, expr)
    try:
        response = client.post(f"{PROMETHEUS_URL}/api/v1/query", data={"query": expr})
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        outcome.error = repr(exc)
        return outcome
    if body.get("status") != "success":
        outcome.error = f"{body.get('errorType')}: {body.get('error')}"
        return outcome
    result = body["data"]["result"]
    outcome.series = len(result) if isinstance(result, list) else 1
    return outcome


def all_queries() -> list[promql.Query]:
    return promql.dashboard_queries() + promql.rule_queries()


def test_every_dashboard_and_rule_query_returns_series(traffic: Traffic) -> None:
    queries = all_queries()
    deadline = time.monotonic() + DEADLINE_S
    with httpx.Client(timeout=30) as client:
        while True:
            outcomes = [evaluate(client, query) for query in queries]
            errors = [o for o in outcomes if o.error]
            empty = [o for o in outcomes if not o.error and o.series == 0]
            if errors or not empty or time.monotonic() > deadline:
                break
            time.sleep(15)
    stats = traffic.stats
    summary = (
        f"traffic: {stats.transactions} transactions, {stats.labels} labels, "
        f"{stats.interactions} interactions, "
        f"{stats.recommendations} lists, {stats.clicks} clicks, drifted={stats.drifted}; "
        f"{len(queries)} queries, {len(errors)} errors, {len(empty)} empty"
    )
    print(summary)
    lines = [f"  ERROR {o.query.origin}: {o.error}\n      {o.evaluated}" for o in errors]
    lines += [f"  EMPTY {o.query.origin}\n      {o.evaluated}" for o in empty]
    if stats.errors:
        lines.append("  traffic errors: " + "; ".join(stats.errors[:5]))
    assert not errors and not empty, summary + "\n" + "\n".join(lines)


def test_prometheus_scrapes_every_service_and_loaded_the_rules(constellation: dict[str, str]) -> None:
    with httpx.Client(timeout=10) as client:
        targets = client.get(f"{PROMETHEUS_URL}/api/v1/targets").json()["data"]["activeTargets"]
        groups = client.get(f"{PROMETHEUS_URL}/api/v1/rules").json()["data"]["groups"]
    up = {t["labels"]["job"] for t in targets if t["health"] == "up" and t["labels"].get("tier") == "service"}
    assert up >= {spec.name for spec in stack.SERVICES}, f"services scraped and up: {sorted(up)}"
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    expected = {str(rule.get("alert") or rule.get("record")) for _path, rule in promql.rules()}
    assert expected <= loaded, f"rules not loaded: {sorted(expected - loaded)}"
    unhealthy = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "err"]
    assert not unhealthy, f"rules failing to evaluate: {unhealthy}"
