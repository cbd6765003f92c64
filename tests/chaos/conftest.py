"""The chaos tier: fault scenarios on the real stack, counted by ids with :mod:`tests.support.chaos`.

Every scenario asks the ``chaos_ledger`` fixture for a :class:`~tests.support.chaos.Ledger`;
at the end of any run that made one, :func:`pytest_terminal_summary` prints a table with a
row per scenario (sent, completed once, lost, duplicated, recovery times), so ``make chaos``
and ``make test`` show the figures next to the verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.chaos import LEDGERS, Ledger, table


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: kills processes of the real stack and counts what survived")


@pytest.fixture
def chaos_ledger(request: pytest.FixtureRequest) -> Iterator[Callable[..., Ledger]]:
    """``chaos_ledger(name=None)`` makes a ledger named after the test (plus ``name``); the outcome
    (passed / failed) is written into its row when the test ends."""
    made: list[Ledger] = []

    def make(name: str | None = None) -> Ledger:
        scenario = request.node.name if name is None else f"{request.node.name}[{name}]"
        ledger = Ledger(scenario)
        made.append(ledger)
        return ledger

    yield make
    report = getattr(request.node, "chaos_call_report", None)
    outcome = "error" if report is None else report.outcome
    for ledger in made:
        ledger.outcome = outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if call.when == "call":
        item.chaos_call_report = report  # type: ignore[attr-defined]
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGERS:
        return
    terminalreporter.section("chaos scenarios: counted by id (output read_committed)")
    for line in table(LEDGERS):
        terminalreporter.write_line(line)
