"""Offline quality check of the real-time recommender against the popularity baseline.

    python -m recommender.quality [--users 600] [--sessions 9000] [--k 10]

Simulated users (``recsys_data.InteractionGenerator``) produce organic sessions; the
last new positive interaction of each user is held out. The training part is replayed,
in time order, through the recommender's own logic (``recommender.engine``), exactly as
the stream agents apply it. Then each tested user's list is taken the way the service
serves it (the stored top-k, or the cold-start fallback) and scored with hit-rate@k and
NDCG@k against the held-out items. Rows:

- ``realtime (served)``  what ``GET /recommendations/{user}`` answers (A/B arms as configured)
- ``hybrid`` / ``content``  each strategy recomputed at the end of the training part
- ``popular fallback``  the service's cold-start list
- ``most-popular``  the baseline: items ranked by training interactions, seen items excluded

With ``--online-sessions N`` it also runs N more sessions in which users are shown the
served lists and click on them, and prints the per-strategy CTR (the A/B view).

Exits 1 when the served recommendations do not beat the most-popular baseline on both
metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from recommender.engine import (
    STRATEGY_CONTENT,
    STRATEGY_HYBRID,
    Click,
    EngineConfig,
    Interaction,
    Recommender,
)
from recsys_data import InteractionGenerator, SimEvent, evaluate, holdout_split, load_catalogue


def apply(engine: Recommender, event: SimEvent) -> None:
    """Feed one generated event to the engine, as the stream agent does."""
    if event.kind == "click":
        engine.on_click(
            Click(
                event.user_id,
                event.item_id,
                event.recommendation_id or "",
                event.strategy or "",
                int(event.position or 0),
                event.timestamp_ms,
            ),
            shard=0,
        )
        return
    engine.on_interaction(
        Interaction(
            event.user_id,
            event.item_id,
            event.interaction_type or "view",
            event.timestamp_ms,
            event.rating,
            event.session_id,
            dict(event.context),
        ),
        shard=0,
    )


def most_popular(train: Sequence[SimEvent], users: Sequence[str], k: int) -> dict[str, list[str]]:
    """The baseline: most interacted items of the training part, minus what the user saw."""
    counts = Counter(event.item_id for event in train)
    ranked = [item for item, _ in counts.most_common()]
    seen: dict[str, set[str]] = defaultdict(set)
    for event in train:
        seen[event.user_id].add(event.item_id)
    out: dict[str, list[str]] = {}
    for user in users:
        picks: list[str] = []
        for item in ranked:
            if item not in seen[user]:
                picks.append(item)
                if len(picks) == k:
                    break
        out[user] = picks
    return out


def render(rows: Mapping[str, Mapping[str, float]], k: int) -> str:
    width = max(len(name) for name in rows) + 2
    lines = [f"{'recommender':<{width}} {'hit_rate@' + str(k):>12} {'ndcg@' + str(k):>10} {'users':>7}"]
    lines.append("-" * len(lines[0]))
    for name, metrics in rows.items():
        hit_rate, ndcg, users = metrics["hit_rate"], metrics["ndcg"], int(metrics["users"])
        lines.append(f"{name:<{width}} {hit_rate:>12.4f} {ndcg:>10.4f} {users:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recommender.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--sessions", type=int, default=9000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--online-sessions", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    catalogue = load_catalogue(args.items)
    generator = InteractionGenerator(catalogue, n_users=args.users, seed=args.seed)
    events = generator.events(args.sessions)
    split = holdout_split(events)
    engine = Recommender(catalogue, config=EngineConfig(shards=1))
    for event in split.train:
        apply(engine, event)
    users = sorted(split.test)
    k = args.k

    served = {user: engine.serve(user, k)[0].item_ids for user in users}
    rows: dict[str, dict[str, float]] = {
        "realtime (served)": evaluate(served, split.test, k),
        "hybrid": evaluate(
            {u: engine.recommend(u, k, strategy=STRATEGY_HYBRID).item_ids for u in users}, split.test, k
        ),
        "content": evaluate(
            {u: engine.recommend(u, k, strategy=STRATEGY_CONTENT).item_ids for u in users}, split.test, k
        ),
        "popular fallback": evaluate({u: engine.fallback(u, k).item_ids for u in users}, split.test, k),
        "most-popular": evaluate(most_popular(split.train, users, k), split.test, k),
    }
    print(
        f"catalogue {len(catalogue)} items, {args.users} users, {len(events)} events "
        f"({len(split.train)} training), {len(users)} users tested, k={k}\n"
    )
    print(render(rows, k))
    realtime, baseline = rows["realtime (served)"], rows["most-popular"]
    lift_hr = realtime["hit_rate"] / baseline["hit_rate"] if baseline["hit_rate"] else float("inf")
    lift_ndcg = realtime["ndcg"] / baseline["ndcg"] if baseline["ndcg"] else float("inf")
    print(f"\nlift over most-popular: hit_rate x{lift_hr:.2f}, ndcg x{lift_ndcg:.2f}")

    if args.online_sessions:
        online(engine, generator, args.online_sessions, k)
    print(f"\n({time.perf_counter() - started:.1f}s)")
    if realtime["hit_rate"] > baseline["hit_rate"] and realtime["ndcg"] > baseline["ndcg"]:
        return 0
    print("FAIL: the real-time recommender does not beat the popularity baseline", file=sys.stderr)
    return 1


def online(engine: Recommender, generator: InteractionGenerator, sessions: int, k: int) -> None:
    """Users see their served lists at the start of each session; print CTR per strategy."""

    def recommend(user_id: str, size: int, _context: Mapping[str, str]) -> tuple[str, str, list[str]]:
        rec, _source = engine.serve(user_id, size)
        engine.on_served(user_id, rec.strategy, rec.item_ids, shard=0)
        return rec.recommendation_id, rec.strategy, rec.item_ids

    before = engine.strategy_stats()
    for event in generator.generate(sessions, recommend=recommend, shown=k):
        apply(engine, event)
    after = engine.strategy_stats()
    print(f"\nonline A/B over {sessions} sessions (lists served at session start):")
    print(f"{'strategy':<10} {'impressions':>12} {'clicks':>8} {'ctr':>8}")
    for name, stats in after.items():
        impressions = stats["impressions"] - before.get(name, {}).get("impressions", 0)
        clicks = stats["clicks"] - before.get(name, {}).get("clicks", 0)
        if impressions:
            print(f"{name:<10} {int(impressions):>12} {int(clicks):>8} {clicks / impressions:>8.4f}")


if __name__ == "__main__":
    sys.exit(main())
