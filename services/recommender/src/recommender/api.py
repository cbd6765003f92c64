"""HTTP routes: recommendations, profiles, A/B strategy stats, items.

Every handler is ``async`` on purpose: the tables are mutated by the stream agents on the
event loop, so reading them on the loop too (never from a worker thread) always sees a
consistent state.

The per-user routes (``/recommendations/{user_id}``, ``/users/{user_id}/profile``) are
answered by the instance that owns the user's partition: another instance forwards the
request there (:mod:`recommender.routing`). ``/strategies`` and ``/items/{item_id}`` show
the aggregates of the answering instance's own partitions.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from mlops_platform.auth import Role, require
from mlops_platform.http import invalid_query
from mlops_platform.logs import get_logger
from recommender.engine import RecList, Recommender
from recommender.metrics import recommender_metrics
from recommender.routing import SERVED_BY_HEADER, answer_here_or_forward
from recsys_data import CATEGORIES, GENRES

log = get_logger(__name__)


class Backend(Protocol):
    """What the routes need: the engine over the tables, and a way to log served lists."""

    engine: Recommender

    async def record_served(self, rec: RecList) -> None: ...


def get_backend(request: Request) -> Backend:
    backend: Backend | None = getattr(request.app.state, "recommender", None)
    if backend is None:
        raise HTTPException(status_code=503, detail="recommender is not running")
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]


class ScoredItemPublic(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    category: str | None = None
    genres: list[str] = Field(default_factory=list)


class RecommendationsPublic(BaseModel):
    user_id: str
    recommendation_id: str
    strategy: str
    trigger: str
    source: str = Field(description="table: the user's stored top-k; fallback: popular in context")
    generated_at: int = Field(description="When the list was computed (epoch milliseconds)")
    items: list[ScoredItemPublic]


class ProfilePublic(BaseModel):
    user_id: str
    strategy: str
    genres: dict[str, float]
    dominant_genre: str | None
    interactions: int
    counts: dict[str, int]
    updated_at: int | None
    boosts: dict[str, float]
    recent_activity: list[dict[str, Any]]


class StrategyStatsPublic(BaseModel):
    strategy: str
    share: float = Field(description="Share of users assigned to this arm (0 for the fallback)")
    impressions: int
    clicks: int
    lists: int
    ctr: float


class StrategiesPublic(BaseModel):
    strategies: list[StrategyStatsPublic]


class SimilarItemPublic(BaseModel):
    item_id: str
    score: float


class ItemPublic(BaseModel):
    item_id: str
    title: str
    category: str
    genres: list[str]
    collection_id: str
    popularity: float
    interaction_weight: float
    impressions: int
    clicks: int
    ctr: float
    similar: list[SimilarItemPublic]


# Every route reads: a viewer key (or any role) is needed.
router = APIRouter(tags=["recommendations"], dependencies=[Depends(require(Role.VIEWER))])

# What a per-user route may answer besides its model (documented for clients and the fuzzing).
ROUTED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            SERVED_BY_HEADER: {
                "description": "Base URL of the instance that owns the user's partition and answered",
                "schema": {"type": "string"},
            }
        }
    },
    503: {
        "description": "No instance can answer for this user right now: a rebalance is in progress "
        "(partitions moving, tables restoring) or the owner of the user's partition is unreachable; "
        "the detail says which. Retry after the Retry-After seconds."
    },
}


@router.get("/recommendations/{user_id}", response_model=RecommendationsPublic, responses=ROUTED_RESPONSES)
async def get_recommendations(
    user_id: str,
    backend: BackendDep,
    request: Request,
    response: Response,
    k: Annotated[int | None, Query(ge=1, description="How many items (default from settings)")] = None,
    genre: Annotated[str | None, Query(description="Only items of this genre")] = None,
    category: Annotated[str | None, Query(description="Only items of this category")] = None,
) -> RecommendationsPublic | Response:
    """The user's current top-k from the table; popular items in context for unknown users.

    Answered by the instance owning the user's partition (forwarded there from any other).
    """
    forwarded = await answer_here_or_forward(request, response, user_id)
    if forwarded is not None:
        return forwarded
    settings = request.app.state.settings
    size = min(k or settings.default_k, settings.max_k)
    if genre is not None and genre not in GENRES:
        raise invalid_query("genre", genre, f"unknown genre {genre!r}; one of {list(GENRES)}", list(GENRES))
    if category is not None and category not in CATEGORIES:
        raise invalid_query(
            "category",
            category,
            f"unknown category {category!r}; one of {list(CATEGORIES)}",
            list(CATEGORIES),
        )
    rec, source = backend.engine.serve(user_id, size, genre=genre, category=category)
    recommender_metrics().recommendations_served.labels(source, rec.strategy).inc()
    try:
        await backend.record_served(rec)
    except Exception as exc:  # impressions are statistics: never fail the answer for them
        log.warning("served_not_recorded", user_id=user_id, error=repr(exc))
    catalogue = backend.engine.catalogue
    items = []
    for item_id, score in rec.items:
        item = catalogue.get(item_id)
        items.append(
            ScoredItemPublic(
                item_id=item_id,
                score=round(score, 6),
                title=item.title if item else None,
                category=item.category if item else None,
                genres=list(item.genres) if item else [],
            )
        )
    return RecommendationsPublic(
        user_id=user_id,
        recommendation_id=rec.recommendation_id,
        strategy=rec.strategy,
        trigger=rec.trigger,
        source=source,
        generated_at=rec.generated_at_ms,
        items=items,
    )


@router.get("/users/{user_id}/profile", response_model=ProfilePublic, responses=ROUTED_RESPONSES)
async def get_profile(
    user_id: str, backend: BackendDep, request: Request, response: Response
) -> ProfilePublic | Response:
    """The user's genre profile (weights in 0..1), counters, boosts and recent activity.

    Answered by the instance owning the user's partition (forwarded there from any other).
    """
    forwarded = await answer_here_or_forward(request, response, user_id)
    if forwarded is not None:
        return forwarded
    profile = backend.engine.profile(user_id)
    if profile is None:
        raise HTTPException(status_code=404, detail=f"no profile for user {user_id!r}")
    return ProfilePublic(**profile)


@router.get("/strategies", response_model=StrategiesPublic)
async def get_strategies(backend: BackendDep) -> StrategiesPublic:
    """A/B statistics per recommendation strategy: impressions, clicks and CTR."""
    engine = backend.engine
    shares = dict(engine.config.arms)
    total = sum(shares.values()) or 1.0
    return StrategiesPublic(
        strategies=[
            StrategyStatsPublic(
                strategy=name,
                share=shares.get(name, 0.0) / total,
                impressions=int(stats["impressions"]),
                clicks=int(stats["clicks"]),
                lists=int(stats["lists"]),
                ctr=stats["ctr"],
            )
            for name, stats in engine.strategy_stats().items()
        ]
    )


@router.get("/items/{item_id}", response_model=ItemPublic, tags=["catalogue"])
async def get_item(item_id: str, backend: BackendDep) -> ItemPublic:
    """A catalogue item with its live statistics and similar items."""
    view = backend.engine.item_view(item_id)
    if view is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id!r} in the catalogue")
    return ItemPublic(**view)
