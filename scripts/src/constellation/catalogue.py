"""Files derived from the service catalogue (``schemas/services.yaml``), and the check they agree.

    python -m constellation catalogue write    rewrite every generated file from the catalogue
    python -m constellation catalogue check    exit 1 when a generated file is stale or
                                               docker-compose.yml disagrees with the catalogue
    python -m constellation catalogue readme   print the README's "Services and ports" table

Generated (whole files or a marked block, compared to the letter by ``check`` and by
``tests/unit/test_service_catalogue.py``):

* ``deploy/prometheus/prometheus.yml`` (compose) and ``prometheus.local.yml`` (the local
  stack renders it further, see ``constellation.stack``): one scrape job per service;
* the README's "Services and ports" table, between its two marker comments.

Checked: ``docker-compose.yml`` keeps hand-written per-service settings (volumes, channels),
so it is not generated; every catalogue service must be there with its image, module, port
and readiness probe, and no other service may be built from the services' Dockerfile.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from constellation import ROOT
from mlops_platform.service_catalogue import ServiceCatalogue, ServiceSpec, load_services

SCHEMAS = ROOT / "schemas"
PROMETHEUS = ROOT / "deploy" / "prometheus"
README = ROOT / "README.md"
COMPOSE = ROOT / "docker-compose.yml"
SERVICE_DOCKERFILE = "deploy/docker/Dockerfile"

GENERATED_NOTE = (
    "# Generated from schemas/services.yaml by `python -m constellation catalogue write`\n"
    "# (scripts/src/constellation/catalogue.py): edit those, not this file.\n"
)
README_BEGIN = (
    "<!-- generated from schemas/services.yaml by `python -m constellation catalogue write`: "
    "edit the catalogue, not this table -->"
)
README_END = "<!-- end of the generated services table -->"


def load(schemas_dir: Path = SCHEMAS) -> ServiceCatalogue:
    """The repository's service catalogue."""
    return load_services(schemas_dir)


# --------------------------------------------------------------------------- prometheus


@dataclass(frozen=True)
class PrometheusVariant:
    """What differs between the compose and the local scrape config."""

    file: str
    header: str
    globals: str
    alertmanager: str
    #: ``host:port`` a service is scraped at.
    service_host: str
    #: (job, target) of the infrastructure it scrapes.
    infra: tuple[tuple[str, str], ...]


COMPOSE_PROMETHEUS = PrometheusVariant(
    file="prometheus.yml",
    header="""\
# Prometheus for docker-compose: scrapes every service of the catalogue by its compose name
# and loads the same alert and recording rules as the local stack (rules/*.yml).
# The local stack uses prometheus.local.yml (loopback ports).
#
# Target labels: `job` is the service name and `tier` tells services from infrastructure.
# No target label is called `service`: the services' own metrics carry a `service` label
# (mlops_*), and a target label of that name would rename theirs to `exported_service`.
""",
    globals="""\
global:
  scrape_interval: 15s
  scrape_timeout: 10s
  evaluation_interval: 15s
  external_labels:
    stack: compose
""",
    alertmanager="alertmanager:9093",
    service_host="{name}:{port}",
    # Host figures (node exporter) and per-container figures (cAdvisor) beside the services' own.
    infra=(
        ("prometheus", "localhost:9090"),
        ("alertmanager", "alertmanager:9093"),
        ("node-exporter", "node-exporter:9100"),
        ("cadvisor", "cadvisor:8080"),
    ),
)

LOCAL_PROMETHEUS = PrometheusVariant(
    file="prometheus.local.yml",
    header="""\
# Prometheus for the local stack (python -m constellation stack): the services on loopback
# with their default ports, and the same rules as docker-compose (rules/*.yml).
#
# `python -m constellation stack up` renders this file into .stack/prometheus/prometheus.yml:
# the infrastructure ports follow the environment (PROMETHEUS_PORT, ALERTMANAGER_PORT,
# SCHEMA_REGISTRY_PORT, NODE_EXPORTER_PORT; the node exporter's job is left out when
# Debian's prometheus-node-exporter is not installed), and each service job reads its
# targets from a file the stack rewrites whenever it starts, scales or stops instances
# (file_sd), so every running instance is scraped and a crashed one shows as `up == 0`.
# Run as it is, this file scrapes one instance of each service on its default port.
#
# Target labels: `job` is the service name and `tier` tells services from infrastructure
# (never `service`, which the services' own metrics carry).
""",
    globals="""\
global:
  # Short intervals: the demo and the end-to-end tests want to see traffic within seconds.
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
  external_labels:
    stack: local
""",
    # 9093 is the Kafka controller's: the local Alertmanager listens 100 ports higher.
    alertmanager="127.0.0.1:9193",
    service_host="127.0.0.1:{port}",
    infra=(
        ("prometheus", "127.0.0.1:9090"),
        ("alertmanager", "127.0.0.1:9193"),
        ("schema-registry", "127.0.0.1:8081"),
        # Debian's prometheus-node-exporter, started by the stack (NODE_EXPORTER_PORT).
        ("node-exporter", "127.0.0.1:9100"),
    ),
)


def _scrape_job(name: str, target: str, tier: str) -> str:
    return (
        f"  - job_name: {name}\n"
        f"    static_configs:\n"
        f'      - targets: ["{target}"]\n'
        f"        labels: {{tier: {tier}}}\n"
    )


def prometheus_config(catalogue: ServiceCatalogue, variant: PrometheusVariant) -> str:
    """The scrape config: one job per catalogue service (in its order), then the infrastructure."""
    services = "".join(
        _scrape_job(spec.name, variant.service_host.format(name=spec.name, port=spec.port), "service")
        for spec in catalogue
    )
    infra = "".join(_scrape_job(name, target, "infra") for name, target in variant.infra)
    return (
        f"{variant.header}{GENERATED_NOTE}{variant.globals}\n"
        "rule_files:\n  - rules/*.yml\n\n"
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f'        - targets: ["{variant.alertmanager}"]\n\n'
        f"scrape_configs:\n{services}\n{infra}"
    )


# --------------------------------------------------------------------------- README


def _topics(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in names) or "—"


def readme_table(catalogue: ServiceCatalogue, root: Path = ROOT) -> str:
    """The README's "Services and ports" table (markdown), one row per service."""
    lines = ["| service | port | consumes | produces | what it does |", "|---|---|---|---|---|"]
    for spec in catalogue:
        guide = Path("services") / spec.name / "README.md"
        name = f"[{spec.name}]({guide.as_posix()})" if (root / guide).is_file() else spec.name
        lines.append(
            f"| {name} | {spec.port} | {_topics(spec.consumes)} | {_topics(spec.produces)} "
            f"| {spec.description} |"
        )
    return "\n".join(lines) + "\n"


def with_readme_table(text: str, table: str) -> str:
    """``text`` with the block between the README's markers replaced by ``table``."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"README.md lacks the markers of the services table:\n{README_BEGIN}\n{README_END}")
    return f"{text[: begin + len(README_BEGIN)]}\n{table}{text[end:]}"


# --------------------------------------------------------------------------- all generated files


def generated_files(catalogue: ServiceCatalogue, root: Path = ROOT) -> dict[Path, str]:
    """Every generated file and the content the catalogue asks for."""
    prometheus = root / "deploy" / "prometheus"
    readme = root / "README.md"
    return {
        prometheus / COMPOSE_PROMETHEUS.file: prometheus_config(catalogue, COMPOSE_PROMETHEUS),
        prometheus / LOCAL_PROMETHEUS.file: prometheus_config(catalogue, LOCAL_PROMETHEUS),
        readme: with_readme_table(readme.read_text(), readme_table(catalogue, root)),
    }


def stale_files(catalogue: ServiceCatalogue, root: Path = ROOT) -> list[Path]:
    """Generated files whose content is not what the catalogue asks for."""
    return [
        path
        for path, text in generated_files(catalogue, root).items()
        if not path.exists() or path.read_text() != text
    ]


# --------------------------------------------------------------------------- docker-compose


def _compose_service_problems(spec: ServiceSpec, service: Mapping[str, Any]) -> list[str]:
    where = f"docker-compose.yml: {spec.name}"
    port, prefix = spec.port, spec.env_prefix
    env = service.get("environment") or {}
    build = service.get("build") or {}
    probe = " ".join(str(part) for part in (service.get("healthcheck") or {}).get("test", []))
    checks = {
        f"be built from {SERVICE_DOCKERFILE}": build.get("dockerfile") == SERVICE_DOCKERFILE,
        f"build SERVICE={spec.name}": (build.get("args") or {}).get("SERVICE") == spec.name,
        f"run `python -m {spec.module}`": service.get("command") == ["python", "-m", spec.module],
        f"publish {port}:{port}": f"{port}:{port}" in service.get("ports", []),
        f"set {prefix}HTTP_PORT={port}": str(env.get(f"{prefix}HTTP_PORT")) == str(port),
        f"set HEALTH_PORT={port}": str(env.get("HEALTH_PORT")) == str(port),
        f"probe 127.0.0.1:{port}/ready": f"127.0.0.1:{port}/ready" in probe,
        # Its own Kafka principal (the ACLs are the catalogue's), its password from .env.
        f"authenticate as KAFKA_SASL_USERNAME={spec.name}": env.get("KAFKA_SASL_USERNAME") == spec.name,
        f"take KAFKA_SASL_PASSWORD from ${{{prefix}KAFKA_PASSWORD}}": str(
            env.get("KAFKA_SASL_PASSWORD", "")
        ).startswith(f"${{{prefix}KAFKA_PASSWORD"),
    }
    return [f"{where} should {what}" for what, ok in checks.items() if not ok]


def compose_problems(compose: Mapping[str, Any], catalogue: ServiceCatalogue) -> list[str]:
    """How ``docker-compose.yml`` (parsed) disagrees with the catalogue; empty when it agrees."""
    services: Mapping[str, Any] = compose.get("services") or {}
    problems: list[str] = []
    for spec in catalogue:
        if spec.name not in services:
            problems.append(f"docker-compose.yml lacks the service {spec.name}")
        else:
            problems += _compose_service_problems(spec, services[spec.name])
    known = set(catalogue.names())
    for name, service in services.items():
        long_running = service.get("restart") != "no"
        from_service_image = (service.get("build") or {}).get("dockerfile") == SERVICE_DOCKERFILE
        if long_running and from_service_image and name not in known:
            problems.append(f"docker-compose.yml runs {name}, which is not in the service catalogue")
    return problems


# --------------------------------------------------------------------------- command


def write(catalogue: ServiceCatalogue, root: Path = ROOT) -> list[Path]:
    """Rewrite the stale generated files; returns them."""
    stale = stale_files(catalogue, root)
    expected = generated_files(catalogue, root)
    for path in stale:
        path.write_text(expected[path])
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m constellation catalogue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("write", "check", "readme"))
    args = parser.parse_args(argv)
    catalogue = load()
    if args.command == "readme":
        print(readme_table(catalogue), end="")
        return 0
    if args.command == "write":
        for path in write(catalogue):
            print(f"wrote {path.relative_to(ROOT)}")
        problems = compose_problems(yaml.safe_load(COMPOSE.read_text()), catalogue)
        for problem in problems:
            print(f"edit by hand: {problem}", file=sys.stderr)
        return 1 if problems else 0
    problems = [
        f"{path.relative_to(ROOT)} is stale: run `python -m constellation catalogue write`"
        for path in stale_files(catalogue)
    ]
    problems += compose_problems(yaml.safe_load(COMPOSE.read_text()), catalogue)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"generated files and docker-compose.yml agree with {catalogue.path.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
