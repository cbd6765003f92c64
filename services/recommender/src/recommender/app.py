"""The recommender's HTTP face: the platform app factory, the service's lifespan and the routes."""

from __future__ import annotations

from fastapi import FastAPI

from mlops_platform.http import create_app
from recommender.api import router
from recommender.config import Settings
from recommender.service import RecommenderService

DESCRIPTION = """Real-time recommendations on Faust tables.

Consumes `business.user.interaction`, `business.recommendation.clicked` and
`business.feedback.received`; keeps per-user activity, genre profiles, boosts and top-k,
plus item co-occurrence and CTR per item and strategy, in changelog-backed tables;
publishes `recommendations.updated` and `push.recommendations`.
"""


def build_app(settings: Settings | None = None, *, service: RecommenderService | None = None) -> FastAPI:
    """The recommender's FastAPI app; the Faust app runs inside its lifespan."""
    settings = settings or (service.settings if service is not None else Settings())
    service = service or RecommenderService(settings)
    app = create_app(settings, title="recommender", description=DESCRIPTION, lifespan=service.lifespan)
    app.include_router(router)
    return app
