"""Loading ``services.yaml``: it must agree with the topic catalogue beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlops_platform.errors import ContractError
from mlops_platform.service_catalogue import load_services
from mlops_platform.settings import PlatformSettings

SCHEMAS = PlatformSettings().schemas_dir


def copy_with(tmp_path: Path, services_yaml: str) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    (target / "services.yaml").write_text(services_yaml)
    return target


def test_the_shipped_catalogue_loads_in_start_order() -> None:
    catalogue = load_services(SCHEMAS)
    assert catalogue.names()[0] == "ingest"
    assert catalogue.get("predictor").needs_model
    assert catalogue.producers_of("prediction.request") == ["ingest"]
    assert "drift-detector" in catalogue.consumers_of("prediction.completed")


def test_unknown_topics_are_refused(tmp_path: Path) -> None:
    schemas = copy_with(
        tmp_path,
        "services:\n  x:\n    module: x\n    env_prefix: X_\n    port: 9001\n    produces: [no.such.topic]\n",
    )
    with pytest.raises(ContractError, match=r"no\.such\.topic"):
        load_services(schemas)


def test_two_services_on_one_port_are_refused(tmp_path: Path) -> None:
    entry = "    module: {0}\n    env_prefix: {0}_\n    port: 9001\n"
    schemas = copy_with(tmp_path, "services:\n  a:\n" + entry.format("a") + "  b:\n" + entry.format("b"))
    with pytest.raises(ContractError, match="share port 9001"):
        load_services(schemas)


def test_instance_groups_and_ports() -> None:
    predictor = load_services(SCHEMAS).get("predictor")
    assert predictor.owns_group("predictor")
    assert predictor.owns_group("predictor-model-events-host-1a2b3c")
    assert not predictor.owns_group("predictor-model-events-")
    assert not predictor.owns_group("drift-detector")
    assert predictor.instance_port(2) == predictor.port + 200
