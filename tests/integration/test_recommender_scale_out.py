"""Two recommender instances in one Faust app: any instance answers for any user, down and up again.

Both instances (``python -m recommender``) share a fresh app id, so one consumer group and
private changelog and commands topics, on private input/output topics of 3 partitions.
Each owns some of the partitions and forwards a per-user request it does not own to the
owner (the ``X-Recommender-Served-By`` header names who answered). When one instance stops
(SIGTERM) the survivor takes its partitions over, restores them from the changelogs and
answers for every user; while that happens a client sees the stored answer or a 503, never
a wrong one. A second instance started again takes partitions back.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from mlops_platform.contracts import Topic, make_event
from mlops_platform.kafka import EventProducer
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings
from recsys_data import load_catalogue
from tests.support.processes import ServiceLauncher, ServiceProcess, wait_until
from tests.support.recommender import create_topics, delete_run, new_run, recommender_env

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 90.0
SETTLE_TIMEOUT_S = 180.0
USERS = 40
SOURCE_PARTITIONS = 9  # 3 source topics x 3 partitions
SERVED_BY = "X-Recommender-Served-By"


@dataclass
class Group:
    """The private topics, the producer feeding them and the instances of one app id."""

    app_id: str
    topics: dict[Topic, str]
    producer: EventProducer
    launcher: ServiceLauncher
    env: dict[str, str]

    def start(self, instance: str) -> ServiceProcess:
        return self.launcher.start(
            "recommender",
            "RECOMMENDER_",
            {**self.env, "RECOMMENDER_INSTANCE_ID": f"{self.app_id}-{instance}"},
            timeout_s=START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
        )


@pytest.fixture
def group(
    platform_settings: PlatformSettings,
    kafka: str,
    serde: AvroSerde,
    tmp_path_factory: pytest.TempPathFactory,
    launcher: ServiceLauncher,
) -> Iterator[Group]:
    app_id, topics = new_run()
    create_topics(platform_settings, topics)
    producer = EventProducer(platform_settings, "recommender-scale-test", serde)
    env = recommender_env(app_id, topics, tmp_path_factory.mktemp("recommender-scale"))
    try:
        yield Group(app_id, topics, producer, launcher, env)
    finally:
        for instance in launcher.started:  # before their topics go (the launcher prints the logs)
            instance.stop()
        producer.close()
        delete_run(platform_settings, app_id, [app_id, *topics.values()])


def source_partitions(instance: ServiceProcess) -> int:
    """Source partitions the instance holds while ready (0 when not ready)."""
    try:
        body = instance.get("/ready", timeout=5).json()
    except Exception:  # not listening (yet, or any more): holds nothing
        return 0
    if not body.get("ready"):
        return 0
    match = re.search(r"(\d+) source partitions", body["checks"]["streams"]["detail"])
    return int(match.group(1)) if match else 0


def wait_settled(*instances: ServiceProcess) -> None:
    """Until every instance is ready with some partitions and together they hold all of them."""

    def settled() -> bool:
        held = [source_partitions(instance) for instance in instances]
        return all(held) and sum(held) == SOURCE_PARTITIONS

    wait_until(
        settled,
        SETTLE_TIMEOUT_S,
        lambda: (
            f"the partitions to settle over {[i.url for i in instances]}: "
            f"{[source_partitions(i) for i in instances]}"
        ),
        interval_s=0.5,
    )


def answer(instance: ServiceProcess, user: str) -> tuple[int, dict[str, Any], str | None]:
    response = instance.get(f"/recommendations/{user}", params={"k": 10}, timeout=10)
    return response.status_code, response.json(), response.headers.get(SERVED_BY)


def stored_lists(instance: ServiceProcess, users: list[str]) -> dict[str, tuple[str, list[str], str]]:
    """Each user's stored list as ``instance`` serves it: (recommendation id, items, served by)."""
    lists = {}
    for user in users:
        status, body, served_by = answer(instance, user)
        assert status == 200 and body["source"] == "table", (user, status, body)
        assert served_by is not None
        lists[user] = (body["recommendation_id"], [item["item_id"] for item in body["items"]], served_by)
    return lists


def publish_likes(group: Group, users: list[str]) -> None:
    """A view and a like per user: the like stores the user's top-k (no other user's list moves)."""
    items = [item.item_id for item in load_catalogue().items]
    contract = Topic.BUSINESS_USER_INTERACTION
    for n, user in enumerate(users):
        for offset, kind in ((0, "view"), (1, "like")):
            event = make_event(
                "recommender-scale-test",
                {"user_id": user, "item_id": items[(7 * n + offset) % len(items)], "interaction_type": kind},
            )
            group.producer.publish(group.topics[contract], event, user, schema_topic=contract.value)
    assert group.producer.flush(30) == 0


def wait_stored(instance: ServiceProcess, users: list[str]) -> None:
    def all_stored() -> bool:
        return all(
            (reply := answer(instance, user))[0] == 200 and reply[1]["source"] == "table" for user in users
        )

    instance.wait(f"a stored list for each of {len(users)} users", all_stored, timeout_s=SETTLE_TIMEOUT_S)


def test_any_instance_answers_for_every_user_while_scaling_down_and_up(group: Group) -> None:
    first = group.start("a")
    second = group.start("b")
    wait_settled(first, second)
    assert first.url != second.url

    users = [f"u-{uuid.uuid4().hex[:8]}" for _ in range(USERS)]
    publish_likes(group, users)
    wait_stored(first, users)

    # Every user's list is the same whichever instance is asked, answered by its owner.
    via_first = stored_lists(first, users)
    via_second = stored_lists(second, users)
    assert via_first == via_second
    owners = Counter(served_by for _id, _items, served_by in via_first.values())
    assert set(owners) == {first.url, second.url}, owners  # both own users, both forward
    for instance in (first, second):
        assert instance.metric("recommender_requests_routed_total", outcome="forwarded")
        assert instance.metric("recommender_requests_routed_total", outcome="local")
    user = users[0]
    profiles = [instance.get(f"/users/{user}/profile").json() for instance in (first, second)]
    assert profiles[0] == profiles[1] and profiles[0]["counts"] == {"view": 1, "like": 1}

    # Scale down: SIGTERM the second instance while asking the first for every user.
    # Until the first owns and restored every partition a client gets the stored list or a 503
    # with a reason (owner unreachable, rebalance in progress); never another list.
    seen: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        stopping = pool.submit(second.stop, strict=True)

        def survivor_answers_all() -> bool:
            complete = True
            for user in users:
                status, body, served_by = answer(first, user)
                if status == 503:
                    assert body["detail"], body
                    seen["503"] += 1
                    complete = False
                    continue
                assert status == 200, (user, status, body)
                assert (body["recommendation_id"], [i["item_id"] for i in body["items"]]) == via_first[user][
                    :2
                ]
                seen["200"] += 1
                complete = complete and served_by == first.url
            return complete

        first.wait(
            "the survivor to answer for every user itself", survivor_answers_all, SETTLE_TIMEOUT_S, 0.5
        )
        stopping.result()
    wait_settled(first)
    print(f"answers while scaling down: {dict(seen)}")

    # Scale up again: a second instance takes partitions back; both answer for everyone.
    second.restart()
    second.wait_for("/ready", timeout_s=START_TIMEOUT_S)
    wait_settled(first, second)
    again_first = stored_lists(first, users)
    again_second = stored_lists(second, users)
    assert again_first == again_second
    assert {user: entry[:2] for user, entry in again_first.items()} == {
        user: entry[:2] for user, entry in via_first.items()
    }
    assert {served_by for _id, _items, served_by in again_first.values()} == {first.url, second.url}

    # New events still flow to whichever instance owns them, and both see the result.
    newcomers = [f"n-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    publish_likes(group, newcomers)
    wait_stored(second, newcomers)
    assert stored_lists(first, newcomers) == stored_lists(second, newcomers)
