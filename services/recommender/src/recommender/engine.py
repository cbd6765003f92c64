"""The real-time recommender's logic, over plain mappings.

Everything here is synchronous and free of Kafka and Faust: the stream agents call it
with Faust tables, the unit tests and the offline quality check with dicts. The state
is a set of tables (:class:`StateTables`):

per user (keyed by ``user_id``; the stream routes each user to one partition)
    ``activity``  last 100 interactions, newest last
    ``profiles``  genre weights in [0, 1] plus counters
    ``boosts``    items pushed up for this user (similar items of a click, items bought
                  by similar users), decaying with every refresh
    ``topk``      the current top-k list

aggregates (keyed ``"<shard>|<key>"``, one shard per partition)
    ``item_stats``      weighted interactions, impressions and clicks per item
    ``cooccurrence``    per item, the items consumed near it by the same users
    ``strategy_stats``  impressions, clicks and lists per recommendation strategy
    ``segments``        per dominant genre, its recently active users

Aggregates are written under the shard (partition) of the event being processed and
read by summing the shards. A key is therefore only ever written through one changelog
partition, so rebuilding the tables from the changelog cannot interleave two
partitions' histories of the same key. With several instances, each one sees the
aggregates of its own partitions: a sample of the whole traffic (users are spread by
hash), which is what popularity and co-occurrence estimate anyway.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys_data import Catalogue

# Profile weights per interaction (seed: view 0.1, click 0.3, like 0.7, purchase 1.0,
# high_rating 1.2). add_to_cart is a positive interaction the seed gives no weight; it
# sits between like and purchase. A rating below 4 teaches nothing about the genres,
# a thumbs-down counts against them.
INTERACTION_WEIGHTS: dict[str, float] = {
    "view": 0.1,
    "click": 0.3,
    "like": 0.7,
    "add_to_cart": 0.5,
    "purchase": 1.0,
    "high_rating": 1.2,
    "rating": 0.0,
    "dislike": -0.3,
    "comment": 0.0,
    "recommendation_click": 0.0,
}
DEFAULT_WEIGHT = 0.1
"""Weight of an interaction type the table does not know (the seed's default)."""
POSITIVE_TYPES = frozenset({"like", "click", "purchase", "add_to_cart", "high_rating"})
"""Interactions that refresh the user's top-k at once and push it."""
SIMILAR_USER_TYPES = frozenset({"purchase", "high_rating"})
"""Interactions whose item is boosted for users with similar tastes."""
HIGH_RATING = 4.0

STRATEGY_HYBRID = "hybrid"
STRATEGY_CONTENT = "content"
STRATEGY_POPULAR = "popular"

TRIGGER_INTERACTION = "interaction"
TRIGGER_CLICK = "click"
TRIGGER_SIMILAR_USER = "similar_user"
TRIGGER_COLD_START = "cold_start"


def shard_key(shard: int, key: str) -> str:
    return f"{shard}|{key}"


def split_shard_key(key: str) -> tuple[int, str]:
    shard, _, rest = key.partition("|")
    return int(shard), rest


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EngineConfig:
    """Tunables of the recommender logic (defaults follow the seed where it names one)."""

    learning_rate: float = 0.1
    """Profile step per unit of interaction weight (seed: ``weight * 0.1``), capped at 1.0."""
    activity_size: int = 100
    topk_size: int = 20
    push_size: int = 10
    recent_items: int = 10
    """Most recent distinct items whose neighbours feed the co-occurrence score."""
    cooccurrence_window: int = 5
    """A new interaction is paired with this many of the user's previous items."""
    cooccurrence_neighbours: int = 50
    similar_users: int = 20
    similar_user_threshold: float = 0.5
    """Minimum cosine similarity of genre profiles (seed: 0.7 on its own profile scale)."""
    similar_user_boost: float = 0.3
    click_boost: float = 0.5
    similar_items: int = 10
    boost_decay: float = 0.85
    boost_max_items: int = 100
    segment_size: int = 200
    segment_refresh_ms: int = 300_000
    applied_sources: int = 64
    """Source partitions whose last applied offset a profile remembers (oldest dropped first)."""
    shards: int = 3
    arms: tuple[tuple[str, float], ...] = ((STRATEGY_HYBRID, 0.9), (STRATEGY_CONTENT, 0.1))
    """A/B split of users over strategies, deterministic by user id."""
    # Score mix of the hybrid strategy (content, co-occurrence, popularity, click-through).
    w_content: float = 0.35
    w_cooccurrence: float = 0.45
    w_popularity: float = 0.15
    w_ctr: float = 0.05


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Origin:
    """The source record a command was made from: its topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        """The source partition, as the key of a profile's ``applied`` offsets."""
        return f"{self.topic}|{self.partition}"


@dataclass(frozen=True)
class Interaction:
    """An interaction (or feedback) of a user with an item, normalised."""

    user_id: str
    item_id: str
    interaction_type: str
    timestamp_ms: int
    rating: float | None = None
    session_id: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    origin: Origin | None = None
    """Where it was read from; None for interactions that need no replay protection."""

    @property
    def kind(self) -> str:
        """The weight class: a rating of 4 or more is a ``high_rating``."""
        if self.interaction_type == "rating":
            return "high_rating" if self.rating is not None and self.rating >= HIGH_RATING else "rating"
        return self.interaction_type

    @property
    def weight(self) -> float:
        return INTERACTION_WEIGHTS.get(self.kind, DEFAULT_WEIGHT)


@dataclass(frozen=True)
class Click:
    """A click on an item of a recommendation list."""

    user_id: str
    item_id: str
    recommendation_id: str
    strategy: str
    position: int
    timestamp_ms: int
    origin: Origin | None = None


@dataclass
class RecList:
    """A ranked recommendation list."""

    user_id: str
    recommendation_id: str
    strategy: str
    trigger: str
    items: list[tuple[str, float]]
    generated_at_ms: int

    @property
    def item_ids(self) -> list[str]:
        return [item_id for item_id, _ in self.items]

    def to_state(self) -> dict[str, Any]:
        return {
            "recommendation_id": self.recommendation_id,
            "strategy": self.strategy,
            "trigger": self.trigger,
            "items": [[item_id, round(score, 6)] for item_id, score in self.items],
            "generated_at": self.generated_at_ms,
        }

    @classmethod
    def from_state(cls, user_id: str, state: Mapping[str, Any]) -> RecList:
        return cls(
            user_id=user_id,
            recommendation_id=str(state["recommendation_id"]),
            strategy=str(state["strategy"]),
            trigger=str(state["trigger"]),
            items=[(str(item_id), float(score)) for item_id, score in state["items"]],
            generated_at_ms=int(state["generated_at"]),
        )


@dataclass
class Outcome:
    """What handling one command changed, for the stream to publish."""

    updated: RecList | None = None
    """A new top-k to publish on ``recommendations.updated``."""
    push: bool = False
    """Also push it to the user (``push.recommendations``)."""
    similar_users: list[str] = field(default_factory=list)
    """Users to boost ``boosted_items`` for (each one a command on the user's partition)."""
    boosted_items: list[str] = field(default_factory=list)


@dataclass
class StateTables:
    """The recommender's state; plain dicts here, Faust tables in the service."""

    activity: MutableMapping[str, Any] = field(default_factory=dict)
    profiles: MutableMapping[str, Any] = field(default_factory=dict)
    boosts: MutableMapping[str, Any] = field(default_factory=dict)
    topk: MutableMapping[str, Any] = field(default_factory=dict)
    item_stats: MutableMapping[str, Any] = field(default_factory=dict)
    cooccurrence: MutableMapping[str, Any] = field(default_factory=dict)
    strategy_stats: MutableMapping[str, Any] = field(default_factory=dict)
    segments: MutableMapping[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.named().items()}

    def named(self) -> dict[str, MutableMapping[str, Any]]:
        return {
            "activity": self.activity,
            "profiles": self.profiles,
            "boosts": self.boosts,
            "topk": self.topk,
            "item_stats": self.item_stats,
            "cooccurrence": self.cooccurrence,
            "strategy_stats": self.strategy_stats,
            "segments": self.segments,
        }


class ItemCounters:
    """Dense per-item sums of ``item_stats`` over the shards, for vectorised scoring.

    A cache derived from the table: updated with every write the engine makes and
    rebuilt from the table after a recovery.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        n = len(catalogue)
        self.weight = np.zeros(n)
        self.impressions = np.zeros(n)
        self.clicks = np.zeros(n)

    def add(self, item_id: str, *, weight: float = 0.0, impressions: int = 0, clicks: int = 0) -> None:
        index = self.catalogue.index_of(item_id)
        if index is None:
            return
        self.weight[index] += weight
        self.impressions[index] += impressions
        self.clicks[index] += clicks

    def rebuild(self, item_stats: Mapping[str, Any]) -> None:
        self.weight[:] = 0.0
        self.impressions[:] = 0.0
        self.clicks[:] = 0.0
        for key, value in list(item_stats.items()):
            _shard, item_id = split_shard_key(key)
            self.add(
                item_id,
                weight=float(value.get("w", 0.0)),
                impressions=int(value.get("imp", 0)),
                clicks=int(value.get("clk", 0)),
            )


# --------------------------------------------------------------------------- the engine


class Recommender:
    """Real-time recommendations over :class:`StateTables` and the item catalogue."""

    def __init__(
        self,
        catalogue: Catalogue,
        tables: StateTables | None = None,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.catalogue = catalogue
        self.tables = tables or StateTables()
        self.config = config or EngineConfig()
        self.clock = clock
        self.new_id = new_id
        # Empty until :meth:`reload`: Faust tables must not be touched before their app runs
        # (reading one binds it to whatever event loop is current).
        self.counters = ItemCounters(catalogue)
        self._genre_norms = np.sqrt(catalogue.genre_matrix.sum(axis=1))
        # The catalogue's Zipf popularity is very steep; its square root keeps the order
        # while letting the live signal weigh in.
        self._prior = np.sqrt(catalogue.popularity)
        self._genre_pos = {genre: i for i, genre in enumerate(catalogue.genres)}
        arms = [(name, share) for name, share in self.config.arms if share > 0]
        if not arms:
            raise ValueError("at least one A/B arm needs a positive share")
        total = sum(share for _, share in arms)
        cumulative = 0.0
        self._arm_bounds: list[tuple[float, str]] = []
        for name, share in arms:
            cumulative += share / total
            self._arm_bounds.append((cumulative, name))

    def reload(self) -> None:
        """Rebuild the caches derived from the tables (after they were restored)."""
        self.counters.rebuild(self.tables.item_stats)

    # ------------------------------------------------------------------ A/B

    @property
    def strategies(self) -> list[str]:
        return [name for _, name in self._arm_bounds]

    def arm_for(self, user_id: str) -> str:
        """The user's A/B arm: stable for a user, shares as configured."""
        digest = hashlib.sha256(user_id.encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        for bound, name in self._arm_bounds:
            if point < bound:
                return name
        return self._arm_bounds[-1][1]

    # ------------------------------------------------------------------ commands

    def is_applied(self, user_id: str, origin: Origin | None) -> bool:
        """Whether the record at ``origin`` was already applied to ``user_id``'s state.

        A user's commands arrive in one commands partition, in order per source partition,
        so anything at or below the last applied offset of its source is a replay (a
        re-forward by stage 1 or a re-read by stage 2 after a crash).
        """
        if origin is None:
            return False
        applied = (self.tables.profiles.get(user_id) or {}).get("applied") or {}
        last = applied.get(origin.source)
        return last is not None and origin.offset <= int(last)

    def on_interaction(self, event: Interaction, shard: int) -> Outcome:
        """Record an interaction; refresh (and push) the top-k when it is positive.

        The caller skips replays (:meth:`is_applied`); the profile write records the origin.
        """
        kind = event.kind
        weight = event.weight
        item = self.catalogue.get(event.item_id)
        previous = self._recent_items(event.user_id, self.config.cooccurrence_window, exclude=event.item_id)
        self._append_activity(
            event.user_id,
            {
                "ts": event.timestamp_ms,
                "type": kind,
                "item": event.item_id,
                "w": weight,
                **({"rating": event.rating} if event.rating is not None else {}),
                **({"session": event.session_id} if event.session_id else {}),
                **({"ctx": dict(list(event.context.items())[:10])} if event.context else {}),
            },
        )
        profile = self._update_profile(event.user_id, item.genres if item else (), weight, kind, event)
        if item is not None:
            self._update_segment(event.user_id, profile, shard, event.timestamp_ms)
            if weight > 0:
                self._bump_item(shard, event.item_id, weight=weight)
                self._update_cooccurrence(shard, event.item_id, previous, weight)
        outcome = Outcome()
        if kind in POSITIVE_TYPES:
            outcome.updated = self.refresh(event.user_id, TRIGGER_INTERACTION)
            outcome.push = True
            self._count_impressions(shard, outcome.updated, self.config.push_size)
        if kind in SIMILAR_USER_TYPES and item is not None:
            outcome.similar_users = self.similar_users(event.user_id)
            outcome.boosted_items = [event.item_id]
        return outcome

    def on_click(self, click: Click, shard: int) -> Outcome:
        """A click on a recommendation: CTR and A/B stats, boost similar items, refresh.

        The origin is recorded in the user's profile when there is one (a user who only
        clicked has none, so those clicks are not protected against replays).
        """
        profile = self.tables.profiles.get(click.user_id)
        if profile is not None and click.origin is not None:
            self.tables.profiles[click.user_id] = {
                **profile,
                "applied": self._applied(profile, click.origin),
            }
        self._bump_strategy(shard, click.strategy, clicks=1)
        if click.item_id in self.catalogue:
            self._bump_item(shard, click.item_id, clicks=1)
        self._append_activity(
            click.user_id,
            {
                "ts": click.timestamp_ms,
                "type": "recommendation_click",
                "item": click.item_id,
                "w": 0.0,
                "rec": click.recommendation_id,
                "strategy": click.strategy,
                "pos": click.position,
            },
        )
        similar = self.similar_items(click.item_id, self.config.similar_items)
        if similar:
            top = max(score for _, score in similar) or 1.0
            self._add_boosts(
                click.user_id, {item_id: self.config.click_boost * score / top for item_id, score in similar}
            )
        return Outcome(updated=self.refresh(click.user_id, TRIGGER_CLICK))

    def on_similar_boost(self, user_id: str, item_ids: Sequence[str], boost: float) -> Outcome:
        """Items liked by a similar user: boost them for ``user_id`` and refresh its top-k."""
        if user_id not in self.tables.profiles:
            return Outcome()
        self._add_boosts(user_id, dict.fromkeys(item_ids, boost))
        return Outcome(updated=self.refresh(user_id, TRIGGER_SIMILAR_USER))

    def on_served(self, user_id: str, strategy: str, item_ids: Sequence[str], shard: int) -> None:
        """A list was shown to the user (served over HTTP): count its impressions."""
        self._bump_strategy(shard, strategy, impressions=len(item_ids), lists=1)
        for item_id in item_ids:
            self._bump_item(shard, item_id, impressions=1)

    def refresh(self, user_id: str, trigger: str) -> RecList:
        """Recompute and store the user's top-k (boosts decay once used)."""
        rec = self.recommend(user_id, self.config.topk_size, trigger=trigger)
        self.tables.topk[user_id] = rec.to_state()
        boosts = self.tables.boosts.get(user_id)
        if boosts:
            decayed = {
                item_id: round(value * self.config.boost_decay, 6)
                for item_id, value in boosts.items()
                if value * self.config.boost_decay >= 0.05
            }
            self.tables.boosts[user_id] = decayed
        return rec

    # ------------------------------------------------------------------ queries

    def recommend(
        self,
        user_id: str,
        k: int,
        *,
        strategy: str | None = None,
        trigger: str = TRIGGER_INTERACTION,
    ) -> RecList:
        """Compute a top-``k`` list for a known user (no state is written)."""
        strategy = strategy or self.arm_for(user_id)
        if strategy == STRATEGY_POPULAR or user_id not in self.tables.profiles:
            return self.fallback(user_id, k)
        scores = self._scores(user_id, strategy)
        return RecList(user_id, self.new_id(), strategy, trigger, self._top(scores, k), self.clock())

    def fallback(
        self,
        user_id: str,
        k: int,
        *,
        genre: str | None = None,
        category: str | None = None,
    ) -> RecList:
        """Cold start: what is popular in the user's context (genre, category), else overall."""
        context = self.context_of(user_id)
        genre = genre or context.get("genre")
        category = category or context.get("category")
        popularity = self.popularity()
        exclude = self._seen_mask(user_id)
        for g, c in ((genre, category), (genre, None), (None, category), (None, None)):
            mask = self.catalogue.mask(genre=g, category=c) & ~exclude
            if int(mask.sum()) >= k or (g is None and c is None):
                scores = np.where(mask, popularity, -np.inf)
                break
        return RecList(
            user_id, self.new_id(), STRATEGY_POPULAR, TRIGGER_COLD_START, self._top(scores, k), self.clock()
        )

    def serve(
        self, user_id: str, k: int, *, genre: str | None = None, category: str | None = None
    ) -> tuple[RecList, str]:
        """What ``GET /recommendations/{user}`` answers: the stored top-k, or the fallback.

        Returns the list and its source (``table`` or ``fallback``). A stored list
        shorter than ``k`` (or thinned by a genre/category filter) is topped up with
        popular items.
        """
        state = self.tables.topk.get(user_id)
        if not state:
            return self.fallback(user_id, k, genre=genre, category=category), "fallback"
        rec = RecList.from_state(user_id, state)
        # Items the user touched since the list was computed are not worth showing again.
        seen = self._seen_mask(user_id)
        items = [
            (item_id, score)
            for item_id, score in rec.items
            if self._matches(item_id, genre, category) and not self._is_seen(item_id, seen)
        ]
        if len(items) < k:
            present = {item_id for item_id, _ in items}
            extra = self.fallback(user_id, k + len(present), genre=genre, category=category)
            floor = min((score for _, score in items), default=0.0)
            items += [
                (item_id, min(score, floor)) for item_id, score in extra.items if item_id not in present
            ]
        rec.items = items[:k]
        return rec, "table"

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """The user's genre profile, counters, boosts and recent activity."""
        profile = self.tables.profiles.get(user_id)
        if profile is None:
            return None
        genres = dict(sorted(profile.get("genres", {}).items(), key=lambda kv: (-kv[1], kv[0])))
        activity = list(self.tables.activity.get(user_id) or [])
        return {
            "user_id": user_id,
            "strategy": self.arm_for(user_id),
            "genres": genres,
            "dominant_genre": profile.get("dominant"),
            "interactions": int(profile.get("n", 0)),
            "counts": dict(profile.get("counts", {})),
            "updated_at": profile.get("updated"),
            "boosts": dict(self.tables.boosts.get(user_id) or {}),
            "recent_activity": activity[-20:][::-1],
        }

    def context_of(self, user_id: str) -> dict[str, str]:
        """The user's context for the fallback: dominant genre, last seen genre/category."""
        context: dict[str, str] = {}
        profile = self.tables.profiles.get(user_id)
        if profile and profile.get("dominant"):
            context["genre"] = str(profile["dominant"])
        for entry in reversed(self.tables.activity.get(user_id) or []):
            ctx = entry.get("ctx") or {}
            for key in ("genre", "category"):
                if key in ctx and key not in context and ctx[key]:
                    context[key] = str(ctx[key])
            if "genre" in context and "category" in context:
                break
        return context

    def strategy_stats(self) -> dict[str, dict[str, float]]:
        """Impressions, clicks, lists and CTR per strategy (summed over the local shards)."""
        totals: dict[str, dict[str, float]] = {
            name: {"impressions": 0, "clicks": 0, "lists": 0} for name in [*self.strategies, STRATEGY_POPULAR]
        }
        for key, value in list(self.tables.strategy_stats.items()):
            _shard, strategy = split_shard_key(key)
            entry = totals.setdefault(strategy, {"impressions": 0, "clicks": 0, "lists": 0})
            entry["impressions"] += int(value.get("imp", 0))
            entry["clicks"] += int(value.get("clk", 0))
            entry["lists"] += int(value.get("lists", 0))
        for entry in totals.values():
            entry["ctr"] = entry["clicks"] / entry["impressions"] if entry["impressions"] else 0.0
        return totals

    def item_view(self, item_id: str) -> dict[str, Any] | None:
        """Catalogue entry, live statistics and similar items of one item."""
        item = self.catalogue.get(item_id)
        if item is None:
            return None
        index = self.catalogue.index_of(item_id)
        assert index is not None
        impressions = int(self.counters.impressions[index])
        clicks = int(self.counters.clicks[index])
        return {
            **item.to_dict(),
            "interaction_weight": round(float(self.counters.weight[index]), 4),
            "impressions": impressions,
            "clicks": clicks,
            "ctr": clicks / impressions if impressions else 0.0,
            "similar": [
                {"item_id": other, "score": round(score, 4)}
                for other, score in self.similar_items(item_id, self.config.similar_items)
            ],
        }

    def similar_items(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Items consumed together with ``item_id``, topped up with content-similar items."""
        cooc = self._cooccurrence(item_id)
        ranked = sorted(cooc.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        if ranked:
            top = ranked[0][1]
            ranked = [(other, weight / top) for other, weight in ranked]
        if len(ranked) < k:
            present = {other for other, _ in ranked} | {item_id}
            floor = min((score for _, score in ranked), default=1.0)
            for other, score in self.catalogue.similar_by_content(item_id, k + len(present)):
                if other not in present and len(ranked) < k:
                    ranked.append((other, min(score, floor) * 0.5))
        return ranked

    def similar_users(self, user_id: str) -> list[str]:
        """Users of the same taste segment whose genre profile is close to ``user_id``'s."""
        profile = self.tables.profiles.get(user_id)
        if not profile or not profile.get("dominant"):
            return []
        members: dict[str, int] = {}
        for shard in range(self.config.shards):
            for member, seen_at in (
                self.tables.segments.get(shard_key(shard, profile["dominant"])) or {}
            ).items():
                if member != user_id:
                    members[member] = max(members.get(member, 0), int(seen_at))
        mine = self._profile_vector(profile)
        scored: list[tuple[float, int, str]] = []
        for member, seen_at in members.items():
            other = self.tables.profiles.get(member)
            if other is None:
                # Not on this instance's partitions: the shared dominant genre is all we know.
                similarity = self.config.similar_user_threshold
            else:
                similarity = _cosine(mine, self._profile_vector(other))
            if similarity >= self.config.similar_user_threshold:
                scored.append((similarity, seen_at, member))
        scored.sort(reverse=True)
        return [member for _, _, member in scored[: self.config.similar_users]]

    def popularity(self) -> npt.NDArray[np.float64]:
        """Popularity in [0, 1]: live interaction weight blended with the catalogue prior."""
        prior = self._prior
        live = self.counters.weight
        top = float(live.max()) if live.size else 0.0
        if top <= 0:
            return prior
        blended: npt.NDArray[np.float64] = 0.3 * prior + 0.7 * np.log1p(live) / math.log1p(top)
        return blended

    # ------------------------------------------------------------------ internals

    def _scores(self, user_id: str, strategy: str) -> npt.NDArray[np.float64]:
        config = self.config
        profile = self.tables.profiles.get(user_id) or {}
        vector = self._profile_vector(profile)
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            content = (self.catalogue.genre_matrix @ vector) / (self._genre_norms * norm)
        else:
            content = np.zeros(len(self.catalogue))
        popularity = self.popularity()
        if strategy == STRATEGY_CONTENT:
            scores = 0.8 * content + 0.2 * popularity
        else:
            scores = (
                config.w_content * content
                + config.w_cooccurrence * self._cooccurrence_scores(user_id)
                + config.w_popularity * popularity
                + config.w_ctr * self._ctr_scores()
            )
        for item_id, boost in (self.tables.boosts.get(user_id) or {}).items():
            index = self.catalogue.index_of(item_id)
            if index is not None:
                scores[index] += float(boost)
        scores[self._seen_mask(user_id)] = -np.inf
        return np.asarray(scores, dtype=np.float64)

    def _cooccurrence_scores(self, user_id: str) -> npt.NDArray[np.float64]:
        """Neighbours of the user's recent items, each item's neighbourhood normalised to 1."""
        index = self.catalogue.index
        positions: list[int] = []
        weights: list[float] = []
        for rank, item_id in enumerate(self._recent_items(user_id, self.config.recent_items)):
            parts = [
                part
                for shard in range(self.config.shards)
                if (part := self.tables.cooccurrence.get(shard_key(shard, item_id)))
            ]
            total = sum(sum(part.values()) for part in parts)
            if total <= 0:
                continue
            scale = 1.0 / ((1.0 + 0.3 * rank) * total)
            for part in parts:
                positions.extend(index.get(other, -1) for other in part)
                weights.extend(weight * scale for weight in part.values())
        scores = np.zeros(len(self.catalogue))
        if positions:
            at = np.asarray(positions)
            known = at >= 0
            np.add.at(scores, at[known], np.asarray(weights)[known])
        top = float(scores.max())
        return scores / top if top > 0 else scores

    def _ctr_scores(self) -> npt.NDArray[np.float64]:
        # Smoothed towards a 5 % prior so a handful of impressions cannot dominate.
        ctr = (self.counters.clicks + 1.0) / (self.counters.impressions + 20.0)
        top = float(ctr.max())
        return ctr / top if top > 0 else ctr

    def _top(self, scores: npt.NDArray[np.float64], k: int) -> list[tuple[str, float]]:
        k = min(k, len(scores))
        if k <= 0:
            return []
        candidates = np.argpartition(-scores, k - 1)[:k]
        ordered = candidates[np.lexsort((candidates, -scores[candidates]))]
        return [
            (self.catalogue.items[i].item_id, float(scores[i])) for i in ordered if np.isfinite(scores[i])
        ]

    def _seen_mask(self, user_id: str) -> npt.NDArray[np.bool_]:
        mask = np.zeros(len(self.catalogue), dtype=bool)
        index = self.catalogue.index
        rows = [index.get(entry.get("item", ""), -1) for entry in self.tables.activity.get(user_id) or []]
        rows = [row for row in rows if row >= 0]
        if rows:
            mask[rows] = True
        return mask

    def _is_seen(self, item_id: str, seen: npt.NDArray[np.bool_]) -> bool:
        index = self.catalogue.index_of(item_id)
        return index is not None and bool(seen[index])

    def _matches(self, item_id: str, genre: str | None, category: str | None) -> bool:
        if not genre and not category:
            return True
        item = self.catalogue.get(item_id)
        if item is None:
            return False
        return (not genre or genre in item.genres) and (not category or item.category == category)

    def _profile_vector(self, profile: Mapping[str, Any]) -> npt.NDArray[np.float64]:
        vector = np.zeros(len(self.catalogue.genres))
        for genre, weight in (profile.get("genres") or {}).items():
            position = self._genre_pos.get(genre)
            if position is not None:
                vector[position] = float(weight)
        return vector

    def _recent_items(self, user_id: str, n: int, exclude: str | None = None) -> list[str]:
        """The user's ``n`` most recent distinct catalogue items with a non-negative signal."""
        out: list[str] = []
        for entry in reversed(self.tables.activity.get(user_id) or []):
            item_id = str(entry.get("item", ""))
            if item_id == exclude or item_id in out or item_id not in self.catalogue:
                continue
            if float(entry.get("w", 0.0)) < 0:
                continue
            out.append(item_id)
            if len(out) >= n:
                break
        return out

    def _append_activity(self, user_id: str, entry: dict[str, Any]) -> None:
        activity = list(self.tables.activity.get(user_id) or [])
        activity.append(entry)
        self.tables.activity[user_id] = activity[-self.config.activity_size :]

    def _update_profile(
        self, user_id: str, genres: Iterable[str], weight: float, kind: str, event: Interaction
    ) -> dict[str, Any]:
        profile = dict(self.tables.profiles.get(user_id) or {"genres": {}, "n": 0, "counts": {}})
        preferences = dict(profile.get("genres") or {})
        step = weight * self.config.learning_rate
        for genre in genres:
            preferences[genre] = round(min(max(preferences.get(genre, 0.0) + step, 0.0), 1.0), 6)
        preferences = {genre: value for genre, value in preferences.items() if value > 0}
        counts = dict(profile.get("counts") or {})
        counts[kind] = counts.get(kind, 0) + 1
        profile.update(
            genres=preferences,
            n=int(profile.get("n", 0)) + 1,
            counts=counts,
            # In the same record as the change, so the changelog restores both or neither.
            applied=self._applied(profile, event.origin),
            updated=event.timestamp_ms,
            previous_dominant=profile.get("dominant"),
            dominant=max(preferences, key=lambda g: (preferences[g], g)) if preferences else None,
        )
        self.tables.profiles[user_id] = profile
        return profile

    def _applied(self, profile: Mapping[str, Any], origin: Origin | None) -> dict[str, int]:
        """The profile's last applied offset per source partition, with ``origin`` recorded.

        Bounded: the sources written longest ago are dropped first (dicts keep insertion
        order, and so does their JSON in the changelog).
        """
        applied = {str(k): int(v) for k, v in (profile.get("applied") or {}).items()}
        if origin is None:
            return applied
        applied.pop(origin.source, None)
        applied[origin.source] = origin.offset
        while len(applied) > self.config.applied_sources:
            del applied[next(iter(applied))]
        return applied

    def _update_segment(self, user_id: str, profile: Mapping[str, Any], shard: int, ts: int) -> None:
        dominant = profile.get("dominant")
        previous = profile.get("previous_dominant")
        if previous and previous != dominant:
            key = shard_key(shard, previous)
            members = dict(self.tables.segments.get(key) or {})
            if members.pop(user_id, None) is not None:
                self.tables.segments[key] = members
        if not dominant:
            return
        key = shard_key(shard, dominant)
        members = dict(self.tables.segments.get(key) or {})
        seen_at = members.get(user_id)
        # Refreshing "last active" on every event would rewrite the segment constantly.
        if seen_at is not None and ts - int(seen_at) < self.config.segment_refresh_ms:
            return
        members[user_id] = ts
        if len(members) > self.config.segment_size:
            keep = sorted(members.items(), key=lambda kv: kv[1], reverse=True)[: self.config.segment_size]
            members = dict(keep)
        self.tables.segments[key] = members

    def _update_cooccurrence(self, shard: int, item_id: str, previous: Sequence[str], weight: float) -> None:
        if not previous:
            return
        mine = dict(self.tables.cooccurrence.get(shard_key(shard, item_id)) or {})
        for distance, other in enumerate(previous):
            pair = weight / (1.0 + distance)
            mine[other] = round(mine.get(other, 0.0) + pair, 6)
            theirs = dict(self.tables.cooccurrence.get(shard_key(shard, other)) or {})
            theirs[item_id] = round(theirs.get(item_id, 0.0) + pair, 6)
            self.tables.cooccurrence[shard_key(shard, other)] = self._cap(theirs)
        self.tables.cooccurrence[shard_key(shard, item_id)] = self._cap(mine)

    def _cap(self, neighbours: dict[str, float]) -> dict[str, float]:
        limit = self.config.cooccurrence_neighbours
        if len(neighbours) <= limit:
            return neighbours
        return dict(sorted(neighbours.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])

    def _cooccurrence(self, item_id: str) -> dict[str, float]:
        merged: dict[str, float] = {}
        for shard in range(self.config.shards):
            for other, weight in (self.tables.cooccurrence.get(shard_key(shard, item_id)) or {}).items():
                merged[other] = merged.get(other, 0.0) + float(weight)
        return merged

    def _bump_item(
        self, shard: int, item_id: str, *, weight: float = 0.0, impressions: int = 0, clicks: int = 0
    ) -> None:
        key = shard_key(shard, item_id)
        stats = dict(self.tables.item_stats.get(key) or {"w": 0.0, "imp": 0, "clk": 0})
        stats["w"] = round(float(stats.get("w", 0.0)) + weight, 6)
        stats["imp"] = int(stats.get("imp", 0)) + impressions
        stats["clk"] = int(stats.get("clk", 0)) + clicks
        self.tables.item_stats[key] = stats
        self.counters.add(item_id, weight=weight, impressions=impressions, clicks=clicks)

    def _bump_strategy(
        self, shard: int, strategy: str, *, impressions: int = 0, clicks: int = 0, lists: int = 0
    ) -> None:
        key = shard_key(shard, strategy)
        stats = dict(self.tables.strategy_stats.get(key) or {"imp": 0, "clk": 0, "lists": 0})
        stats["imp"] = int(stats.get("imp", 0)) + impressions
        stats["clk"] = int(stats.get("clk", 0)) + clicks
        stats["lists"] = int(stats.get("lists", 0)) + lists
        self.tables.strategy_stats[key] = stats

    def _count_impressions(self, shard: int, rec: RecList, size: int) -> None:
        shown = rec.item_ids[:size]
        self.on_served(rec.user_id, rec.strategy, shown, shard)

    def _add_boosts(self, user_id: str, boosts: Mapping[str, float]) -> None:
        current = dict(self.tables.boosts.get(user_id) or {})
        for item_id, value in boosts.items():
            current[item_id] = round(current.get(item_id, 0.0) + float(value), 6)
        if len(current) > self.config.boost_max_items:
            current = dict(
                sorted(current.items(), key=lambda kv: (-kv[1], kv[0]))[: self.config.boost_max_items]
            )
        self.tables.boosts[user_id] = current


def _cosine(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 0.0
