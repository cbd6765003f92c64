"""A recommender on private topics: its environment, its topics, and their removal afterwards.

Each run gets a fresh Faust app id (so a private consumer group and private changelog and
commands topics) and private input/output topics carrying the catalogue's contracts; the
tests that run one or several instances of the service share these helpers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka.admin import AdminClient

from mlops_platform.contracts import Topic
from mlops_platform.kafka import create_topic, delete_topics
from mlops_platform.settings import PlatformSettings

CONTRACTS = (
    Topic.BUSINESS_USER_INTERACTION,
    Topic.BUSINESS_RECOMMENDATION_CLICKED,
    Topic.BUSINESS_FEEDBACK_RECEIVED,
    Topic.RECOMMENDATIONS_UPDATED,
    Topic.PUSH_RECOMMENDATIONS,
)


def new_run() -> tuple[str, dict[Topic, str]]:
    """A fresh app id and private topic names (not created yet) for one run."""
    run = uuid.uuid4().hex[:10]
    return f"recommender-test-{run}", {contract: f"test.{contract.value}.{run}" for contract in CONTRACTS}


def create_topics(settings: PlatformSettings, topics: dict[Topic, str], partitions: int = 3) -> None:
    for name in topics.values():
        create_topic(settings, name, partitions=partitions)


def recommender_env(
    app_id: str, topics: dict[Topic, str], data_dir: Path, instance: str = "instance"
) -> dict[str, str]:
    """The environment of one recommender instance of ``app_id`` on the private ``topics``."""
    return {
        "RECOMMENDER_APP_ID": app_id,
        "RECOMMENDER_INSTANCE_ID": f"{app_id}-{instance}",
        "RECOMMENDER_INTERACTION_TOPIC": topics[Topic.BUSINESS_USER_INTERACTION],
        "RECOMMENDER_CLICK_TOPIC": topics[Topic.BUSINESS_RECOMMENDATION_CLICKED],
        "RECOMMENDER_FEEDBACK_TOPIC": topics[Topic.BUSINESS_FEEDBACK_RECEIVED],
        "RECOMMENDER_UPDATED_TOPIC": topics[Topic.RECOMMENDATIONS_UPDATED],
        "RECOMMENDER_PUSH_TOPIC": topics[Topic.PUSH_RECOMMENDATIONS],
        "RECOMMENDER_COMMIT_INTERVAL_S": "0.5",
        "RECOMMENDER_METRICS_INTERVAL_S": "1",
        "STACK_DIR": str(data_dir),
    }


def delete_run(settings: PlatformSettings, group: str, prefixes: Iterable[str]) -> None:
    """Delete the run's consumer group and the topics starting with ``prefixes`` (best effort)."""
    prefixes = tuple(prefixes)
    admin = AdminClient(settings.admin_config())
    for future in admin.delete_consumer_groups([group]).values():
        try:
            future.result()
        except Exception as exc:  # cleanup only
            print(f"could not delete the test consumer group: {exc}")
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
    for topic, reason in delete_topics(settings, names).items():
        print(f"could not delete the test topic {topic}: {reason}")
