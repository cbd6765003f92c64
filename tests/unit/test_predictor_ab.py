"""Deterministic A/B assignment by transaction id."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid

import pytest

from predictor.ab import ABRouter, bucket


def test_same_id_same_arm_across_routers() -> None:
    ids = [str(uuid.uuid4()) for _ in range(500)]
    assert ABRouter(0.1).arms(ids) == ABRouter(0.1).arms(ids)
    assert all(0.0 <= bucket(tid) < 1.0 for tid in ids)


def test_assignment_does_not_depend_on_the_process_hash_seed() -> None:
    ids = [f"txn-{i}" for i in range(200)]
    code = (
        "import sys; from predictor.ab import ABRouter; "
        "print(''.join(a[1] for a in ABRouter(0.1).arms(sys.argv[1:])))"
    )
    outputs = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.add(
            subprocess.run(
                [sys.executable, "-c", code, *ids], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(outputs) == 1
    assert outputs.pop().strip() == "".join(a[1] for a in ABRouter(0.1).arms(ids))


def test_split_is_within_binomial_bounds() -> None:
    n, share = 20_000, 0.1
    challenger = sum(arm == "challenger" for arm in ABRouter(share).arms(f"id-{i}" for i in range(n)))
    assert abs(challenger - n * share) <= 4 * math.sqrt(n * share * (1 - share))


def test_everything_to_the_champion_without_a_challenger() -> None:
    ids = [f"x{i}" for i in range(1000)]
    assert set(ABRouter(0.5).arms(ids, challenger_available=False)) == {"champion"}
    assert set(ABRouter(0.0).arms(ids)) == {"champion"}
    assert set(ABRouter(1.0).arms(ids)) == {"challenger"}


def test_raising_the_share_only_moves_champion_ids_to_the_challenger() -> None:
    ids = [f"y{i}" for i in range(5000)]
    small = {tid for tid, arm in zip(ids, ABRouter(0.1).arms(ids), strict=True) if arm == "challenger"}
    large = {tid for tid, arm in zip(ids, ABRouter(0.3).arms(ids), strict=True) if arm == "challenger"}
    assert small < large


def test_share_must_be_a_fraction() -> None:
    with pytest.raises(ValueError):
        ABRouter(1.5)
