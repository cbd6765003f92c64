"""Simulated users and their interactions, for the demo, the tests and the benchmarks.

Each simulated user has latent tastes: a genre distribution concentrated on a few
genres and a category preference. Sessions walk through the catalogue the way people
do: start from something to their taste (or a hit), then often continue within the
same collection (the next episode, the sequel), sometimes jump to another item of a
liked genre. Each item seen produces a ``view``; whether it is clicked, liked, put in
the cart, bought or rated depends on how well it matches the user's taste.

When a ``recommend`` callback is given, every session starts by showing the user a
recommendation list; the user clicks items of it with a probability that grows with
their affinity and falls with the position (``business.recommendation.clicked``).

Everything is driven by one seeded generator: the same arguments give the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys_data.catalogue import CATEGORIES, Catalogue, load_catalogue

INTERACTION_TOPIC = "business.user.interaction"
CLICK_TOPIC = "business.recommendation.clicked"

POSITIVE_TYPES = frozenset({"click", "like", "add_to_cart", "purchase"})
HIGH_RATING = 4.0

DEVICES = ("mobile", "web", "tv")

Recommend = Callable[[str, int, Mapping[str, str]], tuple[str, str, Sequence[str]]]
"""``recommend(user_id, k, context) -> (recommendation_id, strategy, item_ids)``."""


@dataclass(frozen=True)
class SimUser:
    """A simulated user with latent tastes."""

    user_id: str
    taste: npt.NDArray[np.float64] = field(repr=False)
    """Probability distribution over the catalogue's genres."""
    category_preference: npt.NDArray[np.float64] = field(repr=False)
    activity: float = 1.0
    """Relative number of sessions."""

    def top_genres(self, genres: Sequence[str], n: int = 3) -> list[str]:
        return [genres[i] for i in np.argsort(-self.taste)[:n]]


@dataclass(frozen=True)
class SimEvent:
    """One generated event: an interaction or a click on a recommendation list."""

    kind: str
    """``interaction`` or ``click``."""
    timestamp_ms: int
    user_id: str
    item_id: str
    interaction_type: str | None = None
    rating: float | None = None
    session_id: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    recommendation_id: str | None = None
    strategy: str | None = None
    position: int | None = None

    @property
    def topic(self) -> str:
        """The catalogue topic this event belongs on."""
        return CLICK_TOPIC if self.kind == "click" else INTERACTION_TOPIC

    @property
    def is_positive(self) -> bool:
        """A signal of interest: a positive interaction, a high rating or a click on a list."""
        if self.kind == "click":
            return True
        if self.interaction_type == "rating":
            return self.rating is not None and self.rating >= HIGH_RATING
        return self.interaction_type in POSITIVE_TYPES

    def payload(self) -> dict[str, Any]:
        """The event's fields as the Avro contract names them (without the envelope)."""
        if self.kind == "click":
            return {
                "user_id": self.user_id,
                "item_id": self.item_id,
                "recommendation_id": self.recommendation_id or "",
                "strategy": self.strategy or "",
                "position": int(self.position or 0),
            }
        return {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "interaction_type": self.interaction_type or "view",
            "rating": self.rating,
            "session_id": self.session_id,
            "context": dict(self.context),
        }


class InteractionGenerator:
    """Users with latent tastes and the sessions they produce."""

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        n_users: int = 500,
        seed: int = 7,
        start_ms: int = 1_735_689_600_000,
        days: float = 14.0,
        user_prefix: str = "user",
    ) -> None:
        self.catalogue = catalogue or load_catalogue()
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.start_ms = start_ms
        self.span_ms = int(days * 86_400_000)
        n_genres = len(self.catalogue.genres)
        self.users: list[SimUser] = []
        for i in range(n_users):
            # A small Dirichlet concentration puts most of the mass on two or three genres.
            taste = self.rng.dirichlet(np.full(n_genres, 0.12))
            categories = self.rng.dirichlet(np.full(len(CATEGORIES), 0.6))
            activity = float(self.rng.lognormal(0.0, 0.5))
            self.users.append(SimUser(f"{user_prefix}-{i:05d}", taste, categories, activity))
        self._by_id = {user.user_id: user for user in self.users}
        self._category_of = np.array(
            [CATEGORIES.index(item.category) for item in self.catalogue.items], dtype=np.int64
        )
        self._affinity: dict[str, npt.NDArray[np.float64]] = {}
        self._taste_probs: dict[str, npt.NDArray[np.float64]] = {}
        self._popular_probs = self.catalogue.popularity / self.catalogue.popularity.sum()

    def user(self, user_id: str) -> SimUser:
        return self._by_id[user_id]

    # ------------------------------------------------------------------ tastes

    def affinity(self, user: SimUser) -> npt.NDArray[np.float64]:
        """How much ``user`` likes each catalogue item, in [0, 1]."""
        cached = self._affinity.get(user.user_id)
        if cached is None:
            genre_match = self.catalogue.genre_matrix @ user.taste / max(float(user.taste.max()), 1e-9)
            category = user.category_preference[self._category_of] / user.category_preference.max()
            cached = np.clip(genre_match, 0.0, 1.0) * (0.6 + 0.4 * category)
            self._affinity[user.user_id] = cached
        return cached

    def _taste_choice_probs(self, user: SimUser) -> npt.NDArray[np.float64]:
        probs = self._taste_probs.get(user.user_id)
        if probs is None:
            weights = self.affinity(user) ** 3 * np.sqrt(self.catalogue.popularity)
            probs = weights / weights.sum()
            self._taste_probs[user.user_id] = probs
        return probs

    def _next_item(self, user: SimUser, current: int | None, seen: set[int]) -> int:
        roll = self.rng.random()
        if current is not None and roll < 0.45:
            members = [
                i
                for i in self.catalogue.collection(self.catalogue.items[current].collection_id)
                if i not in seen
            ]
            if members:
                return int(self.rng.choice(members))
        if roll < 0.85:
            return int(self.rng.choice(len(self.catalogue), p=self._taste_choice_probs(user)))
        return int(self.rng.choice(len(self.catalogue), p=self._popular_probs))

    # ------------------------------------------------------------------ sessions

    def session(
        self,
        user: SimUser,
        start_ms: int,
        *,
        recommend: Recommend | None = None,
        shown: int = 10,
    ) -> list[SimEvent]:
        """The events of one session of ``user`` starting at ``start_ms``."""
        session_id = f"s-{int(self.rng.integers(0, 2**62)):016x}"
        context = {"device": DEVICES[int(self.rng.integers(len(DEVICES)))]}
        affinity = self.affinity(user)
        clock = start_ms
        events: list[SimEvent] = []
        seen: set[int] = set()
        current: int | None = None

        def tick() -> int:
            nonlocal clock
            clock += int(self.rng.integers(5_000, 90_000))
            return clock

        if recommend is not None:
            recommendation_id, strategy, item_ids = recommend(user.user_id, shown, context)
            for position, item_id in enumerate(item_ids):
                index = self.catalogue.index_of(item_id)
                if index is None:
                    continue
                p_click = 0.7 * affinity[index] ** 2 / np.log2(position + 2)
                if self.rng.random() < p_click:
                    at = tick()
                    events.append(
                        SimEvent(
                            "click",
                            at,
                            user.user_id,
                            item_id,
                            session_id=session_id,
                            recommendation_id=recommendation_id,
                            strategy=strategy,
                            position=position,
                        )
                    )
                    events.extend(self._engage(user, index, at, session_id, context, clicked=True))
                    seen.add(index)
                    current = index
                    break

        steps = 1 + int(min(self.rng.geometric(0.3), 9))
        for _ in range(steps):
            index = self._next_item(user, current, seen)
            seen.add(index)
            current = index
            events.extend(self._engage(user, index, tick(), session_id, context))
            clock = events[-1].timestamp_ms
        return events

    def _engage(
        self,
        user: SimUser,
        index: int,
        at_ms: int,
        session_id: str,
        context: Mapping[str, str],
        *,
        clicked: bool = False,
    ) -> list[SimEvent]:
        """View an item, then maybe click, like, add to cart, buy and rate it."""
        item_id = self.catalogue.items[index].item_id
        aff = float(self.affinity(user)[index])
        ctx = {**context, "page": "recommendations" if clicked else "browse"}
        clock = at_ms

        def event(kind: str, rating: float | None = None) -> SimEvent:
            nonlocal clock
            clock += int(self.rng.integers(1_000, 20_000))
            return SimEvent("interaction", clock, user.user_id, item_id, kind, rating, session_id, ctx)

        out = [event("view")]
        if clicked or self.rng.random() < 0.1 + 0.6 * aff:
            out.append(event("click"))
            liked = self.rng.random() < 0.55 * aff
            if liked:
                out.append(event("like"))
            if self.rng.random() < 0.35 * aff:
                out.append(event("add_to_cart"))
                if self.rng.random() < 0.6:
                    out.append(event("purchase"))
            if (liked or out[-1].interaction_type == "purchase") and self.rng.random() < 0.3:
                rating = float(np.clip(round(1 + 4 * aff + self.rng.normal(0, 0.7)), 1, 5))
                out.append(event("rating", rating))
        return out

    def generate(
        self,
        n_sessions: int,
        *,
        recommend: Recommend | None = None,
        shown: int = 10,
    ) -> Iterator[SimEvent]:
        """``n_sessions`` sessions spread over the time span, in order of their start.

        Active users have more sessions. With ``recommend``, each session's list is asked
        for right before the session, so the recommender sees everything that happened
        before it.
        """
        weights = np.array([user.activity for user in self.users])
        owners = self.rng.choice(len(self.users), size=n_sessions, p=weights / weights.sum())
        starts = np.sort(self.rng.integers(0, self.span_ms, size=n_sessions)) + self.start_ms
        for owner, start in zip(owners, starts, strict=True):
            yield from self.session(self.users[int(owner)], int(start), recommend=recommend, shown=shown)

    def events(self, n_sessions: int, *, recommend: Recommend | None = None) -> list[SimEvent]:
        """Like :meth:`generate`, sorted by time."""
        return sorted(self.generate(n_sessions, recommend=recommend), key=lambda e: e.timestamp_ms)
