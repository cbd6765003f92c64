"""Recommendation data: the item catalogue, simulated users and interactions, held-out splits.

- :func:`load_catalogue` — the deterministic catalogue (items with category, genres,
  collection and popularity), generated from a seed
- :class:`InteractionGenerator` — users with latent tastes producing sessions of
  interactions and clicks on shown recommendations
- :func:`holdout_split`, :func:`evaluate` — next-item evaluation protocol and metrics
"""

from recsys_data.catalogue import CATEGORIES, GENRES, Catalogue, Item, load_catalogue
from recsys_data.generator import (
    CLICK_TOPIC,
    HIGH_RATING,
    INTERACTION_TOPIC,
    POSITIVE_TYPES,
    InteractionGenerator,
    SimEvent,
    SimUser,
)
from recsys_data.split import HoldoutSplit, evaluate, hit_rate_at_k, holdout_split, ndcg_at_k

__all__ = [
    "CATEGORIES",
    "CLICK_TOPIC",
    "GENRES",
    "HIGH_RATING",
    "INTERACTION_TOPIC",
    "POSITIVE_TYPES",
    "Catalogue",
    "HoldoutSplit",
    "InteractionGenerator",
    "Item",
    "SimEvent",
    "SimUser",
    "evaluate",
    "hit_rate_at_k",
    "holdout_split",
    "load_catalogue",
    "ndcg_at_k",
]
