"""HTTP endpoints of the predictor: what is serving, a manual alias check, synchronous scoring."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from fraud_model.fields import TransactionFields, TransactionId
from mlops_platform.auth import Operator, Producer, Role, require
from mlops_platform.logs import get_logger
from predictor import metrics
from predictor.scoring import NoModelLoaded
from predictor.service import PredictorService


def get_service(request: Request) -> PredictorService:
    service: PredictorService = request.app.state.predictor
    return service


ServiceDep = Annotated[PredictorService, Depends(get_service)]

log = get_logger(__name__)

# Reading needs a viewer key; a refresh an operator key; synchronous scoring a producer key.
router = APIRouter(dependencies=[Depends(require(Role.VIEWER))])


# --------------------------------------------------------------------------- schemas


class ServingModelPublic(BaseModel):
    arm: str
    alias: str
    version: str
    run_id: str | None
    training_threshold: float | None = Field(description="Cost-optimal threshold found in training.")
    loaded_at: str
    load_seconds: float


class ModelPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    serving: bool = Field(description="A champion is loaded and scoring.")
    champion: ServingModelPublic | None
    challenger: ServingModelPublic | None
    serving_since: str | None
    challenger_share: float = Field(description="Share of transaction ids routed to the challenger.")
    ab_active: bool = Field(description="A challenger is loaded, so the split applies.")
    aliases: dict[str, str] = Field(description="Aliases followed: arm -> alias name.")
    risk_thresholds: dict[str, float] = Field(description="Lower bounds of verify, hold and block.")
    registry: dict[str, Any] = Field(description="Outcome of the alias checks (stale, last error, ...).")
    model_events: dict[str, Any] = Field(description="The model.deployed listener.")
    refresh_interval_s: float


class ScoreRequest(TransactionFields):
    """One transaction with the ``prediction.request`` fields, validated as ingest validates them."""

    transaction_id: TransactionId


class ScorePublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    transaction_id: str
    account_id: str
    fraud_probability: float
    risk_level: str = Field(description="approve | verify | hold | block")
    model_name: str
    model_version: str
    model_alias: str
    ab_arm: str = Field(description="champion | challenger")
    features: dict[str, float | None] = Field(description="Feature vector scored (null = missing).")
    scoring_ms: float


# --------------------------------------------------------------------------- routes


def describe_model(service: PredictorService) -> ModelPublic:
    serving = service.holder.serving
    settings = service.settings
    return ModelPublic(
        model_name=settings.model_name,
        serving=serving is not None,
        champion=ServingModelPublic(**serving.champion.describe()) if serving else None,
        challenger=(
            ServingModelPublic(**serving.challenger.describe()) if serving and serving.challenger else None
        ),
        serving_since=serving.since.isoformat() if serving else None,
        challenger_share=settings.challenger_share,
        ab_active=bool(serving and serving.challenger),
        aliases={"champion": settings.champion_alias, "challenger": settings.challenger_alias},
        risk_thresholds=service.thresholds.as_dict(),
        registry=service.holder.status.as_dict(),
        model_events=service.model_events_listener(),
        refresh_interval_s=settings.model_refresh_interval_s,
    )


@router.get("/model", response_model=ModelPublic, tags=["model"])
async def get_model(service: ServiceDep) -> ModelPublic:
    """What is serving: versions, aliases, load times, run ids, A/B split and risk thresholds."""
    return describe_model(service)


@router.post("/model/refresh", response_model=ModelPublic, tags=["model"])
async def refresh_model(service: ServiceDep, principal: Operator) -> ModelPublic:
    """Check the aliases in the registry now and load what changed (same as a model.deployed event)."""
    log.info("model_refresh_requested", actor=principal.identity)
    await run_in_threadpool(service.holder.refresh, "http")
    return describe_model(service)


@router.post(
    "/score",
    response_model=ScorePublic,
    tags=["scoring"],
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "No model is loaded yet."}},
)
def score(body: ScoreRequest, service: ServiceDep, _caller: Producer) -> ScorePublic:
    """Score one transaction synchronously, exactly as the stream would; nothing is published."""
    started = time.perf_counter()
    try:
        (prediction,) = service.engine.score([body.model_dump()], metrics.HTTP_ENDPOINT)
    except NoModelLoaded as exc:
        metrics.REQUESTS.labels(metrics.HTTP_ENDPOINT, "unavailable", "").inc()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    elapsed = time.perf_counter() - started
    metrics.LATENCY.labels(metrics.HTTP_ENDPOINT).observe(elapsed)
    payload = prediction.payload(service.settings.model_name)
    payload["features"] = {k: (None if v != v else v) for k, v in prediction.features.items()}  # NaN -> null
    return ScorePublic(**payload, scoring_ms=elapsed * 1000.0)
