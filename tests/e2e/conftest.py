"""Fixtures for end-to-end tests: real service processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import ServiceLauncher


@pytest.fixture(scope="module")
def service_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceLauncher]:
    """Starts ``python -m <service>`` processes for a module; stops them (and prints their logs) after it."""
    launcher = ServiceLauncher(tmp_path_factory.mktemp("services"))
    yield launcher
    launcher.close()
