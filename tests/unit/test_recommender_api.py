from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from recommender.api import router
from recommender.config import Settings
from recommender.engine import Click, EngineConfig, Interaction, RecList, Recommender, StateTables
from recsys_data import load_catalogue
from tests.support.keys import KeyedClient, store

CATALOGUE = load_catalogue()


class FakeBackend:
    def __init__(self) -> None:
        self.engine = Recommender(
            CATALOGUE, StateTables(), EngineConfig(arms=(("hybrid", 0.5), ("content", 0.5)))
        )
        self.served: list[RecList] = []

    async def record_served(self, rec: RecList) -> None:
        self.served.append(rec)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend, tmp_path: Path) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.state.settings = Settings(data_dir=tmp_path, max_k=30)
    app.state.recommender = backend
    app.state.key_store = store()
    return KeyedClient(app, "recommender")


def _horror(n: int) -> list[str]:
    return [item.item_id for item in CATALOGUE.items if "horror" in item.genres][:n]


def test_unknown_user_gets_the_fallback(client: TestClient, backend: FakeBackend) -> None:
    body = client.get("/recommendations/nobody").json()
    assert body["source"] == "fallback" and body["strategy"] == "popular" and body["trigger"] == "cold_start"
    assert len(body["items"]) == 10  # the default k
    first = body["items"][0]
    assert first["title"] and first["category"] and first["genres"]
    assert [rec.user_id for rec in backend.served] == ["nobody"]


def test_known_user_gets_the_stored_top_k(client: TestClient, backend: FakeBackend) -> None:
    items = _horror(2)
    backend.engine.on_interaction(Interaction("u", items[0], "like", 1), shard=0)
    stored = backend.engine.tables.topk["u"]
    body = client.get("/recommendations/u", params={"k": 4}).json()
    assert body["source"] == "table"
    assert body["recommendation_id"] == stored["recommendation_id"]
    assert [item["item_id"] for item in body["items"]] == [i for i, _ in stored["items"][:4]]
    horror_only = client.get("/recommendations/u", params={"k": 5, "genre": "horror"}).json()
    assert all("horror" in item["genres"] for item in horror_only["items"])


def test_k_is_bounded(client: TestClient) -> None:
    assert len(client.get("/recommendations/x", params={"k": 500}).json()["items"]) == 30
    assert client.get("/recommendations/x", params={"k": 0}).status_code == 422
    assert client.get("/recommendations/x", params={"genre": "opera"}).status_code == 422
    assert client.get("/recommendations/x", params={"category": "vinyl"}).status_code == 422


def test_an_unknown_genre_is_a_422_shaped_as_documented(client: TestClient) -> None:
    # Found by the OpenAPI fuzzing: the 422 body was a string, not HTTPValidationError's list.
    [error] = client.get("/recommendations/x", params={"genre": ""}).json()["detail"]
    assert error["loc"] == ["query", "genre"] and "unknown genre" in error["msg"]
    [error] = client.get("/recommendations/x", params={"category": "vinyl"}).json()["detail"]
    assert error["loc"] == ["query", "category"]


def test_profile(client: TestClient, backend: FakeBackend) -> None:
    assert client.get("/users/nobody/profile").status_code == 404
    backend.engine.on_interaction(Interaction("u", _horror(1)[0], "purchase", 7), shard=0)
    body = client.get("/users/u/profile").json()
    assert body["genres"]["horror"] == pytest.approx(0.1)
    assert body["counts"] == {"purchase": 1} and body["updated_at"] == 7
    assert body["strategy"] in {"hybrid", "content"}


def test_strategies(client: TestClient, backend: FakeBackend) -> None:
    rec = backend.engine.on_interaction(Interaction("u", _horror(1)[0], "like", 1), shard=0).updated
    assert rec is not None
    backend.engine.on_click(Click("u", rec.item_ids[0], rec.recommendation_id, rec.strategy, 0, 2), shard=0)
    body = {s["strategy"]: s for s in client.get("/strategies").json()["strategies"]}
    assert set(body) == {"hybrid", "content", "popular"}
    assert body[rec.strategy]["clicks"] == 1 and body[rec.strategy]["impressions"] == 10
    assert body[rec.strategy]["ctr"] == pytest.approx(0.1)
    assert body["hybrid"]["share"] == pytest.approx(0.5) and body["popular"]["share"] == 0


def test_items(client: TestClient) -> None:
    body = client.get("/items/item-00010").json()
    assert body["item_id"] == "item-00010" and len(body["similar"]) == 10
    assert client.get("/items/nope").status_code == 404


def test_not_running_is_503(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.settings = Settings(data_dir=tmp_path)
    app.state.key_store = store()
    assert KeyedClient(app, "recommender").get("/recommendations/u").status_code == 503


def test_settings_defaults_and_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    monkeypatch.setenv("RECOMMENDER_APP_ID", "rec-9")
    monkeypatch.setenv("RECOMMENDER_AB_ARMS", '{"hybrid": 0.5, "content": 0.5}')
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:9092, b:9093")
    settings = Settings()
    assert settings.service_name == "recommender" and settings.http_port == 8005
    assert settings.app_id == "rec-9"
    assert settings.data_dir == tmp_path / "tmp" / "recommender"
    assert settings.faust_datadir.parent == settings.data_dir
    assert settings.broker_urls == ["kafka://a:9092", "kafka://b:9093"]
    assert settings.engine_config().arms == (("hybrid", 0.5), ("content", 0.5))
    assert settings.dead_letter_topic == "dlq.recommender"
