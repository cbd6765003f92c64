"""A/B evaluation: champion vs challenger on live labelled outcomes (Welch's t-test on business cost).

Both arms are judged on the same period: the champion's labelled samples since the
challenger's first prediction. A pair is evaluated once both arms have enough samples
and frauds (:class:`~drift_detector.quality.ABScheduler`), and again only once both have
grown by the re-evaluation factor; each verdict is an event on
``model.evaluation.completed`` caused by the challenger's deployment when it was seen.

Not thread-safe on its own: the dispatcher serialises every call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from drift_detector import metrics as m
from drift_detector.config import Settings
from drift_detector.events import CHALLENGER_ARM, CHAMPION_ARM, Emitter, finite_map, iso
from drift_detector.models import ModelInfoCache
from drift_detector.quality import ABEvaluation, ABScheduler, evaluate_ab
from drift_detector.quality_evaluator import QualityEvaluator
from mlops_platform.kafka import Record
from mlops_platform.logs import get_logger

log = get_logger(__name__)

_MAX_DEPLOYMENTS = 100


class ABEvaluator:
    """Compares the arms' labelled samples (kept by the quality evaluator) and publishes verdicts."""

    def __init__(
        self, settings: Settings, *, registry: ModelInfoCache, quality: QualityEvaluator, emitter: Emitter
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.quality = quality
        self.emitter = emitter
        self.scheduler = ABScheduler(
            settings.ab_min_samples, settings.ab_min_positives, settings.ab_reevaluate_factor
        )
        self.evaluations: deque[dict[str, Any]] = deque(maxlen=100)
        # Envelope of the model.deployed that put each version in service: an A/B
        # evaluation names it as its cause, so a promotion traces back through the
        # challenger's deployment to whatever triggered the retrain.
        self.deployments: dict[str, dict[str, Any]] = {}

    def on_deployed(self, record: Record) -> None:
        """Remember the first deployment of each version (the cause of its evaluations)."""
        version = str(record.value.get("version", ""))
        if version and version not in self.deployments:
            self.deployments[version] = dict(record.envelope)
            while len(self.deployments) > _MAX_DEPLOYMENTS:
                self.deployments.pop(next(iter(self.deployments)))

    def to_state(self) -> dict[str, Any]:
        """Pairs evaluated (and at how many samples), verdicts and deployments as plain data.

        The labelled samples themselves are the quality evaluator's state.
        """
        return {
            "evaluated": self.scheduler.to_state(),
            "evaluations": list(self.evaluations),
            "deployments": self.deployments,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        """Replace the state by a :meth:`to_state` document."""
        self.scheduler.from_state(state["evaluated"])
        self.evaluations.clear()
        self.evaluations.extend(state["evaluations"])
        self.deployments = {str(k): dict(v) for k, v in state["deployments"].items()}

    def _pair(self) -> tuple[str, str] | None:
        champion = self.quality.arm_versions.get(CHAMPION_ARM)
        challenger = self.quality.arm_versions.get(CHALLENGER_ARM)
        if champion is None or challenger is None or champion == challenger:
            return None
        return champion, challenger

    def evaluate(self, cause: Mapping[str, Any]) -> None:
        """Compare the current pair if it is due (called after a quality evaluation)."""
        pair = self._pair()
        if pair is None:
            return
        champion, challenger = pair
        groups = self.quality.tracker.groups
        g_champ = groups.get((champion, CHAMPION_ARM))
        g_chall = groups.get((challenger, CHALLENGER_ARM))
        if g_champ is None or g_chall is None or g_chall.first_prediction_ms is None:
            return
        since = g_chall.first_prediction_ms
        p_champ, y_champ = g_champ.samples.since(since)
        p_chall, y_chall = g_chall.samples.since(since)
        if not self.scheduler.due(pair, p_champ.size, p_chall.size, int(y_champ.sum()), int(y_chall.sum())):
            return
        infos = [self.registry.infos.get(v) for v in pair]
        if any(info is None for info in infos):
            for v in pair:
                self.registry.want_info(v)
            return
        s = self.settings
        thresholds = [
            info.threshold if info is not None and not math.isnan(info.threshold) else s.default_threshold
            for info in infos
        ]
        now_ms = self.quality.joiner.clock_ms
        result: ABEvaluation = evaluate_ab(
            (champion, p_champ, y_champ, thresholds[0]),
            (challenger, p_chall, y_chall, thresholds[1]),
            fn_cost=s.fn_cost,
            fp_cost=s.fp_cost,
            alpha=s.ab_alpha,
            since_ms=since,
            now_ms=now_ms,
        )
        self.scheduler.done(pair, p_champ.size, p_chall.size)
        payload = {
            "model_name": s.model_name,
            "champion_version": champion,
            "challenger_version": challenger,
            "winner": result.winner,
            "metric": result.metric,
            "test_name": result.test_name,
            "p_value": float(result.p_value),
            "significant": result.significant,
            "champion_metrics": finite_map(result.champion_metrics),
            "challenger_metrics": finite_map(result.challenger_metrics),
            "champion_samples": result.champion_samples,
            "challenger_samples": result.challenger_samples,
        }
        deployed = self.deployments.get(challenger)
        event = self.emitter.emit(
            s.evaluation, payload, deployed or cause, severity="n/a", reason=result.winner
        )
        record = result.as_dict()
        record.update(
            event_id=event["envelope"]["event_id"],
            since=iso(since),
            evaluated_at=iso(result.evaluated_at_ms),
        )
        self.evaluations.appendleft(record)
        m.AB_P_VALUE.labels(champion, challenger).set(result.p_value)
        m.EVALUATIONS.labels(result.winner).inc()
        log.info(
            "ab_evaluation",
            champion=champion,
            challenger=challenger,
            winner=result.winner,
            p_value=result.p_value,
            samples=(result.champion_samples, result.challenger_samples),
        )

    def view(self) -> dict[str, Any]:
        """The test, the current pair's progress and the verdicts so far (``GET /evaluations``)."""
        s = self.settings
        current: dict[str, Any] | None = None
        pair = self._pair()
        if pair is not None and all(pair):
            champion, challenger = pair
            groups = self.quality.tracker.groups
            g_champ = groups.get((champion, CHAMPION_ARM))
            g_chall = groups.get((challenger, CHALLENGER_ARM))
            since = g_chall.first_prediction_ms if g_chall else None
            n_champ = g_champ.samples.since(since)[0].size if g_champ and since is not None else 0
            n_chall = g_chall.samples.n if g_chall else 0
            current = {
                "champion_version": champion,
                "challenger_version": challenger,
                "since": iso(since),
                "champion_samples": n_champ,
                "challenger_samples": n_chall,
                "min_samples": s.ab_min_samples,
                "last_evaluated_at_samples": self.scheduler.evaluated.get(pair),
            }
        return {
            "test": {
                "metric": "business_cost_per_txn",
                "test_name": "welch_t_test",
                "alpha": s.ab_alpha,
                "min_samples": s.ab_min_samples,
                "min_positives": s.ab_min_positives,
                "reevaluate_factor": s.ab_reevaluate_factor,
            },
            "current_pair": current,
            "evaluations": list(self.evaluations),
        }
