"""The item catalogue: a few thousand items with category, genres, collection and popularity.

Generated on demand from a seed, so every process (service, tests, benchmarks, the
quality check) sees exactly the same catalogue without a data file to ship or keep in
sync. Items are grouped into *collections* (a series, a franchise, an author's books):
members share a category and most genres, which gives co-consumption structure that
genre profiles alone cannot see. Popularity follows a Zipf-like law, like real
catalogues: a short head of hits and a long tail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt

GENRES: tuple[str, ...] = (
    "action",
    "adventure",
    "animation",
    "comedy",
    "crime",
    "documentary",
    "drama",
    "family",
    "fantasy",
    "history",
    "horror",
    "music",
    "mystery",
    "romance",
    "sci-fi",
    "sports",
    "thriller",
    "war",
    "western",
    "biography",
)
CATEGORIES: tuple[str, ...] = ("movie", "series", "book", "game", "podcast")

DEFAULT_SEED = 20240601
DEFAULT_ITEMS = 3000

_ADJECTIVES = (
    "Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Midnight", "Electric", "Lost", "Iron",
    "Wild", "Frozen", "Secret", "Burning", "Distant", "Hollow", "Savage", "Quiet", "Velvet", "Northern",
)  # fmt: skip
_NOUNS = (
    "Harbor", "Empire", "Garden", "Signal", "Frontier", "Mirror", "Storm", "Orchard", "Legacy", "Circuit",
    "Voyage", "Kingdom", "Echo", "Cipher", "Meadow", "Station", "Horizon", "Labyrinth", "Tide", "Canyon",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One catalogue item."""

    item_id: str
    title: str
    category: str
    genres: tuple[str, ...]
    collection_id: str
    popularity: float
    """Prior popularity in (0, 1]; 1.0 is the most popular item."""

    def to_dict(self) -> dict[str, object]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "category": self.category,
            "genres": list(self.genres),
            "collection_id": self.collection_id,
            "popularity": self.popularity,
        }


@dataclass(frozen=True)
class Catalogue:
    """Items plus the dense views the recommender scores with.

    ``genre_matrix[i, g]`` is 1 when item ``i`` has genre ``g``; ``popularity[i]`` is the
    prior popularity. Indices follow ``items``.
    """

    items: tuple[Item, ...]
    seed: int
    genre_matrix: npt.NDArray[np.float64] = field(repr=False)
    popularity: npt.NDArray[np.float64] = field(repr=False)
    _index: dict[str, int] = field(repr=False)
    _by_genre: dict[str, npt.NDArray[np.int64]] = field(repr=False)
    _by_category: dict[str, npt.NDArray[np.int64]] = field(repr=False)
    _by_collection: dict[str, tuple[int, ...]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    @property
    def genres(self) -> tuple[str, ...]:
        return GENRES

    @property
    def categories(self) -> tuple[str, ...]:
        return CATEGORIES

    @property
    def index(self) -> Mapping[str, int]:
        """Item id -> row of the dense views."""
        return self._index

    def index_of(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    def get(self, item_id: str) -> Item | None:
        index = self._index.get(item_id)
        return None if index is None else self.items[index]

    def genre_index(self, genre: str) -> int | None:
        try:
            return GENRES.index(genre)
        except ValueError:
            return None

    def items_in_genre(self, genre: str) -> npt.NDArray[np.int64]:
        return self._by_genre.get(genre, np.empty(0, dtype=np.int64))

    def items_in_category(self, category: str) -> npt.NDArray[np.int64]:
        return self._by_category.get(category, np.empty(0, dtype=np.int64))

    def collection(self, collection_id: str) -> tuple[int, ...]:
        return self._by_collection.get(collection_id, ())

    def mask(self, *, genre: str | None = None, category: str | None = None) -> npt.NDArray[np.bool_]:
        """Boolean mask of the items matching a genre and/or category (all items when neither)."""
        selected = np.ones(len(self.items), dtype=bool)
        if genre:
            genre_mask = np.zeros(len(self.items), dtype=bool)
            genre_mask[self.items_in_genre(genre)] = True
            selected &= genre_mask
        if category:
            category_mask = np.zeros(len(self.items), dtype=bool)
            category_mask[self.items_in_category(category)] = True
            selected &= category_mask
        return selected

    def popular(
        self,
        k: int,
        *,
        genre: str | None = None,
        category: str | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Item]:
        """The ``k`` most popular items (by prior popularity) matching the filters."""
        scores = np.where(self.mask(genre=genre, category=category), self.popularity, -1.0)
        for item_id in exclude:
            index = self._index.get(item_id)
            if index is not None:
                scores[index] = -1.0
        order = np.argsort(-scores, kind="stable")[:k]
        return [self.items[i] for i in order if scores[i] >= 0]

    def similar_by_content(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Items sharing genres (cosine) and category with ``item_id``, popularity as tie-break."""
        index = self._index.get(item_id)
        if index is None:
            return []
        vector = self.genre_matrix[index]
        norms = np.sqrt(self.genre_matrix.sum(axis=1)) * max(float(np.sqrt(vector.sum())), 1e-9)
        cosine = (self.genre_matrix @ vector) / np.maximum(norms, 1e-9)
        category = self.items[index].category
        same_category = np.array([item.category == category for item in self.items], dtype=np.float64)
        scores = 0.7 * cosine + 0.2 * same_category + 0.1 * self.popularity
        scores[index] = -1.0
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.items[i].item_id, float(scores[i])) for i in order]


def item_id_for(index: int) -> str:
    return f"item-{index:05d}"


@lru_cache(maxsize=4)
def load_catalogue(n_items: int = DEFAULT_ITEMS, seed: int = DEFAULT_SEED) -> Catalogue:
    """The deterministic catalogue of ``n_items`` items for ``seed`` (cached per process)."""
    if n_items < len(GENRES):
        raise ValueError(f"a catalogue needs at least {len(GENRES)} items, got {n_items}")
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    # Genre frequencies are uneven, as in real catalogues: a few common genres, several rare ones.
    genre_weights = rng.dirichlet(np.full(n_genres, 2.0))
    items: list[Item] = []
    # Popularity: Zipf-like over a random permutation of the items.
    ranks = rng.permutation(n_items) + 1
    popularity = 1.0 / ranks.astype(np.float64) ** 0.8
    popularity = popularity / popularity.max()
    index = 0
    collection_no = 0
    while index < n_items:
        collection_no += 1
        collection_id = f"col-{collection_no:04d}"
        size = min(int(rng.integers(2, 9)), n_items - index)
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=[0.35, 0.25, 0.2, 0.12, 0.08]))]
        n_core = int(rng.choice([1, 2, 3], p=[0.3, 0.5, 0.2]))
        core = [str(g) for g in rng.choice(GENRES, size=n_core, replace=False, p=genre_weights)]
        for _ in range(size):
            genres = list(core)
            # Some members add a genre of their own (a comedy instalment of a crime series).
            if rng.random() < 0.3:
                extra = str(rng.choice(GENRES, p=genre_weights))
                if extra not in genres:
                    genres.append(extra)
            title = (
                f"{_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]} "
                f"{_NOUNS[int(rng.integers(len(_NOUNS)))]} {collection_no}"
            )
            items.append(
                Item(
                    item_id=item_id_for(index),
                    title=title,
                    category=category,
                    genres=tuple(sorted(genres)),
                    collection_id=collection_id,
                    popularity=round(float(popularity[index]), 6),
                )
            )
            index += 1
    return _build(tuple(items), seed)


def _build(items: Sequence[Item], seed: int) -> Catalogue:
    genre_pos = {genre: i for i, genre in enumerate(GENRES)}
    matrix = np.zeros((len(items), len(GENRES)), dtype=np.float64)
    for row, item in enumerate(items):
        for genre in item.genres:
            matrix[row, genre_pos[genre]] = 1.0
    by_genre = {genre: np.flatnonzero(matrix[:, genre_pos[genre]]).astype(np.int64) for genre in GENRES}
    by_category = {
        category: np.array([i for i, item in enumerate(items) if item.category == category], dtype=np.int64)
        for category in CATEGORIES
    }
    by_collection: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_collection.setdefault(item.collection_id, []).append(i)
    matrix.setflags(write=False)
    popularity = np.array([item.popularity for item in items], dtype=np.float64)
    popularity.setflags(write=False)
    return Catalogue(
        items=tuple(items),
        seed=seed,
        genre_matrix=matrix,
        popularity=popularity,
        _index={item.item_id: i for i, item in enumerate(items)},
        _by_genre=by_genre,
        _by_category=by_category,
        _by_collection={key: tuple(value) for key, value in by_collection.items()},
    )
