"""Wiring: settings, the platform runtime, the Faust streams and the HTTP app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mlops_platform.http import create_app
from mlops_platform.service import ServiceRuntime
from recommender.api import router
from recommender.config import Settings
from recommender.streams import RecommenderStreams
from recsys_data import load_catalogue

DESCRIPTION = """Real-time recommendations on Faust tables.

Consumes `business.user.interaction`, `business.recommendation.clicked` and
`business.feedback.received`; keeps per-user activity, genre profiles, boosts and top-k,
plus item co-occurrence and CTR per item and strategy, in changelog-backed tables;
publishes `recommendations.updated` and `push.recommendations`.
"""


def build_app(settings: Settings | None = None) -> FastAPI:
    """The recommender's FastAPI app; the Faust app runs inside its lifespan."""
    settings = settings or Settings()
    # The runtime brings the registry serde, the readiness checks of Kafka and the
    # registry, and the system.health heartbeat; the consuming is Faust's.
    runtime = ServiceRuntime(settings)
    catalogue = load_catalogue(settings.catalogue_items, settings.catalogue_seed)
    streams = RecommenderStreams(settings, runtime.serde, catalogue)
    runtime.checks["streams"] = streams.check
    runtime.heartbeat_details = streams.heartbeat_details

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan(app), streams.running():
            app.state.recommender = streams
            yield

    app = create_app(settings, title="recommender", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(router)
    return app
