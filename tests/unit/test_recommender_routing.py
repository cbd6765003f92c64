"""Per-user requests answered by the owner of the user's partition, from any instance.

Two recommender APIs stand for two instances of one Faust group: a fake of what routing
reads from Faust (assignment, table metadata, producer partitioner) tells each which
partitions it owns, and instance A forwards to instance B through an in-process ASGI
transport, so the forwarding code path (headers, status, body) is the real one.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from faust.types import TP

from mlops_platform.auth import KeyStore, Role
from recommender.api import router
from recommender.config import Settings
from recommender.engine import Interaction
from recommender.routing import HOP_HEADER, SERVED_BY_HEADER, PartitionOwners, UserRouting
from tests.support import keys
from tests.support.keys import KeyedClient, store
from tests.unit.test_recommender_api import CATALOGUE, FakeBackend

CHANGELOG = "rec-topk-changelog"
PARTITIONS = 3
URL_A = "http://10.0.0.1:8005"
URL_B = "http://10.0.0.2:8105"


@dataclass
class FakeTable:
    name: str

    @property
    def changelog_topic(self) -> Any:
        return self

    def get_topic_name(self) -> str:
        return self.name


@dataclass
class FakeRecovery:
    completed: asyncio.Event = field(default_factory=asyncio.Event)


class FakeTables(dict[str, FakeTable]):
    def __init__(self) -> None:
        super().__init__(topk=FakeTable(CHANGELOG))
        self.recovery = FakeRecovery()
        self.recovery.completed.set()


@dataclass
class FakeGroup:
    """What routing reads of a Faust app: one assignment of the partitions to member URLs."""

    own_url: str
    owners: dict[int, str]
    rebalancing: bool = False
    in_recovery: bool = False
    tables: FakeTables = field(default_factory=FakeTables)

    @property
    def assignor(self) -> Any:
        return self

    @property
    def router(self) -> Any:
        return self

    @property
    def producer(self) -> Any:
        return self

    partitioner = DefaultPartitioner()

    def assigned_actives(self) -> set[TP]:
        return {TP(CHANGELOG, p) for p, url in self.owners.items() if url == self.own_url}

    def table_metadata(self, table: str) -> dict[str, dict[str, list[int]]]:
        assert table == "topk"
        metadata: dict[str, dict[str, list[int]]] = {}
        for partition, url in self.owners.items():
            metadata.setdefault(url, {}).setdefault(CHANGELOG, []).append(partition)
        return metadata


ASSIGNMENT = {0: URL_A, 1: URL_B, 2: URL_B}


def _partition(user: str) -> int:
    return int(DefaultPartitioner()(user.encode(), list(range(PARTITIONS)), list(range(PARTITIONS))))


def _users_on(partitions: set[int], n: int) -> list[str]:
    users = [f"user-{i}" for i in range(400)]
    return [u for u in users if _partition(u) in partitions][:n]


@dataclass
class Instance:
    group: FakeGroup
    backend: FakeBackend
    app: FastAPI
    client: TestClient


def _instance(
    tmp_path: Path, url: str, transport: httpx.AsyncBaseTransport, owners: dict[int, str]
) -> Instance:
    group = FakeGroup(url, dict(owners))
    backend = FakeBackend()
    app = FastAPI()
    app.include_router(router)
    app.state.settings = Settings(data_dir=tmp_path / url.rsplit(":", 1)[1])
    app.state.recommender = backend
    app.state.key_store = store()
    owners_lookup = PartitionOwners(group, table="topk", partitions=PARTITIONS, own_url=url)
    client = httpx.AsyncClient(transport=transport)
    app.state.routing = UserRouting(owners_lookup, client, instance_id=f"instance@{url}", timeout_s=1.0)
    return Instance(group, backend, app, KeyedClient(app, "recommender"))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Instance, Instance]:
    """Instances A (partition 0) and B (partitions 1, 2); each forwards to the other in-process."""
    peers: dict[str, FastAPI] = {}

    class ToPeer(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
            return await httpx.ASGITransport(app=peers[base]).handle_async_request(request)

    a = _instance(tmp_path, URL_A, ToPeer(), ASSIGNMENT)
    b = _instance(tmp_path, URL_B, ToPeer(), ASSIGNMENT)
    peers.update({URL_A: a.app, URL_B: b.app})
    return a, b


def _learn(instance: Instance, user: str) -> None:
    items = [item.item_id for item in CATALOGUE.items if "horror" in item.genres][:2]
    instance.backend.engine.on_interaction(Interaction(user, items[0], "like", 1), shard=0)


def test_the_partition_is_the_commands_topics_and_not_the_json_table_key() -> None:
    # Faust's key_store would hash the changelog's JSON key; the state is written from the
    # partition of the raw-keyed command. They disagree for most users: routing uses the latter.
    group = FakeGroup(URL_A, ASSIGNMENT)
    owners = PartitionOwners(group, table="topk", partitions=PARTITIONS, own_url=URL_A)
    users = [f"u-{i}" for i in range(60)]
    assert [owners.partition_of(u) for u in users] == [_partition(u) for u in users]
    as_json = [_partition(json.dumps(u)) for u in users]
    assert as_json != [owners.partition_of(u) for u in users]


def test_each_instance_answers_its_own_users_and_forwards_the_others(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    [on_a] = _users_on({0}, 1)
    on_b = _users_on({1, 2}, 2)
    _learn(a, on_a)
    for user in on_b:
        _learn(b, user)
    for user, owner, url in [(on_a, a, URL_A), *[(u, b, URL_B) for u in on_b]]:
        answers = [instance.client.get(f"/recommendations/{user}", params={"k": 5}) for instance in (a, b)]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert answer.headers[SERVED_BY_HEADER] == url
            assert answer.json()["source"] == "table"
        stored = owner.backend.engine.tables.topk[user]["recommendation_id"]
        assert {answer.json()["recommendation_id"] for answer in answers} == {stored}
        profiles = [instance.client.get(f"/users/{user}/profile").json() for instance in (a, b)]
        assert profiles[0] == profiles[1] and profiles[0]["counts"] == {"like": 1}
    # Each served list was recorded once, by the owner only.
    assert [rec.user_id for rec in a.backend.served] == [on_a, on_a]
    assert sorted(rec.user_id for rec in b.backend.served) == sorted(on_b * 2)


def test_forwarded_answers_keep_the_owners_status_and_query(pair: tuple[Instance, Instance]) -> None:
    a, _b = pair
    [user] = _users_on({1}, 1)
    missing = a.client.get(f"/users/{user}/profile")
    assert missing.status_code == 404 and missing.headers[SERVED_BY_HEADER] == URL_B
    assert user in missing.json()["detail"]
    bad = a.client.get(f"/recommendations/{user}", params={"genre": "opera"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "genre"]
    sized = a.client.get(f"/recommendations/{user}", params={"k": 3, "genre": "horror"})
    assert sized.status_code == 200 and len(sized.json()["items"]) == 3
    assert all("horror" in item["genres"] for item in sized.json()["items"])


def test_the_callers_key_is_checked_before_and_after_forwarding(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    [user] = _users_on({2}, 1)
    assert a.client.request("GET", f"/recommendations/{user}", role=None).status_code == 401
    forwarded = a.client.request("GET", f"/recommendations/{user}", role=Role.OPERATOR)
    assert forwarded.status_code == 200 and forwarded.headers[SERVED_BY_HEADER] == URL_B
    # The owner authorises the forwarded request with the caller's key, not a key of its own:
    # an owner that does not know the key refuses it, and the caller sees that refusal.
    b.app.state.key_store = KeyStore([])
    assert a.client.request("GET", f"/recommendations/{user}", role=Role.OPERATOR).status_code == 401


def test_a_rebalance_in_progress_is_a_503_with_its_reason(pair: tuple[Instance, Instance]) -> None:
    a, _b = pair
    a.group.rebalancing = True
    [user] = _users_on({0}, 1)
    answer = a.client.get(f"/recommendations/{user}")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "rebalance in progress" in answer.json()["detail"]
    a.group.rebalancing = False
    a.group.tables.recovery.completed.clear()
    assert a.client.get(f"/users/{user}/profile").status_code == 503
    a.group.tables.recovery.completed.set()
    assert a.client.get(f"/users/{user}/profile").status_code == 404


def test_an_unreachable_owner_is_a_503_naming_it(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    a = _instance(tmp_path, URL_A, httpx.MockTransport(refuse), ASSIGNMENT)
    [user] = _users_on({1}, 1)
    answer = a.client.get(f"/recommendations/{user}")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert URL_B in answer.json()["detail"] and "unreachable" in answer.json()["detail"]


def test_a_forwarded_request_is_never_forwarded_again(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    a = _instance(tmp_path, URL_A, httpx.MockTransport(record), ASSIGNMENT)
    [user] = _users_on({2}, 1)
    answer = a.client.get(f"/recommendations/{user}", headers={HOP_HEADER: "instance@elsewhere"})
    assert answer.status_code == 503 and "assignment is changing" in answer.json()["detail"]
    assert sent == []
    # Without the hop header it is forwarded, with the caller's key and the hop header set.
    assert a.client.get(f"/recommendations/{user}", params={"k": 2}).status_code == 200
    [request] = sent
    assert request.url == httpx.URL(f"{URL_B}/recommendations/{user}?k=2")
    assert request.headers[HOP_HEADER] == f"instance@{URL_A}"
    assert request.headers["x-api-key"] == keys.key(Role.VIEWER)


def test_a_partition_nobody_owns_is_a_503(tmp_path: Path) -> None:
    a = _instance(tmp_path, URL_A, httpx.MockTransport(lambda r: httpx.Response(500)), {0: URL_A, 1: URL_B})
    [user] = _users_on({2}, 1)
    answer = a.client.get(f"/recommendations/{user}")
    assert answer.status_code == 503 and "no member of the group owns partition 2" in answer.json()["detail"]


def test_canonical_url_is_the_instances_own_http_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(data_dir=tmp_path, http_host="127.0.0.1", http_port=8105).canonical_url == (
        "http://127.0.0.1:8105"
    )
    monkeypatch.setattr("socket.gethostname", lambda: "box-7")
    assert (
        Settings(data_dir=tmp_path, http_host="0.0.0.0", http_port=8005).canonical_url == "http://box-7:8005"
    )
    monkeypatch.setenv("RECOMMENDER_ADVERTISED_HOST", "rec-2.internal")
    monkeypatch.setenv("RECOMMENDER_HTTP_PORT", "8205")
    assert Settings(data_dir=tmp_path).canonical_url == "http://rec-2.internal:8205"
    assert Settings(data_dir=tmp_path, advertised_host="::1").canonical_url == "http://[::1]:8205"


def test_stack_scaled_instances_advertise_distinct_canonical_urls(tmp_path: Path) -> None:
    # `stack scale recommender N` gives instance i the HTTP host and port below (see
    # stack.start_service); the canonical URL follows them, so no two members collide in
    # Faust's URL-keyed assignment map.
    from constellation import stack

    spec = stack.SERVICE_BY_NAME["recommender"]
    ports = [stack.instance_port(spec, n) for n in (1, 2, 3)]
    urls = [Settings(data_dir=tmp_path, http_host=stack.HOST, http_port=port).canonical_url for port in ports]
    assert len(set(urls)) == 3
    assert [url.rsplit(":", 1)[1] for url in urls] == [str(spec.port + 100 * n) for n in range(3)]
