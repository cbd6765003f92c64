from __future__ import annotations

import numpy as np
import pytest

from recsys_data import CATEGORIES, GENRES, load_catalogue
from recsys_data.catalogue import load_catalogue as uncached_loader


def test_catalogue_is_deterministic_per_seed() -> None:
    first = load_catalogue(500, seed=1)
    uncached_loader.cache_clear()
    again = load_catalogue(500, seed=1)
    other = load_catalogue(500, seed=2)
    assert first is not again
    assert first.items == again.items
    assert first.items != other.items


def test_default_catalogue_has_a_few_thousand_valid_items() -> None:
    catalogue = load_catalogue()
    assert len(catalogue) == 3000
    ids = [item.item_id for item in catalogue.items]
    assert len(set(ids)) == len(ids)
    for item in catalogue.items:
        assert item.category in CATEGORIES
        assert 1 <= len(item.genres) <= 4
        assert set(item.genres) <= set(GENRES)
        assert 0 < item.popularity <= 1.0
    assert max(item.popularity for item in catalogue.items) == 1.0
    # Every genre and category is represented.
    assert {g for item in catalogue.items for g in item.genres} == set(GENRES)
    assert {item.category for item in catalogue.items} == set(CATEGORIES)


def test_popularity_has_a_long_tail() -> None:
    popularity = np.sort(load_catalogue().popularity)[::-1]
    head = popularity[: len(popularity) // 10].sum()
    assert head / popularity.sum() > 0.3


def test_collections_share_category_and_core_genres() -> None:
    catalogue = load_catalogue()
    sizes = []
    for collection_id in {item.collection_id for item in catalogue.items}:
        members = [catalogue.items[i] for i in catalogue.collection(collection_id)]
        sizes.append(len(members))
        assert len({m.category for m in members}) == 1
        assert set.intersection(*(set(m.genres) for m in members))
    assert max(sizes) > 1


def test_dense_views_match_the_items() -> None:
    catalogue = load_catalogue()
    assert catalogue.genre_matrix.shape == (len(catalogue), len(GENRES))
    for index in (0, 17, 2999):
        item = catalogue.items[index]
        assert catalogue.index_of(item.item_id) == index
        assert catalogue.get(item.item_id) == item
        marked = {GENRES[g] for g in np.flatnonzero(catalogue.genre_matrix[index])}
        assert marked == set(item.genres)
    assert catalogue.get("item-99999") is None and "item-99999" not in catalogue
    assert catalogue.genre_index("comedy") == GENRES.index("comedy")
    assert catalogue.genre_index("opera") is None
    with pytest.raises(ValueError):
        catalogue.genre_matrix[0, 0] = 5.0  # read-only: shared by every user of the catalogue


def test_popular_respects_filters_and_exclusions() -> None:
    catalogue = load_catalogue()
    top = catalogue.popular(5)
    assert [item.popularity for item in top] == sorted((item.popularity for item in top), reverse=True)
    assert top[0].popularity == 1.0
    comedies = catalogue.popular(10, genre="comedy", category="book")
    assert all("comedy" in item.genres and item.category == "book" for item in comedies)
    without_first = catalogue.popular(5, exclude=[top[0].item_id])
    assert top[0] not in without_first and without_first[0] == top[1]


def test_similar_by_content_prefers_shared_genres() -> None:
    catalogue = load_catalogue()
    item = catalogue.items[10]
    similar = catalogue.similar_by_content(item.item_id, 10)
    assert len(similar) == 10 and item.item_id not in {other for other, _ in similar}
    for other, _score in similar[:3]:
        assert set(catalogue.get(other).genres) & set(item.genres)  # type: ignore[union-attr]
    assert catalogue.similar_by_content("item-99999", 5) == []
