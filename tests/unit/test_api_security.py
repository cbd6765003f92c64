"""Every operation of every service's OpenAPI document needs the right API key.

The documents come from the services' real apps (``tests.support.service_apps``), so a
route added later without a role fails here. Reads need any key (viewer and up);
state-changing operations answer 401 without credentials, 403 with a viewer key (and
with the other writing role), and work with the role they need. ``/health`` and
``/ready`` stay open; ``/metrics``, ``/docs`` and ``/openapi.json`` are not operations
of the document and are open too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlops_platform.auth import Role
from tests.support import keys
from tests.support.service_apps import OPEN_PATHS, SERVICES, ServiceApp, build_all

WRITES = {"post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServiceApp]:
    return build_all(tmp_path_factory.mktemp("apps"))


@pytest.fixture(scope="module")
def clients(apps: dict[str, ServiceApp]) -> Iterator[dict[str, TestClient]]:
    yield {name: TestClient(service.app) for name, service in apps.items()}


def operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    document = app.openapi()
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "head", *WRITES}
    ]


def call(service: ServiceApp, client: TestClient, method: str, path: str, role: Role | None) -> Any:
    body = service.examples.get((method, path))
    kwargs: dict[str, Any] = {"headers": keys.headers(role)}
    if body is not None:
        kwargs["json"] = body
    return client.request(method.upper(), service.url(path), **kwargs)


def test_every_service_is_walked(apps: dict[str, ServiceApp]) -> None:
    assert set(apps) == set(SERVICES)
    for service in apps.values():
        documented = {(m, p) for m, p, _ in operations(service.app) if m in WRITES}
        # Every write has an example request, so a new one cannot be skipped silently.
        assert documented == set(service.examples), service.name


@pytest.mark.parametrize("name", SERVICES)
def test_every_protected_operation_declares_the_security_scheme(
    apps: dict[str, ServiceApp], name: str
) -> None:
    app = apps[name].app
    schemes = app.openapi()["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"apiKey", "http"}
    for method, path, operation in operations(app):
        if path in OPEN_PATHS:
            assert "security" not in operation, f"{name} {method} {path}"
        else:
            assert operation.get("security"), f"{name} {method} {path} has no security requirement"


@pytest.mark.parametrize("name", SERVICES)
def test_reads_need_a_key_and_every_role_reads(
    apps: dict[str, ServiceApp], clients: dict[str, TestClient], name: str
) -> None:
    service, client = apps[name], clients[name]
    for method, path, _ in operations(service.app):
        if method in WRITES:
            continue
        if path in OPEN_PATHS:
            assert call(service, client, method, path, None).status_code in (200, 503), path
            continue
        anonymous = call(service, client, method, path, None)
        assert anonymous.status_code == 401, f"{name} {method} {path}: {anonymous.status_code}"
        assert anonymous.headers["WWW-Authenticate"]
        for role in Role:
            answer = call(service, client, method, path, role)
            assert answer.status_code not in (401, 403) and answer.status_code < 500, (
                f"{name} {method} {path} as {role}: {answer.status_code} {answer.text[:200]}"
            )


@pytest.mark.parametrize("name", SERVICES)
def test_writes_answer_401_then_403_then_work(
    apps: dict[str, ServiceApp], clients: dict[str, TestClient], name: str
) -> None:
    service, client = apps[name], clients[name]
    writes = [(m, p) for m, p, _ in operations(service.app) if m in WRITES]
    for method, path in writes:
        needed = keys.needed_role(name, method, path)
        assert needed is not Role.VIEWER
        anonymous = call(service, client, method, path, None)
        assert anonymous.status_code == 401, f"{name} {method} {path}: {anonymous.status_code}"
        assert call(service, client, method, path, Role.VIEWER).status_code == 403, f"{name} {method} {path}"
        other = Role.OPERATOR if needed is Role.PRODUCER else Role.PRODUCER
        assert call(service, client, method, path, other).status_code == 403, f"{name} {method} {path}"
        if service.prepare is not None:
            service.prepare()
        answer = call(service, client, method, path, needed)
        assert 200 <= answer.status_code < 300, f"{name} {method} {path} as {needed}: {answer.text[:300]}"


def test_an_unknown_key_and_a_wrong_role_say_nothing_about_other_keys(clients: dict[str, TestClient]) -> None:
    client = clients["auto_responder"]
    unknown = client.post("/actions/rollback", headers={"X-API-Key": "mk_" + "x" * 43})
    assert unknown.status_code == 401 and unknown.json() == {"detail": "invalid credentials"}
    wrong = client.post("/actions/rollback", headers=keys.headers(Role.VIEWER))
    assert wrong.status_code == 403 and keys.key(Role.OPERATOR) not in wrong.text
    assert "test-operator" not in wrong.text


def test_docs_and_metrics_stay_open(clients: dict[str, TestClient]) -> None:
    for client in clients.values():
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_bearer_tokens_work_like_api_key_headers(clients: dict[str, TestClient], tmp_path: Path) -> None:
    response = clients["alerter"].get(
        "/routing", headers={"Authorization": f"Bearer {keys.key(Role.VIEWER)}"}
    )
    assert response.status_code == 200
