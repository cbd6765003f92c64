"""Held-out split of generated interactions, and the ranking metrics to score it.

The split is the usual "leave the last ones out" protocol for next-item recommendation:
for each user, the last ``per_user`` positive interactions with items the user had not
touched before are held out; the training part is everything the user did before the
first held-out event. A recommender trained on the training part is asked for a top-k
list per user and scored by whether (and how high) the held-out items appear in it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from recsys_data.generator import SimEvent


@dataclass(frozen=True)
class HoldoutSplit:
    """Training events (time-ordered) and the held-out items per user."""

    train: list[SimEvent]
    test: dict[str, list[str]]
    """user_id -> held-out item ids (most recent last)."""


def holdout_split(events: Iterable[SimEvent], *, per_user: int = 1, min_history: int = 3) -> HoldoutSplit:
    """Split ``events`` per user: history for training, the last new positive items for testing.

    Only items whose first appearance comes after the user's first ``min_history`` events
    are held out (there must be something to personalise from); users without such an
    item keep all their events in the training part and are not tested.
    """
    by_user: dict[str, list[SimEvent]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)
    cutoff: dict[str, int] = {}
    test: dict[str, list[str]] = {}
    for user_id, user_events in by_user.items():
        user_events.sort(key=lambda e: e.timestamp_ms)
        first_seen: dict[str, int] = {}
        for position, event in enumerate(user_events):
            first_seen.setdefault(event.item_id, position)
        held: list[tuple[int, str]] = []
        for position in range(len(user_events) - 1, -1, -1):
            event = user_events[position]
            if len(held) >= per_user:
                break
            # The item must be new to the user after at least ``min_history`` events: training
            # stops before its first appearance, so the recommender never saw the user touch it.
            first = first_seen[event.item_id]
            if event.is_positive and first >= min_history and all(item != event.item_id for _, item in held):
                held.append((first, event.item_id))
        if not held:
            continue
        start = min(pos for pos, _ in held)
        cutoff[user_id] = user_events[start].timestamp_ms
        test[user_id] = [item for _, item in sorted(held)]
    train = [
        event
        for user_events in by_user.values()
        for event in user_events
        if event.user_id not in cutoff or event.timestamp_ms < cutoff[event.user_id]
    ]
    train.sort(key=lambda e: e.timestamp_ms)
    return HoldoutSplit(train=train, test=test)


def hit_rate_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 when any relevant item is among the first ``k`` recommended, else 0.0."""
    wanted = set(relevant)
    return 1.0 if any(item in wanted for item in recommended[:k]) else 0.0


def ndcg_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Normalised discounted cumulative gain with binary relevance."""
    wanted = set(relevant)
    if not wanted:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(recommended[:k]) if item in wanted)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(wanted), k)))
    return dcg / ideal


def evaluate(
    recommendations: Mapping[str, Sequence[str]], test: Mapping[str, Sequence[str]], k: int
) -> dict[str, float]:
    """Mean hit-rate@k and NDCG@k over the users of ``test``."""
    if not test:
        return {"hit_rate": 0.0, "ndcg": 0.0, "users": 0.0}
    hits = [hit_rate_at_k(recommendations.get(user, []), items, k) for user, items in test.items()]
    gains = [ndcg_at_k(recommendations.get(user, []), items, k) for user, items in test.items()]
    return {"hit_rate": sum(hits) / len(hits), "ndcg": sum(gains) / len(gains), "users": float(len(test))}
