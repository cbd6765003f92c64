"""Every service's declared topic bindings match the service catalogue (``schemas/services.yaml``).

The catalogue is what the stack, Prometheus, compose, the README and (later) the broker's
ACLs are built from; a service that reads or writes a topic the catalogue does not list
for it fails here, before it fails in production.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from mlops_platform.contracts import Topic
from mlops_platform.service_catalogue import ServiceSpec, load_services
from mlops_platform.settings import PlatformSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = load_services(PlatformSettings().schemas_dir)
TOPIC_REFERENCE = re.compile(r"\bTopic\.([A-Z_]+)\b")


def settings_of(spec: ServiceSpec) -> ServiceSettings:
    settings_class = importlib.import_module(f"{spec.module}.config").Settings
    settings: ServiceSettings = settings_class()
    return settings


def source_dir(spec: ServiceSpec) -> Path:
    return ROOT / "services" / spec.name / "src" / spec.module


@pytest.mark.parametrize("spec", CATALOGUE.services, ids=CATALOGUE.names())
def test_declared_bindings_are_the_catalogue_entry(spec: ServiceSpec) -> None:
    bindings = settings_of(spec).bindings()
    assert bindings.contracts_consumed() == set(spec.consumes), (
        f"{spec.name} consumes {sorted(bindings.contracts_consumed())} in code, "
        f"{sorted(spec.consumes)} in {CATALOGUE.path.name}"
    )
    assert bindings.contracts_produced() == set(spec.produces), (
        f"{spec.name} produces {sorted(bindings.contracts_produced())} in code, "
        f"{sorted(spec.produces)} in {CATALOGUE.path.name}"
    )


@pytest.mark.parametrize("spec", CATALOGUE.services, ids=CATALOGUE.names())
def test_default_bindings_name_the_catalogue_topics(spec: ServiceSpec) -> None:
    bindings = settings_of(spec).bindings()
    for binding in (*bindings.consumes, *bindings.produces):
        assert binding.topic == binding.contract.value, (
            f"{spec.name}: by default {binding.contract.value} is bound to {binding.topic!r}; "
            "private topics are for tests and replays only"
        )


@pytest.mark.parametrize("spec", CATALOGUE.services, ids=CATALOGUE.names())
def test_every_topic_the_code_names_is_declared(spec: ServiceSpec) -> None:
    """A topic referenced anywhere in a service's code must be among its declared bindings."""
    bindings = settings_of(spec).bindings()
    declared = bindings.contracts_consumed() | bindings.contracts_produced()
    referenced: dict[str, list[str]] = {}
    for path in sorted(source_dir(spec).rglob("*.py")):
        for name in TOPIC_REFERENCE.findall(path.read_text()):
            referenced.setdefault(Topic[name].value, []).append(path.name)
    undeclared = {topic: files for topic, files in referenced.items() if topic not in declared}
    assert not undeclared, f"{spec.name} names topics it does not declare: {undeclared}"


@pytest.mark.parametrize("spec", CATALOGUE.services, ids=CATALOGUE.names())
def test_identity_matches_the_catalogue(spec: ServiceSpec) -> None:
    settings = settings_of(spec)
    assert settings.service_name == spec.name
    assert settings.http_port == spec.port
    assert type(settings).model_config.get("env_prefix") == spec.env_prefix
    if spec.consumes and spec.internal_topic_prefix is None:
        assert spec.owns_group(settings.consumer_group), (
            f"{spec.name} joins group {settings.consumer_group!r}, not one of {spec.groups}"
        )


def test_every_service_folder_is_in_the_catalogue() -> None:
    folders = {path.name for path in (ROOT / "services").iterdir() if (path / "pyproject.toml").is_file()}
    assert folders == set(CATALOGUE.names())


def test_every_consumed_topic_has_a_producer_or_an_outside_source() -> None:
    # prediction.request, feedback and the business topics come from ingest or outside producers;
    # nothing a service consumes may be produced by nobody at all unless an outside producer owns it.
    produced = {topic for spec in CATALOGUE.services for topic in spec.produces}
    consumed = {topic for spec in CATALOGUE.services for topic in spec.consumes}
    assert consumed <= produced
