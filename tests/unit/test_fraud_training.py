"""In-memory training (no MLflow): quality, threshold, reference sample, concept drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_model.contract import LABEL_KEY
from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import TransactionGenerator
from fraud_model.metrics import business_cost, cost_optimal_threshold, fds_metrics
from fraud_model.training import PREDICTION_COLUMN, TARGET_COLUMN, TrainingResult, train


@pytest.fixture(scope="module")
def training_rows() -> pd.DataFrame:
    return TransactionGenerator(seed=21).generate_frame(30_000)


@pytest.fixture(scope="module")
def result(training_rows: pd.DataFrame) -> TrainingResult:
    return train(training_rows, seed=5)


def test_validation_metrics_and_threshold(result: TrainingResult, training_rows: pd.DataFrame) -> None:
    assert result.metrics["auc_roc"] > 0.93
    assert result.metrics["auprc"] > 0.6
    assert result.metrics["recall"] > 0.7
    assert 0.0 < result.threshold < 1.0
    assert result.n_train + result.n_validation == len(training_rows)
    assert result.n_validation == pytest.approx(0.25 * len(training_rows), abs=1)
    assert result.params["n_estimators"] == 200 and result.params["tree_method"] == "hist"
    negatives = 1 - result.train_fraud_rate
    assert result.params["scale_pos_weight"] == pytest.approx(negatives / result.train_fraud_rate)


def test_reference_sample(result: TrainingResult) -> None:
    ref = result.reference
    assert list(ref.columns) == [*FEATURE_NAMES, PREDICTION_COLUMN, TARGET_COLUMN]
    assert len(ref) == 5_000
    assert list(result.reference_features().columns) == FEATURE_NAMES
    # The stored probabilities are the model's own scores and the threshold is optimal on them.
    probs = result.predict_proba(ref[FEATURE_NAMES].to_numpy())
    np.testing.assert_allclose(probs, ref[PREDICTION_COLUMN], rtol=1e-6)
    assert ref[TARGET_COLUMN].mean() == pytest.approx(result.metrics["positive_rate"], abs=0.01)


def test_threshold_is_cost_optimal_on_validation(result: TrainingResult, training_rows: pd.DataFrame) -> None:
    m = result.metrics
    # Flagging everything or nothing must both be worse than the chosen threshold.
    positives, n = m["tp"] + m["fn"], m["n_samples"]
    assert m["business_cost"] < positives * 100
    assert m["business_cost"] < n - positives
    ref = result.reference
    y, p = ref[TARGET_COLUMN].to_numpy(), ref[PREDICTION_COLUMN].to_numpy()
    own = cost_optimal_threshold(y, p)
    assert business_cost(y, p, own) <= business_cost(y, p, result.threshold)


def test_training_is_reproducible_and_accepts_dicts(
    training_rows: pd.DataFrame, result: TrainingResult
) -> None:
    records = training_rows.head(8_000).to_dict("records")
    a = train(records, seed=5)
    b = train(training_rows.head(8_000), seed=5)
    x = build_features(records[:200])
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    assert a.threshold == b.threshold


def test_params_override(training_rows: pd.DataFrame) -> None:
    small = train(training_rows.head(6_000), params={"n_estimators": 20, "scale_pos_weight": 3.0}, seed=1)
    assert small.params["n_estimators"] == 20 and small.params["scale_pos_weight"] == 3.0
    assert small.model.get_booster().num_boosted_rounds() == 20


def test_rejects_unusable_data(training_rows: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="is_fraud"):
        train(training_rows.drop(columns=[LABEL_KEY]))
    with pytest.raises(ValueError, match="at least 10"):
        train(training_rows[~training_rows[LABEL_KEY]].head(2_000))


@pytest.mark.parametrize("scenario", ["new_fraud_pattern", "fraud_wave"])
def test_concept_drift_degrades_model_and_retraining_recovers(result: TrainingResult, scenario: str) -> None:
    def auc(model: TrainingResult, rows: pd.DataFrame) -> float:
        scores = model.predict_proba(build_features(rows))
        return fds_metrics(rows[LABEL_KEY], scores, model.threshold)["auc_roc"]

    baseline = TransactionGenerator(seed=31).generate_frame(30_000)
    drifted = TransactionGenerator(seed=31, scenario=scenario).generate_frame(30_000)
    assert auc(result, baseline) > 0.93
    assert auc(result, drifted) < auc(result, baseline) - 0.15
    retrained = train(TransactionGenerator(seed=32, scenario=scenario).generate_frame(30_000), seed=5)
    assert auc(retrained, drifted) > 0.93
