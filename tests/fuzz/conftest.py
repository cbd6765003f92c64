"""Counts the generated cases of the OpenAPI fuzzing tier and prints the total at the end."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

#: Cases run, by service.
CASES: Counter[str] = Counter()
#: Operations fuzzed, by service.
OPERATIONS: dict[str, set[str]] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not CASES:
        return
    total = sum(CASES.values())
    operations = sum(len(ops) for ops in OPERATIONS.values())
    per_service = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
    terminalreporter.write_sep(
        "-", f"schemathesis: {total} cases over {operations} operations ({per_service})"
    )
