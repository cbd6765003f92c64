"""API keys and roles: 401 without or with unknown credentials, 403 with the wrong role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from mlops_platform.auth import KeyStore, Operator, Principal, Producer, Role, Viewer, digest_of, main
from mlops_platform.errors import ContractError

KEYS = {"viewer": "mk_viewer_key", "producer": "mk_producer_key", "operator": "mk_operator_key"}


def entries() -> list[dict[str, str]]:
    return [{"name": f"{role}-1", "role": role, "digest": digest_of(key)} for role, key in KEYS.items()]


def build(store: KeyStore) -> TestClient:
    router = APIRouter()

    @router.get("/things")
    async def read(principal: Viewer) -> dict[str, str]:
        return {"who": principal.identity}

    @router.post("/events")
    async def write(principal: Producer) -> dict[str, str]:
        return {"who": principal.identity}

    @router.post("/rollback")
    async def act(principal: Operator) -> dict[str, str]:
        return {"who": principal.identity}

    app = FastAPI()
    app.state.key_store = store
    app.include_router(router)
    return TestClient(app)


@pytest.fixture
def client() -> TestClient:
    return build(KeyStore.load(entries(), None))


def test_without_credentials_every_protected_route_answers_401(client: TestClient) -> None:
    for method, path in [("GET", "/things"), ("POST", "/events"), ("POST", "/rollback")]:
        response = client.request(method, path)
        assert response.status_code == 401
        assert "WWW-Authenticate" in response.headers


def test_an_unknown_key_is_401_with_the_same_answer_for_any_key(client: TestClient) -> None:
    answers = {
        client.get("/things", headers={"X-API-Key": key}).text
        for key in ("nope", "mk_viewer_kez", "mk_operator_key ")
    }
    assert len(answers) == 1 and "credentials" in answers.pop()


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("viewer", "/events", 403),
        ("viewer", "/rollback", 403),
        ("producer", "/rollback", 403),
        ("operator", "/events", 403),
        ("producer", "/events", 200),
        ("operator", "/rollback", 200),
    ],
)
def test_roles_decide(client: TestClient, role: str, path: str, status: int) -> None:
    response = client.post(path, headers={"X-API-Key": KEYS[role]})
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"who": f"{role}:{role}-1"}


def test_every_role_reads_and_bearer_tokens_work(client: TestClient) -> None:
    for role, key in KEYS.items():
        response = client.get("/things", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and response.json()["who"] == f"{role}:{role}-1"


def test_no_configured_keys_means_nobody_gets_in() -> None:
    client = build(KeyStore([]))
    assert client.get("/things", headers={"X-API-Key": KEYS["operator"]}).status_code == 401


def test_keys_load_from_a_file_and_plain_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": entries()}))
    store = KeyStore.load(None, path)
    assert store.authenticate(KEYS["operator"]) == Principal("operator-1", Role.OPERATOR)
    with pytest.raises(ContractError, match="digest"):
        KeyStore.load([{"name": "x", "role": "viewer", "digest": "mk_plain_secret"}], None)
    with pytest.raises(ContractError, match="bad API key entry"):
        KeyStore.load([{"name": "x", "role": "admin", "digest": digest_of("k")}], None)


def test_generate_prints_a_key_whose_digest_is_the_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "ops", "operator"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["entry"]["digest"] == digest_of(printed["key"])
    assert KeyStore.load([printed["entry"]], None).authenticate(printed["key"]) is not None


def test_openapi_shows_both_security_schemes(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"apiKey", "http"}
