"""schemathesis over every service's OpenAPI document, authenticated: no 5xx, responses match their schema.

Each service's real app (``tests.support.service_apps``: the service's ``build_app`` with
fakes for Kafka, the registry and MLflow) is fuzzed in-process: for every operation,
``FUZZ_MAX_EXAMPLES`` generated requests (default 25; valid and invalid bodies, query and
path values), each sent with the key of the role the operation needs. Checks: no server
error, and every response conforms to the schema its operation documents (and its content
type). The number of cases run is printed at the end of the session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.fuzz.conftest import CASES, OPERATIONS
from tests.support import keys
from tests.support.service_apps import SERVICES, ServiceApp, build_all

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]

# Built at collection: schemathesis parametrizes each test by the operations of its document.
_APPS: dict[str, ServiceApp] = build_all(Path(tempfile.mkdtemp(prefix="fuzz-apps-")))


def _schema(name: str) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", _APPS[name].app)


def _fuzz(name: str, case: Any) -> None:
    role = keys.needed_role(name, case.method, case.path)
    CASES[name] += 1
    OPERATIONS.setdefault(name, set()).add(case.operation.label)
    case.call_and_validate(headers=keys.headers(role), checks=CHECKS)


_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def _test_of(name: str) -> Any:
    """``test_<service>``: one generated test per operation of the service's document."""

    def test(case: Any) -> None:
        _fuzz(name, case)

    test.__name__ = f"test_{name}"
    return _schema(name).parametrize()(_SETTINGS(test))


for _name in SERVICES:
    globals()[f"test_{_name}"] = _test_of(_name)


def test_every_service_is_fuzzed() -> None:
    assert {"ingest", "predictor", "drift_detector", "auto_responder", "recommender", "alerter"} == set(
        SERVICES
    )
