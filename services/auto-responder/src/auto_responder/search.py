"""A bounded hyper-parameter search for a retrain, recorded in MLflow as nested runs.

:func:`search_and_train` always trains with the fixed parameters
(:data:`fraud_model.training.DEFAULT_PARAMS`) first: that model is the fallback. When
``trials`` > 0 it then opens the retrain's MLflow run (the parent), and an Optuna study
(TPE, seeded) tries at most ``trials`` parameter sets within ``timeout_s`` seconds, each
trained on the same split and logged as a nested run (``mlflow.parentRunId``) with its
parameters and every FDS metric (``val_*``). The objective is the FDS one: the validation
business cost (FN x fn_cost + FP x fp_cost) at each model's cost-optimal threshold, ties
broken by AUPRC. The best trial wins only if it beats the fixed parameters; otherwise (or
when no trial finished in time) the fixed model is kept. The parent run gets the search
summary (``search_*`` params, metrics and the ``search_choice`` tag); the caller then logs
the chosen model into it with :func:`fraud_model.training.log_and_register` (``run_id``),
so the parent carries the chosen parameters and all FDS metrics, and the registered version
links to it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mlops_platform.logs import get_logger

log = get_logger(__name__)


@dataclass
class SearchOutcome:
    """What the search did (``run_id`` is the parent run to log the chosen model into)."""

    result: Any  # fraud_model.training.TrainingResult
    choice: str  # "fixed" (no search, or nothing better) | "search"
    run_id: str | None = None
    trials: int = 0
    completed: int = 0
    fixed_cost: float = math.nan
    best_cost: float = math.nan
    best_params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def details(self) -> dict[str, str]:
        details = {
            "search_choice": self.choice,
            "search_trials": str(self.completed),
            "search_reason": self.reason,
        }
        if math.isfinite(self.fixed_cost):
            details["search_fixed_cost"] = f"{self.fixed_cost:.0f}"
        if math.isfinite(self.best_cost):
            details["search_best_cost"] = f"{self.best_cost:.0f}"
        return details


def suggest(trial: Any) -> dict[str, Any]:
    """The search space: around the fixed parameters, bounded so a trial stays quick."""
    return {
        "n_estimators": trial.suggest_int("n_estimators", 80, 320, step=40),
        "max_depth": trial.suggest_int("max_depth", 3, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 10.0, log=True),
    }


def _key(metrics: dict[str, float]) -> tuple[float, float]:
    """Lower is better: business cost, then minus AUPRC."""
    cost = metrics.get("business_cost", math.nan)
    auprc = metrics.get("auprc", math.nan)
    return (
        cost if math.isfinite(cost) else math.inf,
        -auprc if math.isfinite(auprc) else 0.0,
    )


def _finite(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(v)
    }


def search_and_train(
    frame: pd.DataFrame,
    *,
    seed: int,
    trials: int,
    timeout_s: float,
    tracking_uri: str,
    experiment_name: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> SearchOutcome:
    """Train with the fixed parameters and, if ``trials`` > 0, a bounded search (see the module doc)."""
    from fraud_model.training import train

    fixed = train(frame, seed=seed)
    fixed_cost = fixed.metrics.get("business_cost", math.nan)
    if trials <= 0:
        return SearchOutcome(fixed, "fixed", fixed_cost=fixed_cost, reason="search off (0 trials)")

    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from fraud_model.training import _experiment_id

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment_name)
    parent = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
    parent_id = parent.info.run_id
    results: dict[int, Any] = {}

    def objective(trial: Any) -> float:
        params = suggest(trial)
        started = time.perf_counter()
        result = train(frame, params=params, seed=seed)
        results[trial.number] = result
        child = client.create_run(
            experiment_id,
            run_name=f"{run_name or 'retrain'}-trial-{trial.number}",
            tags={"mlflow.parentRunId": parent_id, "search_trial": str(trial.number)},
        )
        now = int(time.time() * 1000)
        metrics = _finite(result.metrics, "val_") | {
            "threshold": float(result.threshold),
            "train_seconds": time.perf_counter() - started,
        }
        client.log_batch(
            child.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag("validation_status", "trial")],
        )
        client.set_terminated(child.info.run_id)
        cost, neg_auprc = _key(result.metrics)
        trial.set_user_attr("neg_auprc", neg_auprc)
        return cost

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    # An Optuna timeout stops starting trials; a trial already running finishes.
    study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=(ValueError,))
    completed = [
        t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.number in results
    ]
    outcome = SearchOutcome(
        fixed, "fixed", run_id=parent_id, trials=trials, completed=len(completed), fixed_cost=fixed_cost
    )
    if not completed:
        outcome.reason = f"no trial finished within {timeout_s:.0f}s: fixed parameters"
    else:
        best = min(completed, key=lambda t: _key(results[t.number].metrics))
        best_result = results[best.number]
        outcome.best_cost = best_result.metrics.get("business_cost", math.nan)
        outcome.best_params = dict(best.params)
        if _key(best_result.metrics) < _key(fixed.metrics):
            outcome.result, outcome.choice = best_result, "search"
            outcome.reason = f"trial {best.number} beats the fixed parameters"
        else:
            outcome.reason = "no trial beats the fixed parameters"
    summary_params = {
        "search_trials": trials,
        "search_timeout_s": timeout_s,
        "search_completed": len(completed),
        **{f"search_best_{k}": v for k, v in outcome.best_params.items()},
    }
    summary_metrics = {
        "search_fixed_business_cost": fixed_cost,
        "search_best_business_cost": outcome.best_cost,
    }
    now = int(time.time() * 1000)
    client.log_batch(
        parent_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in summary_metrics.items() if math.isfinite(v)],
        params=[Param(k, str(v)) for k, v in summary_params.items()],
        tags=[RunTag("search_choice", outcome.choice), RunTag("search_reason", outcome.reason)],
    )
    log.info(
        "retrain_search_done",
        choice=outcome.choice,
        completed=len(completed),
        fixed_cost=fixed_cost,
        best_cost=outcome.best_cost,
    )
    return outcome
