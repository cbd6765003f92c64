"""Synthetic transaction generator: reproducibility, realism, scenarios, delayed labels."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fraud_model.contract import FEEDBACK_FIELDS, LABEL_KEY, TRANSACTION_FIELDS, find_quality_issues
from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import SCENARIOS, DelayedLabels, TransactionGenerator, affected_features

N_ROWS = 50_000


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected``."""
    values = np.unique(expected)
    if len(values) <= 30:  # discrete: one bin per value
        cats = np.union1d(values, np.unique(actual))
        p = np.array([(expected == c).mean() for c in cats])
        q = np.array([(actual == c).mean() for c in cats])
    else:  # continuous: deciles of the expected distribution
        edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
        p = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / len(
            expected
        )
        q = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / len(actual)
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    return float(np.sum((q - p) * np.log(q / p)))


def feature_psi(reference: np.ndarray, current: np.ndarray) -> dict[str, float]:
    return {name: psi(reference[:, i], current[:, i]) for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def baseline_rows() -> pd.DataFrame:
    return TransactionGenerator(seed=101).generate_frame(N_ROWS)


@pytest.fixture(scope="module")
def baseline_features(baseline_rows: pd.DataFrame) -> np.ndarray:
    return build_features(baseline_rows)


def test_same_seed_same_rows_and_stream_continues() -> None:
    a, b = TransactionGenerator(seed=42), TransactionGenerator(seed=42)
    first = a.generate(300)
    assert first == b.generate(300)
    assert a.generate(300) == b.generate(300)
    assert a.generate(10) != first[:10]
    assert TransactionGenerator(seed=43).generate(300) != first
    assert a.generated == 610


def test_records_follow_the_contract_in_every_scenario() -> None:
    for scenario in SCENARIOS:
        rows = TransactionGenerator(seed=7, scenario=scenario).generate(3_000)
        assert all(list(r)[: len(TRANSACTION_FIELDS)] == list(TRANSACTION_FIELDS) for r in rows[:5])
        problems = Counter((i.field, i.kind) for r in rows for i in find_quality_issues(r))
        assert not problems, f"{scenario}: {problems.most_common(5)}"
        assert all(isinstance(r[LABEL_KEY], bool) for r in rows)


def test_transaction_ids_are_unique_uuid4(baseline_rows: pd.DataFrame) -> None:
    ids = baseline_rows["transaction_id"]
    assert ids.is_unique
    assert all(uuid.UUID(i).version == 4 for i in ids.iloc[:1000])


def test_fraud_rate_between_one_and_three_percent(baseline_rows: pd.DataFrame) -> None:
    assert 0.01 <= baseline_rows[LABEL_KEY].mean() <= 0.03
    low = TransactionGenerator(seed=9, fraud_rate=0.01).generate_frame(N_ROWS)[LABEL_KEY].mean()
    assert 0.007 <= low <= 0.013


def test_fraud_label_comes_from_features(baseline_rows: pd.DataFrame) -> None:
    fraud = baseline_rows[baseline_rows[LABEL_KEY]]
    legit = baseline_rows[~baseline_rows[LABEL_KEY]]
    assert fraud["ip_risk_score"].mean() > 2 * legit["ip_risk_score"].mean()
    assert fraud["is_new_device"].mean() > 5 * legit["is_new_device"].mean()
    assert fraud["failed_logins_24h"].mean() > 5 * legit["failed_logins_24h"].mean()
    ratio = baseline_rows["amount"] / baseline_rows["amount_avg_30d"]
    assert ratio[baseline_rows[LABEL_KEY]].median() > 1.5 * ratio[~baseline_rows[LABEL_KEY]].median()
    # Not trivially separable: some frauds look ordinary.
    assert (fraud["ip_risk_score"] < legit["ip_risk_score"].quantile(0.9)).mean() > 0.1


def test_accounts_behave_persistently(baseline_rows: pd.DataFrame) -> None:
    per_account = baseline_rows.groupby("account_id")
    assert per_account["home_country"].nunique().max() == 1
    assert per_account["customer_age"].nunique().max() == 1
    assert per_account["credit_limit"].nunique().max() == 1
    sizes = per_account.size()
    busy = sizes[sizes >= 20].index
    avg = baseline_rows[baseline_rows["account_id"].isin(busy)].groupby("account_id")["amount_avg_30d"]
    within = (avg.std() / avg.mean()).median()
    between = baseline_rows.groupby("account_id")["amount_avg_30d"].mean()
    assert within < 0.2 < between.std() / between.mean()
    assert (baseline_rows["txn_count_1h"] <= baseline_rows["txn_count_24h"]).all()
    # Heavy users have more recent transactions.
    rate = per_account.size().reindex(baseline_rows["account_id"]).to_numpy()
    assert np.corrcoef(rate, baseline_rows["txn_count_24h"])[0, 1] > 0.3


def test_scenario_catalogue() -> None:
    assert set(SCENARIOS) == {
        "baseline",
        "merchant_mix_shift",
        "amount_inflation",
        "new_fraud_pattern",
        "fraud_wave",
        "night_shift",
        "device_shift",
        "gradual",
        "concept",
    }
    assert affected_features("baseline") == []
    for scenario in SCENARIOS:
        assert set(affected_features(scenario)) <= set(FEATURE_NAMES)
    with pytest.raises(ValueError, match="unknown scenario"):
        affected_features("solar_flare")
    with pytest.raises(ValueError):
        TransactionGenerator(seed=1, scenario="solar_flare")


def test_baseline_is_stable_across_seeds(baseline_features: np.ndarray) -> None:
    other = build_features(TransactionGenerator(seed=202).generate_frame(N_ROWS))
    assert max(feature_psi(baseline_features, other).values()) < 0.05


@pytest.mark.parametrize(
    "scenario", ["merchant_mix_shift", "amount_inflation", "fraud_wave", "night_shift", "device_shift"]
)
def test_scenario_shifts_its_features_and_leaves_others(scenario: str, baseline_features: np.ndarray) -> None:
    shifted = build_features(TransactionGenerator(seed=303, scenario=scenario).generate_frame(N_ROWS))
    scores = feature_psi(baseline_features, shifted)
    affected = affected_features(scenario)
    assert affected
    moved = {f: round(scores[f], 3) for f in affected if scores[f] <= 0.1}
    assert not moved, f"{scenario}: affected features barely moved: {moved}"
    assert max(scores[f] for f in affected) > 0.2  # at least one is real drift (> 0.2)
    untouched = {f: round(v, 3) for f, v in scores.items() if f not in affected and v >= 0.05}
    assert not untouched, f"{scenario}: unexpected drift in {untouched}"


def test_amount_inflation_scales_amounts(baseline_rows: pd.DataFrame) -> None:
    inflated = TransactionGenerator(seed=303, scenario="amount_inflation").generate_frame(N_ROWS)
    for column in ("amount", "amount_avg_30d", "amount_sum_24h"):
        ratio = inflated[column].median() / baseline_rows[column].median()
        assert 1.6 < ratio < 2.0, (column, ratio)


def test_new_fraud_pattern_is_concept_drift(
    baseline_rows: pd.DataFrame, baseline_features: np.ndarray
) -> None:
    drifted = TransactionGenerator(seed=303, scenario="new_fraud_pattern").generate_frame(N_ROWS)
    scores = feature_psi(baseline_features, build_features(drifted))
    assert affected_features("new_fraud_pattern") == []
    assert max(scores.values()) < 0.1  # marginals stay (almost) put ...
    base_fraud = baseline_rows[baseline_rows[LABEL_KEY]]
    new_fraud = drifted[drifted[LABEL_KEY]]
    # ... while what fraud looks like changes completely.
    assert base_fraud["card_present"].mean() < 0.3 < 0.5 < new_fraud["card_present"].mean()
    assert new_fraud["ip_risk_score"].mean() < 0.5 * base_fraud["ip_risk_score"].mean()
    assert new_fraud["account_age_days"].median() > 730
    assert 0.01 <= drifted[LABEL_KEY].mean() <= 0.03


def test_stream_follows_scenario_switch() -> None:
    gen = TransactionGenerator(seed=11)
    stream = gen.stream(batch_size=500)
    before = list(itertools.islice(stream, 5_000))
    gen.scenario = "night_shift"
    list(itertools.islice(stream, 500))  # drain the batch drawn before the switch
    after = list(itertools.islice(stream, 5_000))
    night = lambda rows: np.mean([r["hour_of_day"] <= 5 for r in rows])  # noqa: E731
    assert night(after) > night(before) + 0.1
    assert len({r["transaction_id"] for r in before + after}) == 10_000
    with pytest.raises(ValueError):
        gen.scenario = "nope"


def test_delayed_labels_arrive_in_order_after_delay() -> None:
    labels = DelayedLabels(seed=1)
    txns = TransactionGenerator(seed=2).generate(3)
    assert labels.add(txns[0], now=100.0, delay_s=30.0)
    assert labels.add(txns[1], now=101.0, delay_s=5.0)
    assert labels.add(txns[2], now=102.0, delay_s=(10.0, 20.0))
    assert len(labels) == 3 and labels.next_due() == 106.0
    assert labels.due(105.9) == []
    first = labels.due(106.0)
    assert [d["transaction_id"] for d in first] == [txns[1]["transaction_id"]]
    assert set(first[0]) == set(FEEDBACK_FIELDS)
    assert first[0]["is_fraud"] == txns[1][LABEL_KEY]
    assert first[0]["label_source"] == ("chargeback" if txns[1][LABEL_KEY] else "no_dispute")
    rest = labels.due(1_000.0)
    assert [d["transaction_id"] for d in rest] == [txns[2]["transaction_id"], txns[0]["transaction_id"]]
    assert len(labels) == 0 and labels.next_due() is None


def test_delayed_labels_drop_rate() -> None:
    labels = DelayedLabels(seed=3)
    txns = TransactionGenerator(seed=4).generate(4_000)
    kept = sum(labels.add(t, now=0.0, delay_s=1.0, drop_rate=0.25) for t in txns)
    assert 0.7 < kept / len(txns) < 0.8
    assert labels.dropped == len(txns) - kept == len(txns) - len(labels.due(1.0))
    none = DelayedLabels(seed=3)
    assert not any(none.add(t, now=0.0, delay_s=0.0, drop_rate=1.0) for t in txns[:50])
    assert none.due(10.0) == []
    with pytest.raises(ValueError):
        none.add(txns[0], now=0.0, delay_s=1.0, drop_rate=1.5)


def test_gradual_drift_ramps_from_the_baseline_to_fraud_wave() -> None:
    generator = TransactionGenerator(seed=5, gradual_rows=10_000)
    baseline = generator.generate_frame(5_000)
    generator.scenario = "gradual"
    early = generator.generate_frame(2_000)
    generator.generate(8_000)
    late = generator.generate_frame(5_000)
    wave = TransactionGenerator(seed=6, scenario="fraud_wave").generate_frame(5_000)
    assert generator.drifted_share == 1.0

    def grocery(frame: pd.DataFrame) -> float:
        return float((frame["merchant_category"] == "grocery").mean())

    # The baseline's grocery share shrinks toward fraud_wave's as the ramp advances.
    assert grocery(baseline) > grocery(early) > grocery(late)
    assert abs(grocery(late) - grocery(wave)) < 0.02


def test_concept_drift_changes_labels_but_not_features() -> None:
    baseline = TransactionGenerator(seed=9).generate_frame(40_000)
    concept = TransactionGenerator(seed=9, scenario="concept").generate_frame(40_000)
    # Same seed, same draws: the features are identical row for row; only the labels differ.
    features = [c for c in baseline.columns if c not in ("is_fraud", "transaction_id")]
    pd.testing.assert_frame_equal(baseline[features], concept[features])
    assert (baseline["is_fraud"] != concept["is_fraud"]).mean() > 0.01
    # The fraud rate barely moves (no target drift), but frauds now sit in a new segment.
    assert abs(concept["is_fraud"].mean() - baseline["is_fraud"].mean()) < 0.006
    segment = (concept["merchant_category"] == "pharmacy") & (concept["hour_of_day"] >= 18)
    assert concept.loc[segment, "is_fraud"].mean() > 0.6 > baseline.loc[segment, "is_fraud"].mean()
