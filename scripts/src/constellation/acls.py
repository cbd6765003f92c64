"""Kafka ACLs derived from the service catalogue, and the SCRAM users they apply to.

    python -m constellation acls show [SERVICE]   the ACLs the catalogue implies (no broker needed)
    python -m constellation acls apply            create the SCRAM users and the ACLs, as admin

Each service of ``schemas/services.yaml`` is the principal ``User:<service>`` and may:

* WRITE (and DESCRIBE) the topics it ``produces`` and its ``dead_letters`` topic;
* READ (and DESCRIBE) the topics it ``consumes``;
* READ its consumer ``groups`` (a ``{instance}`` group is a PREFIXED grant on the part
  before ``{instance}``);
* WRITE (and DESCRIBE) the transactional ids starting with ``<service>-`` (the platform
  names them ``<service>-<instance>[-n]``);
* do anything to the topics under its ``internal_topic_prefix`` (Faust's changelogs and
  command topics, which it creates itself);
* IDEMPOTENT_WRITE on the cluster when it produces (idempotent producers).

Nothing else: the broker runs ``allow.everyone.if.no.acl.found=false``, so a service that
writes a topic it does not own gets ``TOPIC_AUTHORIZATION_FAILED``. ``apply`` is
idempotent and also removes grants of catalogue principals the catalogue no longer implies.
Passwords come from the environment: ``<PREFIX>KAFKA_PASSWORD`` per service (compose) or
the local stack's credentials file (``constellation.credentials``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mlops_platform.service_catalogue import INSTANCE_PLACEHOLDER, ServiceSpec, load_services
from mlops_platform.settings import PlatformSettings

CLUSTER = "kafka-cluster"
# confluent-kafka calls the cluster resource BROKER.
_RESOURCE_TYPE = {"CLUSTER": "BROKER"}


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: ``principal`` may ``operation`` on ``resource`` ``name`` (``pattern``)."""

    principal: str
    resource: str  # TOPIC | GROUP | TRANSACTIONAL_ID | CLUSTER
    name: str
    pattern: str  # LITERAL | PREFIXED
    operation: str  # READ | WRITE | DESCRIBE | ALL | IDEMPOTENT_WRITE

    def __str__(self) -> str:
        return f"{self.principal:<22} {self.operation:<16} {self.resource:<16} {self.pattern:<8} {self.name}"


def principal(service: str) -> str:
    return f"User:{service}"


def service_acls(spec: ServiceSpec) -> list[Acl]:
    """Every grant of one catalogue service, sorted."""
    user = principal(spec.name)
    grants: set[Acl] = set()

    def allow(resource: str, name: str, operations: Iterable[str], pattern: str = "LITERAL") -> None:
        grants.update(Acl(user, resource, name, pattern, op) for op in operations)

    written = [*spec.produces, *([spec.dead_letters] if spec.dead_letters else [])]
    for topic in written:
        allow("TOPIC", topic, ("WRITE", "DESCRIBE"))
    for topic in spec.consumes:
        allow("TOPIC", topic, ("READ", "DESCRIBE"))
    for group in spec.groups:
        if INSTANCE_PLACEHOLDER in group:
            allow("GROUP", group.split(INSTANCE_PLACEHOLDER, 1)[0], ("READ",), "PREFIXED")
        else:
            allow("GROUP", group, ("READ",))
    if written:
        allow("TRANSACTIONAL_ID", f"{spec.name}-", ("WRITE", "DESCRIBE"), "PREFIXED")
        allow("CLUSTER", CLUSTER, ("IDEMPOTENT_WRITE",))
    if spec.internal_topic_prefix:
        allow("TOPIC", spec.internal_topic_prefix, ("ALL",), "PREFIXED")
    return sorted(grants)


def catalogue_acls(specs: Iterable[ServiceSpec]) -> list[Acl]:
    return sorted(acl for spec in specs for acl in service_acls(spec))


# --------------------------------------------------------------------------- broker


def _binding(acl: Acl):  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBinding(
        ResourceType[_RESOURCE_TYPE.get(acl.resource, acl.resource)],
        acl.name,
        ResourcePatternType[acl.pattern],
        acl.principal,
        "*",
        AclOperation[acl.operation],
        AclPermissionType.ALLOW,
    )


def _from_binding(binding) -> Acl:  # type: ignore[no-untyped-def]
    return Acl(
        binding.principal,
        {v: k for k, v in _RESOURCE_TYPE.items()}.get(binding.restype.name, binding.restype.name),
        binding.name,
        binding.resource_pattern_type.name,
        binding.operation.name,
    )


def admin_client(settings: PlatformSettings):  # type: ignore[no-untyped-def]
    """A short-lived admin client; librdkafka's info lines (purged background events) stay quiet."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({**settings.admin_config(), "log_level": 4})


def existing_acls(settings: PlatformSettings, principals: Sequence[str], timeout_s: float = 15) -> set[Acl]:
    """The ALLOW bindings of ``principals`` on the broker."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    admin = admin_client(settings)
    found: set[Acl] = set()
    for user in principals:
        query = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]  # None matches any name / host
            ResourcePatternType.ANY,
            user,
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ALLOW,
        )
        found.update(_from_binding(b) for b in admin.describe_acls(query, request_timeout=timeout_s).result())
    return found


def apply_acls(settings: PlatformSettings, wanted: Sequence[Acl], timeout_s: float = 15) -> tuple[int, int]:
    """Make the broker's grants of the principals in ``wanted`` exactly ``wanted``.

    Returns (created, deleted). Creating an existing binding is a no-op on the broker.
    """
    admin = admin_client(settings)
    principals = sorted({acl.principal for acl in wanted})
    current = existing_acls(settings, principals, timeout_s)
    missing = [acl for acl in wanted if acl not in current]
    stale = sorted(current - set(wanted))
    if missing:
        for future in admin.create_acls(
            [_binding(acl) for acl in missing], request_timeout=timeout_s
        ).values():
            future.result()
    if stale:
        for future in admin.delete_acls([_binding(acl) for acl in stale], request_timeout=timeout_s).values():
            future.result()
    return len(missing), len(stale)


def upsert_users(settings: PlatformSettings, passwords: Mapping[str, str], timeout_s: float = 15) -> None:
    """Create or update the SCRAM-SHA-512 credentials of ``passwords``' users (idempotent)."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    if not passwords:
        return
    admin = admin_client(settings)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in sorted(passwords.items())
    ]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout_s).values():
        future.result()


def provision_security(
    settings: PlatformSettings, specs: Sequence[ServiceSpec], passwords: Mapping[str, str]
) -> str:
    """SCRAM users for every service with a password, then the catalogue's ACLs; a one-line summary."""
    upsert_users(settings, {spec.name: passwords[spec.name] for spec in specs if spec.name in passwords})
    created, deleted = apply_acls(settings, catalogue_acls(specs))
    users = sum(1 for spec in specs if spec.name in passwords)
    return f"{users} service principals, ACLs: {created} created, {deleted} removed"


def _env_passwords(specs: Sequence[ServiceSpec]) -> dict[str, str]:
    """``<PREFIX>KAFKA_PASSWORD`` of each service (compose), else the local stack's credentials file."""
    passwords = {
        spec.name: os.environ[f"{spec.env_prefix}KAFKA_PASSWORD"]
        for spec in specs
        if os.environ.get(f"{spec.env_prefix}KAFKA_PASSWORD")
    }
    if passwords:
        return passwords
    from constellation import credentials

    stored = credentials.load()
    return {spec.name: stored.kafka[spec.name] for spec in specs if stored and spec.name in stored.kafka}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m constellation acls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_show = sub.add_parser("show", help="print the ACLs the catalogue implies")
    p_show.add_argument("service", nargs="?")
    sub.add_parser("apply", help="create the services' SCRAM users and ACLs on the broker (as admin)")
    args = parser.parse_args(argv)
    settings = PlatformSettings()
    specs = list(load_services(settings.schemas_dir))
    if args.command == "show":
        chosen = [spec for spec in specs if args.service in (None, spec.name)]
        if not chosen:
            print(f"unknown service {args.service!r}", file=sys.stderr)
            return 2
        for acl in catalogue_acls(chosen):
            print(acl)
        return 0
    passwords = _env_passwords(specs)
    missing = [spec.name for spec in specs if spec.name not in passwords]
    if missing:
        print(f"WARNING: no password for {', '.join(missing)}: their users are not created", file=sys.stderr)
    print(f"  kafka security: {provision_security(settings, specs, passwords)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
