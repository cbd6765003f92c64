"""Settings of the recommender (environment variables prefixed ``RECOMMENDER_``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic, dlq_topic
from mlops_platform.settings import ServiceSettings
from recommender.engine import STRATEGY_CONTENT, STRATEGY_HYBRID, EngineConfig
from recsys_data.catalogue import DEFAULT_ITEMS, DEFAULT_SEED


def _default_data_dir() -> Path:
    # Faust keeps per-instance files (its table directory) here; the tables themselves live
    # in memory and in their changelog topics.
    return Path(os.environ.get("STACK_DIR", ".stack")) / "tmp" / "recommender"


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (compared with, never bound)


class Settings(ServiceSettings):
    """The recommender's settings; its topics are declared once, as bindings, in :meth:`bindings`."""

    model_config = SettingsConfigDict(env_prefix="RECOMMENDER_", extra="ignore", populate_by_name=True)

    service_name: str = "recommender"
    http_port: int = 8005

    app_id: str | None = Field(
        None,
        description="Faust application id: the consumer group and the prefix of the internal topics "
        "(<app_id>-<table>-changelog, <app_id>-user-commands); default: the base settings' consumer "
        "group (group_id, else the service name).",
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    advertised_host: str | None = Field(
        None,
        description="Host the other instances of the group reach this one's HTTP API at (its canonical "
        "URL, published with the partition assignment); default: the HTTP host, or the machine's "
        "host name when the HTTP host is a wildcard (0.0.0.0, ::).",
    )
    forward_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Timeout of a request forwarded to the instance that owns the user's partition.",
    )
    partitions: int = Field(3, description="Partitions of the internal topics; equal to the source topics'.")
    replication_factor: int = 1
    auto_offset_reset: str = "earliest"
    commit_interval_s: float = 2.8
    session_timeout_s: float = Field(
        15.0,
        ge=6.0,
        description=(
            "Consumer group session timeout: how soon the partitions of a crashed instance move on. "
            "A restarted instance joins with a new member id and waits for its predecessor's session "
            "to expire (Faust's default of 60 s made recovery take about a minute)."
        ),
    )
    stop_timeout_s: float = 30.0
    registry_retry_s: float = 2.0
    metrics_interval_s: float = 5.0
    command_retention_ms: int = 86_400_000
    changelog_buffer: int = Field(
        2000, description="Changelog records queued before the agents wait for them to be sent."
    )

    # Topics (the catalogue's by default; tests point them at private topics with the same contracts).
    interaction_topic: str = Topic.BUSINESS_USER_INTERACTION.value
    click_topic: str = Topic.BUSINESS_RECOMMENDATION_CLICKED.value
    feedback_topic: str = Topic.BUSINESS_FEEDBACK_RECEIVED.value
    updated_topic: str = Topic.RECOMMENDATIONS_UPDATED.value
    push_topic: str = Topic.PUSH_RECOMMENDATIONS.value
    dead_letter_topic: str = dlq_topic("recommender")

    catalogue_items: int = DEFAULT_ITEMS
    catalogue_seed: int = DEFAULT_SEED

    default_k: int = 10
    max_k: int = 100
    topk_size: int = 20
    push_size: int = 10
    push_channel: str = "push"
    count_served_impressions: bool = Field(
        True,
        description="Count lists served over HTTP as impressions (one internal command per request).",
    )
    learning_rate: float = 0.1
    ab_arms: dict[str, float] = Field(
        default_factory=lambda: {STRATEGY_HYBRID: 0.9, STRATEGY_CONTENT: 0.1},
        description='A/B split of users over strategies (JSON), e.g. {"hybrid": 0.5, "content": 0.5}.',
    )
    similar_users: int = 20
    similar_user_threshold: float = 0.5

    @property
    def consumer_group(self) -> str:
        """The Faust app id, which is also the consumer group Faust joins (``recommender`` by default)."""
        return self.app_id or super().consumer_group

    # Bindings: each topic tied to the contract it carries, declared once for the whole service.
    # The inputs are read whatever their key (each record is re-keyed by user id internally);
    # the outputs are keyed by user id.

    @property
    def interactions(self) -> Binding:
        return Binding.to(Topic.BUSINESS_USER_INTERACTION, self.interaction_topic)

    @property
    def clicks(self) -> Binding:
        return Binding.to(Topic.BUSINESS_RECOMMENDATION_CLICKED, self.click_topic)

    @property
    def feedback(self) -> Binding:
        return Binding.to(Topic.BUSINESS_FEEDBACK_RECEIVED, self.feedback_topic)

    @property
    def updated(self) -> Binding:
        return Binding.to(Topic.RECOMMENDATIONS_UPDATED, self.updated_topic, key="user_id")

    @property
    def push(self) -> Binding:
        return Binding.to(Topic.PUSH_RECOMMENDATIONS, self.push_topic, key="user_id")

    def bindings(self) -> ServiceBindings:
        """The three business topics in; recommendation lists, pushes and heartbeats out."""
        return ServiceBindings.of(
            consumes=[self.interactions, self.clicks, self.feedback],
            produces=[self.updated, self.push, self.heartbeats, self.system_metrics],
        )

    def data_path(self) -> Path:
        """The Faust tables' local stores live here (its disk space is reported)."""
        return self.data_dir

    @property
    def faust_datadir(self) -> Path:
        return self.data_dir / self.instance_id

    @property
    def canonical_url(self) -> str:
        """This instance's HTTP base URL as the other members of the group reach it.

        Faust's partition assignor publishes it with every member's assignment, so each
        instance knows where the owner of any user's partition answers.
        """
        host = self.advertised_host or self.http_host
        if not self.advertised_host and host in WILDCARD_HOSTS:
            host = socket.gethostname()
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def broker_urls(self) -> list[str]:
        return [
            f"kafka://{server.strip()}"
            for server in self.kafka_bootstrap_servers.split(",")
            if server.strip()
        ]

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            learning_rate=self.learning_rate,
            topk_size=max(self.topk_size, self.push_size),
            push_size=self.push_size,
            similar_users=self.similar_users,
            similar_user_threshold=self.similar_user_threshold,
            shards=self.partitions,
            arms=tuple(self.ab_arms.items()),
        )
