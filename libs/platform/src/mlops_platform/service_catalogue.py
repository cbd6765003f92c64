"""The service catalogue (``schemas/services.yaml``): every service, its port and its topics.

One file says which services exist and which topics each one reads and writes; the
local stack, the Prometheus targets, docker-compose and the README table are derived
from it or checked against it, and so are the topic bindings each service declares
in code (:meth:`mlops_platform.settings.ServiceSettings.bindings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from mlops_platform.contracts import load_catalogue
from mlops_platform.errors import ContractError

INSTANCE_PLACEHOLDER = "{instance}"


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the catalogue."""

    name: str
    module: str
    env_prefix: str
    port: int
    description: str
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    groups: tuple[str, ...]
    dead_letters: str | None = None
    needs_model: bool = False
    internal_topic_prefix: str | None = None

    def instance_port(self, index: int) -> int:
        """HTTP port of the ``index``-th instance (0 is the first); extra instances sit 100 apart."""
        return self.port + 100 * index

    def owns_group(self, group_id: str) -> bool:
        """True when ``group_id`` is one of the service's groups (``{instance}`` matches any suffix)."""
        for pattern in self.groups:
            if INSTANCE_PLACEHOLDER in pattern:
                prefix = pattern.split(INSTANCE_PLACEHOLDER, 1)[0]
                if group_id.startswith(prefix) and len(group_id) > len(prefix):
                    return True
            elif group_id == pattern:
                return True
        return False


@dataclass(frozen=True)
class ServiceCatalogue:
    """All services, in the order of the file (the order the stack starts them)."""

    path: Path
    services: tuple[ServiceSpec, ...]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.services)

    def names(self) -> list[str]:
        return [spec.name for spec in self.services]

    def get(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise ContractError(f"service {name!r} is not in the service catalogue {self.path}")

    def producers_of(self, topic: str) -> list[str]:
        return [spec.name for spec in self.services if topic in spec.produces]

    def consumers_of(self, topic: str) -> list[str]:
        return [spec.name for spec in self.services if topic in spec.consumes]


def _names(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ContractError(f"{where} must be a list of names")
    return tuple(raw)


@lru_cache(maxsize=8)
def load_services(schemas_dir: Path) -> ServiceCatalogue:
    """Load ``services.yaml`` and check it against the topic catalogue beside it."""
    path = schemas_dir / "services.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"cannot read service catalogue {path}: {exc}") from exc
    topics = {spec.name for spec in load_catalogue(schemas_dir).topics}
    specs: list[ServiceSpec] = []
    ports: dict[int, str] = {}
    for name, entry in (raw.get("services") or {}).items():
        spec = ServiceSpec(
            name=str(name),
            module=str(entry["module"]),
            env_prefix=str(entry["env_prefix"]),
            port=int(entry["port"]),
            description=str(entry.get("description", "")),
            consumes=_names(entry.get("consumes"), f"{name}.consumes"),
            produces=_names(entry.get("produces"), f"{name}.produces"),
            groups=_names(entry.get("groups"), f"{name}.groups"),
            dead_letters=entry.get("dead_letters"),
            needs_model=bool(entry.get("needs_model", False)),
            internal_topic_prefix=entry.get("internal_topic_prefix"),
        )
        unknown = [t for t in (*spec.consumes, *spec.produces) if t not in topics]
        if spec.dead_letters is not None and spec.dead_letters not in topics:
            unknown.append(spec.dead_letters)
        if unknown:
            raise ContractError(f"service {name!r} names topics missing from topics.yaml: {unknown}")
        if spec.port in ports:
            raise ContractError(f"services {ports[spec.port]!r} and {name!r} share port {spec.port}")
        ports[spec.port] = spec.name
        specs.append(spec)
    return ServiceCatalogue(path=path, services=tuple(specs))
