"""The benchmark's front door: ingest over HTTP, single and batch endpoints, with an asyncio load generator.

Transactions are posted to the running ingest (``make up``); each one is expected on
``prediction.completed`` (scored by the running predictor), so a phase reports both the
HTTP answer (202: Kafka acknowledged the request) and the end-to-end time to the score.

* **fixed rate** (open loop): request ``k`` is due at ``start + k * batch / rate`` and its
  transactions carry that time as ``event_time``; latency is measured from the due time,
  so a client or server that falls behind counts against the result (no coordinated
  omission). Requests do not wait for earlier answers (up to ``max_in_flight``).
* **saturation** (closed loop): ``concurrency`` connections each post the next request as
  soon as the previous one is answered, for ``duration_s``; latency is measured from the
  moment a request is sent.

The load generator is httpx (already a dependency) on one asyncio loop with bodies encoded
before the clock starts; on a 2-core machine it shares the CPUs with ingest, the predictor
and the broker, which the ``client_cpu_s`` figure makes visible.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import numpy as np

from fraud_model.contract import transaction_payload


class Arrivals(Protocol):
    """What the phase needs of the benchmark's collector of ``prediction.completed``."""

    arrivals: dict[bytes, float]

    def expect(self, key: bytes, scheduled: float) -> None: ...

    def wait_for(self, keys: list[bytes], timeout_s: float) -> int: ...


class Pool(Protocol):
    def take(self, count: int, prefix: str) -> Any: ...


@dataclass
class IngestResult:
    """One ingest phase; the counters stay zero for a fixed rate that was skipped."""

    endpoint: str
    phase: str
    batch_size: int
    target_rate: float | None
    requests: int = 0
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    errors: int = 0
    elapsed_seconds: float = 0.0
    accepted_per_s: float = 0.0
    received: int = 0
    client_cpu_s: float = 0.0
    latency_202_ms: dict[str, float] = field(default_factory=dict)
    end_to_end_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in ms of latencies in seconds (every table of the benchmark)."""
    if not values:
        return {}
    array = np.asarray(values) * 1000.0
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "p99": round(float(np.percentile(array, 99)), 2),
        "max": round(float(array.max()), 2),
        "mean": round(float(array.mean()), 2),
    }


#: A mode or endpoint is not driven at a fixed rate above this share of its saturation
#: throughput: past its capacity a queue grows for the whole phase, and the latency measured is
#: the phase's length, not the system's.
MAX_LOAD_FACTOR = 0.8


def over_capacity(rate: float, capacity: float | None, unit: str) -> str | None:
    """Why a fixed rate is skipped (above ``MAX_LOAD_FACTOR`` of the saturation measured), or None."""
    if capacity is None or rate <= capacity * MAX_LOAD_FACTOR:
        return None
    return f"skipped: above {MAX_LOAD_FACTOR:.0%} of saturation ({capacity:.0f} {unit})"


def endpoint_name(batch_size: int) -> str:
    """How results name the endpoint: the path, with the batch size for the batch endpoint."""
    return f"/transactions/batch ({batch_size}/request)" if batch_size > 1 else "/transactions"


def _body(rows: list[dict[str, Any]], at: float, batch: bool) -> bytes:
    stamp = datetime.fromtimestamp(at, UTC).isoformat()
    items = [{**transaction_payload(row), "event_time": stamp} for row in rows]
    return json.dumps({"transactions": items} if batch else items[0]).encode()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _phase(
    url: str,
    pool: Pool,
    collector: Arrivals,
    *,
    batch_size: int,
    rate: float | None,
    duration_s: float,
    concurrency: int,
    max_in_flight: int,
    drain_timeout_s: float,
    api_key: str | None,
    log: Callable[[str], None],
) -> IngestResult:
    batch = batch_size > 1
    path = "/transactions/batch" if batch else "/transactions"
    endpoint = endpoint_name(batch_size)
    phase = "saturation" if rate is None else f"rate={rate:g}"
    prefix = f"bench-ingest-{'b' if batch else 's'}-{phase.replace('=', '-')}-{uuid.uuid4().hex[:6]}"
    # Enough requests for the phase, prepared (rows and ids) before the clock starts.
    if rate is None:
        requests = max(int(concurrency * duration_s * (2_000 if not batch else 200)), 1)
        requests = min(requests, int(60_000 / batch_size) + 1)
    else:
        requests = max(int(rate * duration_s / batch_size), 1)
    rows = list(pool.take(requests * batch_size, prefix))
    chunks = [rows[i * batch_size : (i + 1) * batch_size] for i in range(requests)]
    keys = [[row["transaction_id"].encode() for row in chunk] for chunk in chunks]
    now = time.time()
    bodies = [_body(chunk, now, batch) for chunk in chunks] if rate is None else []
    latencies: list[float] = []
    sent_at: dict[int, float] = {}
    counts = {"accepted": 0, "refused": 0, "errors": 0, "sent": 0}
    limits = httpx.Limits(max_connections=max(concurrency, max_in_flight), max_keepalive_connections=None)
    headers = {"content-type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    cpu_before = _cpu_s()

    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:

        async def post(index: int, body: bytes, due: float) -> None:
            for key in keys[index]:
                collector.expect(key, due)
            sent_at[index] = due
            counts["sent"] += len(keys[index])
            try:
                response = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError:
                counts["errors"] += len(keys[index])
                return
            latencies.append(time.time() - due)
            if response.status_code == 202:
                counts["accepted"] += len(keys[index])
            else:
                counts["refused"] += len(keys[index])

        start = time.time()
        if rate is None:
            deadline = start + duration_s
            cursor = iter(range(requests))

            async def worker() -> None:
                for index in cursor:
                    if time.time() >= deadline:
                        return
                    await post(index, bodies[index], time.time())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            gate = asyncio.Semaphore(max_in_flight)
            tasks = []

            async def paced(index: int, due: float) -> None:
                async with gate:
                    await post(index, _body(chunks[index], due, batch), due)

            for index in range(requests):
                due = start + 0.2 + index * batch_size / rate
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(paced(index, due)))
            await asyncio.gather(*tasks)
        elapsed = max(time.time() - start, 1e-9)
    client_cpu = _cpu_s() - cpu_before

    sent_keys = [key for index in sent_at for key in keys[index]]
    received = await asyncio.to_thread(collector.wait_for, sent_keys, drain_timeout_s)
    end_to_end = [
        collector.arrivals[key] - sent_at[index]
        for index in sent_at
        for key in keys[index]
        if key in collector.arrivals
    ]
    result = IngestResult(
        endpoint=endpoint,
        phase=phase,
        batch_size=batch_size,
        target_rate=rate,
        requests=len(sent_at),
        sent=counts["sent"],
        accepted=counts["accepted"],
        refused=counts["refused"],
        errors=counts["errors"],
        elapsed_seconds=round(elapsed, 3),
        accepted_per_s=round(counts["accepted"] / elapsed, 1),
        received=received,
        client_cpu_s=round(client_cpu, 2),
        latency_202_ms=percentiles(latencies),
        end_to_end_ms=percentiles(end_to_end),
    )
    if received < counts["accepted"]:
        result.note = f"{counts['accepted'] - received} scores missing after {drain_timeout_s:.0f}s"
    log(
        f"ingest   {endpoint:28s} {phase:12s} accepted {result.accepted:6d} "
        f"{result.accepted_per_s:8.1f} tx/s  202 p99 {result.latency_202_ms.get('p99', -1):7.1f} ms  "
        f"e2e p99 {result.end_to_end_ms.get('p99', -1):8.1f} ms"
    )
    return result


def run_ingest(
    url: str,
    pool: Pool,
    collector: Arrivals,
    *,
    single_rates: list[float],
    batch_rates: list[float],
    batch_size: int,
    duration_s: float,
    api_key: str | None,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every ingest phase: single endpoint (saturation, fixed rates), then the batch endpoint.

    A fixed rate above ``MAX_LOAD_FACTOR`` of its endpoint's saturation is skipped, with a note.
    """
    plan: list[tuple[int, float | None, int]] = [(1, None, 32)]
    plan += [(1, rate, 1) for rate in single_rates]
    plan += [(batch_size, None, 8)]
    plan += [(batch_size, rate, 1) for rate in batch_rates]
    results = []
    capacity: dict[int, float] = {}
    for size, rate, concurrency in plan:
        if rate is not None and (skipped := over_capacity(rate, capacity.get(size), "tx/s")):
            endpoint = endpoint_name(size)
            log(f"ingest   {endpoint:28s} rate={rate:g} {skipped}")
            results.append(asdict(IngestResult(endpoint, f"rate={rate:g}", size, rate, note=skipped)))
            continue
        result = asyncio.run(
            _phase(
                url,
                pool,
                collector,
                batch_size=size,
                rate=rate,
                duration_s=duration_s,
                concurrency=concurrency,
                max_in_flight=256,
                drain_timeout_s=60 + duration_s,
                api_key=api_key,
                log=log,
            )
        )
        if rate is None:
            capacity[size] = result.accepted_per_s
        results.append(asdict(result))
    return results
