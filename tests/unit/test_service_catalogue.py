"""Everything that lists the services agrees with the service catalogue (schemas/services.yaml).

Generated files (the Prometheus scrape configs, the README's "Services and ports" table)
must be what ``python -m constellation catalogue write`` writes; docker-compose.yml and the
local stack are checked against the catalogue entry by entry. Each failure says the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from constellation import catalogue as generated
from constellation import stack
from mlops_platform.service_catalogue import ServiceCatalogue, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
WRITE = "run `python -m constellation catalogue write`"


@pytest.fixture(scope="module")
def catalogue() -> ServiceCatalogue:
    return generated.load(ROOT / "schemas")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


# --------------------------------------------------------------------------- generated files


@pytest.mark.parametrize(
    "path",
    ["deploy/prometheus/prometheus.yml", "deploy/prometheus/prometheus.local.yml", "README.md"],
)
def test_generated_file_is_up_to_date(catalogue: ServiceCatalogue, path: str) -> None:
    expected = generated.generated_files(catalogue, ROOT)[ROOT / path]
    assert (ROOT / path).read_text() == expected, f"{path} is stale: {WRITE}"


def test_every_service_has_one_scrape_job_on_its_port(catalogue: ServiceCatalogue) -> None:
    for variant, host in ((generated.COMPOSE_PROMETHEUS, None), (generated.LOCAL_PROMETHEUS, "127.0.0.1")):
        config = yaml.safe_load(generated.prometheus_config(catalogue, variant))
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        for spec in catalogue:
            [static] = jobs[spec.name]["static_configs"]
            assert static["targets"] == [f"{host or spec.name}:{spec.port}"], variant.file
            assert static["labels"] == {"tier": "service"}


def test_the_readme_table_has_a_row_per_service(catalogue: ServiceCatalogue) -> None:
    rows = generated.readme_table(catalogue).splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == [str(spec.port) for spec in catalogue]
    assert all(
        f"[{spec.name}](services/{spec.name}/README.md)" in row
        for spec, row in zip(catalogue, rows, strict=True)
    )


def test_the_readme_table_needs_its_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        generated.with_readme_table("# no table here\n", "| t |\n")
    text = f"before\n{generated.README_BEGIN}\nold\n{generated.README_END}\nafter\n"
    assert generated.with_readme_table(text, "new\n") == (
        f"before\n{generated.README_BEGIN}\nnew\n{generated.README_END}\nafter\n"
    )


def test_write_then_check_finds_nothing_stale(catalogue: ServiceCatalogue, tmp_path: Path) -> None:
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    (tmp_path / "README.md").write_text(f"{generated.README_BEGIN}\n{generated.README_END}\n")
    assert len(generated.stale_files(catalogue, tmp_path)) == 3
    generated.write(catalogue, tmp_path)
    assert generated.stale_files(catalogue, tmp_path) == []


# --------------------------------------------------------------------------- docker-compose


def test_compose_runs_every_catalogue_service_as_the_catalogue_says(
    catalogue: ServiceCatalogue, compose: dict[str, Any]
) -> None:
    problems = generated.compose_problems(compose, catalogue)
    assert not problems, "docker-compose.yml disagrees with schemas/services.yaml:\n" + "\n".join(problems)


def test_compose_drift_is_reported(catalogue: ServiceCatalogue, compose: dict[str, Any]) -> None:
    services = dict(compose["services"])
    first = catalogue.services[0]
    services[first.name] = {**services[first.name], "command": ["python", "-m", "elsewhere"]}
    services["shadow"] = dict(services[first.name])
    del services[catalogue.services[-1].name]
    problems = generated.compose_problems({"services": services}, catalogue)
    assert f"docker-compose.yml: {first.name} should run `python -m {first.module}`" in problems
    assert "docker-compose.yml runs shadow, which is not in the service catalogue" in problems
    assert f"docker-compose.yml lacks the service {catalogue.services[-1].name}" in problems


# --------------------------------------------------------------------------- the local stack


def test_the_local_stack_runs_the_catalogue(catalogue: ServiceCatalogue) -> None:
    assert [(s.name, s.module, s.env_prefix, s.needs_model) for s in stack.SERVICES] == [
        (s.name, s.module, s.env_prefix, s.needs_model) for s in catalogue
    ]


def test_a_port_variable_moves_a_service_and_its_extra_instances(
    catalogue: ServiceCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    for spec in catalogue:
        monkeypatch.delenv(f"{spec.env_prefix}HTTP_PORT", raising=False)
    monkeypatch.setenv("PREDICTOR_HTTP_PORT", "18002")
    services = {spec.name: spec for spec in stack.catalogue_services(ROOT / "schemas")}
    assert services["predictor"] == dataclasses.replace(catalogue.get("predictor"), port=18002)
    assert services["ingest"].port == catalogue.get("ingest").port
    assert [stack.instance_port(services["predictor"], n) for n in (1, 2, 3)] == [18002, 18102, 18202]


def test_every_service_module_has_an_entry_point(catalogue: ServiceCatalogue) -> None:
    missing: list[ServiceSpec] = [spec for spec in catalogue if not stack.service_available(spec)]
    assert not missing, f"no `python -m` entry point: {[spec.module for spec in missing]}"


# --------------------------------------------------------------------------- topic bindings in code
#
# Reserved: the check that each service's topic bindings declared in code
# (ServiceSettings.bindings()) match its consumes / produces / groups / dead_letters entries
# here is added separately. It belongs in this section.
