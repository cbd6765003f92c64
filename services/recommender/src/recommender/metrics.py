"""Prometheus metrics of the recommender, built once per process.

The shared event metrics (``mlops_events_*``, dead letters, lag) come from
``mlops_platform.metrics``; these are the recommender's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# From the input record's arrival to the refreshed list being handed to the producer. The
# path crosses one internal topic (the per-user repartition), so a few milliseconds is the
# floor on a local broker; the tail shows rebalances and registry retries.
UPDATE_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Computing one top-k over a few thousand items takes well under a millisecond to a few.
REFRESH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
# An offset commit waits for the table writes queued before it (a local broker acks them in
# milliseconds); the commit timer warns when one outlasts the commit interval (seconds).
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class RecommenderMetrics:
    events_processed: Counter
    update_latency: Histogram
    refresh_seconds: Histogram
    recommendations_published: Counter
    recommendations_served: Counter
    strategy_impressions: Gauge
    strategy_clicks: Gauge
    strategy_ctr: Gauge
    table_keys: Gauge
    registry_retries: Counter
    requests_routed: Counter
    commit_seconds: Histogram


@lru_cache(maxsize=4)
def recommender_metrics(registry: CollectorRegistry = REGISTRY) -> RecommenderMetrics:
    return RecommenderMetrics(
        events_processed=Counter(
            "recommender_events_processed_total",
            "Events and commands handled, by kind (interaction, click, feedback, served, similar_boost) "
            "and outcome (ok, ignored, replayed, dead_letter)",
            ["kind", "outcome"],
            registry=registry,
        ),
        update_latency=Histogram(
            "recommender_update_latency_seconds",
            "From receiving an event to publishing the user's refreshed recommendations",
            ["trigger"],
            buckets=UPDATE_LATENCY_BUCKETS,
            registry=registry,
        ),
        refresh_seconds=Histogram(
            "recommender_refresh_seconds",
            "Time to compute one top-k list",
            buckets=REFRESH_BUCKETS,
            registry=registry,
        ),
        recommendations_published=Counter(
            "recommender_recommendations_published_total",
            "Recommendation lists published, by topic and trigger",
            ["topic", "trigger"],
            registry=registry,
        ),
        recommendations_served=Counter(
            "recommender_recommendations_served_total",
            "Recommendation lists served over HTTP, by source (table, fallback) and strategy",
            ["source", "strategy"],
            registry=registry,
        ),
        strategy_impressions=Gauge(
            "recommender_strategy_impressions",
            "Items shown per strategy (pushed and served lists), on this instance's partitions",
            ["strategy"],
            registry=registry,
        ),
        strategy_clicks=Gauge(
            "recommender_strategy_clicks",
            "Clicks on recommended items per strategy, on this instance's partitions",
            ["strategy"],
            registry=registry,
        ),
        strategy_ctr=Gauge(
            "recommender_strategy_ctr",
            "Click-through rate per strategy (clicks / impressions)",
            ["strategy"],
            registry=registry,
        ),
        table_keys=Gauge(
            "recommender_table_keys",
            "Keys held in each state table on this instance",
            ["table"],
            registry=registry,
        ),
        registry_retries=Counter(
            "recommender_registry_retries_total",
            "Serde calls retried because the schema registry was unavailable",
            registry=registry,
        ),
        requests_routed=Counter(
            "recommender_requests_routed_total",
            "Per-user HTTP requests by where they were answered: local (this instance owns the "
            "user's partition), forwarded (to the owner), unavailable (rebalance in progress, 503), "
            "owner_unreachable (503)",
            ["outcome"],
            registry=registry,
        ),
        commit_seconds=Histogram(
            "recommender_offset_commit_seconds",
            "One offset commit of the stream processor, with the flush of the table writes it waits for",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        ),
    )
