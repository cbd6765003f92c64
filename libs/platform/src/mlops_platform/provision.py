"""Provisioning of the event bus: topics and schemas, plus the compatibility gate.

    python -m mlops_platform.provision apply   create missing topics, register every schema (BACKWARD)
    python -m mlops_platform.provision check   test every local .avsc against the registry's latest
                                               version; exit 1 with a readable diff when incompatible

Both are idempotent and safe to run against a live cluster.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlops_platform.contracts import Catalogue, load_catalogue, value_subject
from mlops_platform.errors import PlatformError
from mlops_platform.kafka import ensure_topics
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

COMPATIBILITY = "BACKWARD"
REGISTRY_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass
class CompatibilityReport:
    """Outcome of checking one subject."""

    subject: str
    compatible: bool
    new_subject: bool = False
    messages: list[str] = field(default_factory=list)
    diff: str = ""

    def render(self) -> str:
        if self.new_subject:
            return f"NEW        {self.subject} (not registered yet)"
        if self.compatible:
            return f"OK         {self.subject}"
        lines = [f"INCOMPATIBLE {self.subject}"]
        lines += [f"    reason: {message}" for message in self.messages]
        if self.diff:
            lines.append("    diff (registered latest -> local):")
            lines += [f"      {line}" for line in self.diff.splitlines()]
        return "\n".join(lines)


def _pretty(schema: str) -> list[str]:
    return json.dumps(json.loads(schema), indent=2, sort_keys=True).splitlines()


def check_compatibility(settings: PlatformSettings, catalogue: Catalogue) -> list[CompatibilityReport]:
    """Test each local schema against the latest registered version of its subject."""
    base = settings.schema_registry_url.rstrip("/")
    reports: list[CompatibilityReport] = []
    with httpx.Client(timeout=10.0, headers={"Content-Type": REGISTRY_CONTENT_TYPE}) as client:
        for spec in catalogue.schema_topics():
            subject = value_subject(spec.name)
            local = catalogue.value_schema_str(spec.name)
            latest = client.get(f"{base}/subjects/{subject}/versions/latest")
            if latest.status_code == 404:
                reports.append(CompatibilityReport(subject, True, new_subject=True))
                continue
            latest.raise_for_status()
            answer = client.post(
                f"{base}/compatibility/subjects/{subject}/versions/latest",
                params={"verbose": "true"},
                json={"schema": local, "schemaType": "AVRO"},
            )
            answer.raise_for_status()
            body: dict[str, Any] = answer.json()
            compatible = bool(body.get("is_compatible"))
            diff = ""
            if not compatible:
                diff = "\n".join(
                    difflib.unified_diff(
                        _pretty(latest.json()["schema"]), _pretty(local), "registered", "local", lineterm=""
                    )
                )
            reports.append(
                CompatibilityReport(subject, compatible, messages=list(body.get("messages") or []), diff=diff)
            )
    return reports


def apply(settings: PlatformSettings, catalogue: Catalogue) -> None:
    """Create missing topics and register every schema."""
    created = ensure_topics(settings, catalogue)
    print(f"topics: {len(catalogue.topics)} in catalogue, {len(created)} created")
    reports = check_compatibility(settings, catalogue)
    broken = [r for r in reports if not r.compatible]
    if broken:
        print("\n".join(r.render() for r in broken))
        raise PlatformError(f"{len(broken)} schema(s) incompatible with the registry; nothing registered")
    ids = AvroSerde(settings, catalogue).register_all(COMPATIBILITY)
    print(f"schemas: {len(ids)} subjects registered with {COMPATIBILITY} compatibility")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["apply", "check"])
    args = parser.parse_args(argv)
    settings = PlatformSettings()
    catalogue = load_catalogue(settings.schemas_dir)
    try:
        if args.command == "apply":
            apply(settings, catalogue)
            return 0
        reports = check_compatibility(settings, catalogue)
    except (PlatformError, httpx.HTTPError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        print(report.render())
    return 0 if all(r.compatible for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
