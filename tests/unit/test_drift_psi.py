"""PSI engine: binning, PSI against an independent reference implementation, incremental windows."""

from __future__ import annotations

import numpy as np
import pytest

from drift_detector.psi import fit_binning, fit_feature_bins, psi, psi_from_counts
from drift_detector.windows import WindowManager
from fraud_model.features import FEATURE_NAMES, build_features
from fraud_model.generator import TransactionGenerator, affected_features


def reference_psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Textbook PSI, written independently: per-category shares or deciles of ``expected``."""
    values = np.unique(expected)
    if len(values) <= 30:
        p = np.array([np.mean(expected == v) for v in values])
        q = np.array([np.mean(actual == v) for v in values])
        # values never seen in the reference share one "unseen" bin
        p = np.append(p, 0.0)
        q = np.append(q, np.mean(~np.isin(actual, values)))
    else:
        edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
        full = np.concatenate(([-np.inf], edges, [np.inf]))
        p = np.array(
            [np.mean((expected >= lo) & (expected < hi)) for lo, hi in zip(full[:-1], full[1:], strict=True)]
        )
        q = np.array(
            [np.mean((actual >= lo) & (actual < hi)) for lo, hi in zip(full[:-1], full[1:], strict=True)]
        )
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_continuous_psi_matches_reference(rng: np.random.Generator) -> None:
    ref = rng.normal(0, 1, 5000).astype(np.float32)
    for shift in (0.0, 0.1, 0.5, 1.5):
        cur = rng.normal(shift, 1, 3000).astype(np.float32)
        assert psi(ref, cur) == pytest.approx(reference_psi(ref, cur), rel=1e-9, abs=1e-12)


def test_discrete_psi_matches_reference_including_unseen_values(rng: np.random.Generator) -> None:
    ref = rng.choice([0.0, 1.0, 2.0, 3.0], size=4000, p=[0.4, 0.3, 0.2, 0.1]).astype(np.float32)
    same = rng.choice([0.0, 1.0, 2.0, 3.0], size=4000, p=[0.4, 0.3, 0.2, 0.1]).astype(np.float32)
    moved = rng.choice([0.0, 1.0, 2.0, 3.0, 9.0], size=4000, p=[0.1, 0.2, 0.3, 0.3, 0.1]).astype(np.float32)
    for cur in (same, moved):
        assert psi(ref, cur) == pytest.approx(reference_psi(ref, cur), rel=1e-9)
    assert psi(ref, same) < 0.01
    assert psi(ref, moved) > 0.25


def test_missing_values_have_their_own_bin(rng: np.random.Generator) -> None:
    ref = rng.normal(size=2000).astype(np.float32)
    bins = fit_feature_bins("x", ref)
    assert bins.kind == "continuous" and bins.reference_share[bins.missing_bin] == 0
    cur = ref.copy()
    cur[:600] = np.nan  # 30 % of the feature stops arriving
    assert psi(ref, cur) > 0.25
    assert bins.assign(np.array([np.nan]))[0] == bins.missing_bin
    assert bins.label(bins.missing_bin) == "missing"


def test_point_masses_collapse_duplicate_edges() -> None:
    ref = np.concatenate([np.zeros(800), np.linspace(1, 100, 200)]).astype(np.float32)
    bins = fit_feature_bins("x", ref)
    assert bins.kind == "continuous"
    assert len(np.unique(bins.points)) == len(bins.points)
    assert bins.reference_share.sum() == pytest.approx(1.0)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_psi_from_counts_equals_per_feature_psi(rng: np.random.Generator) -> None:
    ref = {
        "a": rng.normal(size=3000),
        "b": rng.integers(0, 5, 3000).astype(float),
        "c": rng.exponential(size=3000),
    }
    binning = fit_binning(ref, ["a", "b", "c"])
    cur = np.column_stack([rng.normal(0.3, 1, 1000), rng.integers(0, 6, 1000), rng.exponential(2, 1000)])
    values = psi_from_counts(binning, binning.count_matrix(binning.assign(cur)), len(cur))
    for j, name in enumerate(["a", "b", "c"]):
        assert values[j] == pytest.approx(psi(np.asarray(ref[name]), cur[:, j]), rel=1e-9)


def _windows(manager: WindowManager, data: np.ndarray, chunks: list[int]) -> list[tuple[int, list[float]]]:
    out, offset = [], 0
    for size in chunks:
        part = data[offset : offset + size]
        times = np.arange(offset, offset + len(part), dtype=np.int64)
        out += [(r.rows_seen, list(r.feature_psi.values())) for r in manager.feed(part, times)]
        offset += size
    return out


def test_incremental_windows_equal_recomputation_whatever_the_batching(rng: np.random.Generator) -> None:
    ref = {"a": rng.normal(size=2000), "b": rng.integers(0, 4, 2000).astype(float)}
    binning = fit_binning(ref, ["a", "b"])
    n = 5000
    drift = np.linspace(0, 1.5, n)  # a slowly moving mean
    data = np.column_stack([rng.normal(drift, 1), rng.integers(0, 4, n)]).astype(np.float32)
    results = []
    for chunks in ([n], [1] * 300 + [n - 300], [437] * 12, [2500, 2500]):
        manager = WindowManager(["a", "b"], capacity=800, size=800, step=300, chunk=256)
        manager.set_binning(binning)
        results.append(_windows(manager, data, chunks))
    assert all(r == results[0] for r in results[1:])
    ends = [end for end, _ in results[0]]
    assert ends == list(range(800, n + 1, 300))
    for end, values in results[0]:
        window = data[end - 800 : end]
        expected = psi_from_counts(binning, binning.count_matrix(binning.assign(window)), 800)
        np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_window_bounds_and_rebinning_keep_the_buffer(rng: np.random.Generator) -> None:
    manager = WindowManager(["a"], capacity=100, size=100, step=50)
    data = rng.normal(size=(130, 1)).astype(np.float32)
    # No reference yet: rows are buffered, nothing is evaluated.
    assert list(manager.feed(data, np.arange(130, dtype=np.int64) * 10)) == []
    manager.set_binning(fit_binning({"a": rng.normal(size=500)}, ["a"]))
    result = manager.evaluate()
    assert result is not None and result.size == 100
    assert (result.start_ms, result.end_ms) == (300, 1290)
    np.testing.assert_array_equal(manager.window_values(), data[30:])


def test_resize_for_monitoring_evaluates_sooner_with_a_smaller_window(rng: np.random.Generator) -> None:
    binning = fit_binning({"a": rng.normal(size=500)}, ["a"])
    manager = WindowManager(["a"], capacity=1000, size=1000, step=500)
    manager.set_binning(binning)
    data = rng.normal(size=(1200, 1)).astype(np.float32)
    assert [r.rows_seen for r in manager.feed(data, np.arange(1200, dtype=np.int64))] == [1000]
    manager.resize(200, 50)
    more = rng.normal(size=(120, 1)).astype(np.float32)
    seen = [(r.rows_seen, r.size) for r in manager.feed(more, np.arange(120, dtype=np.int64))]
    assert seen and all(size == 200 for _, size in seen)
    assert seen[0][0] <= 1200 + 50
    window = np.concatenate([data, more])[-200:]
    expected = psi_from_counts(binning, binning.count_matrix(binning.assign(window)), 200)
    result = manager.evaluate()
    assert result is not None
    np.testing.assert_allclose(list(result.feature_psi.values()), expected, rtol=1e-12)


@pytest.fixture(scope="module")
def reference_features() -> np.ndarray:
    return build_features(TransactionGenerator(seed=11).generate_frame(5000))


def test_generator_baseline_is_stable_and_scenarios_drift(reference_features: np.ndarray) -> None:
    binning = fit_binning({n: reference_features[:, i] for i, n in enumerate(FEATURE_NAMES)}, FEATURE_NAMES)

    def window_psi(scenario: str) -> dict[str, float]:
        x = build_features(TransactionGenerator(seed=29, scenario=scenario).generate_frame(5000))
        values = psi_from_counts(binning, binning.count_matrix(binning.assign(x)), len(x))
        return dict(zip(FEATURE_NAMES, values.tolist(), strict=True))

    assert max(window_psi("baseline").values()) < 0.1
    for scenario in ("night_shift", "amount_inflation"):
        values = window_psi(scenario)
        shifted = affected_features(scenario)
        assert max(values[f] for f in shifted) > 0.25, scenario
        assert all(v < 0.1 for f, v in values.items() if f not in shifted), scenario
