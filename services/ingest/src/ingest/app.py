"""The ingest app: platform app factory + :class:`IngestService` + routes."""

from __future__ import annotations

from fastapi import FastAPI

from ingest.api import install
from ingest.config import Settings
from ingest.service import IngestService
from mlops_platform.http import create_app

DESCRIPTION = """\
HTTP front door of the event bus. Every accepted record becomes an Avro event on its
topic (transactions on `prediction.request`, labels on `prediction.feedback`, interactions,
clicks and feedback on the `business.*` topics), followed by a `data.ingested` summary.

* **202** — Kafka acknowledged every record (`acks=all`, one Kafka transaction per request);
  the body lists the event ids (and transaction ids, including server-assigned ones).
* **422** — a record is invalid: field-level reasons, nothing published, one
  `data.quality.issues` event per problem. Suspicious but valid values are accepted and
  returned as `warnings` (also published, with `rejected=false`).
* **503** — Kafka or the schema registry is unavailable: nothing published; retry later.
* **401 / 403** — no valid API key, or a key without the `producer` role.
* **429** — the key's quota (token bucket, records per second) is spent: nothing published;
  retry after `Retry-After` seconds.
* **413** — the body is over `INGEST_MAX_BODY_BYTES`.

Send `Idempotency-Key: <unique string>` to make a request safe to retry: the same key with the
same body answers the first 202 again (same event ids, header `Idempotent-Replayed: true`)
without publishing anything; with another body it is refused (422).
"""


def build_app(settings: Settings | None = None, *, service: IngestService | None = None) -> FastAPI:
    """The ingest FastAPI app (tests may pass a service built with a fake publisher)."""
    settings = settings or Settings()
    service = service or IngestService(settings)
    app = create_app(
        settings,
        title="ingest",
        description=DESCRIPTION,
        lifespan=service.lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.ingest = service
    install(app)
    return app
