"""The local broker's collector: Shenandoah where the JVM has it, else G1, or the operator's choice."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from constellation import stack


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("KAFKA_JVM_PERFORMANCE_OPTS", raising=False)
    stack._jvm_accepts.cache_clear()
    yield
    # A faked answer must not outlive its test: later code in this process may start a broker.
    stack._jvm_accepts.cache_clear()


def test_an_operator_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseZGC")
    assert stack.kafka_jvm_options() == "-XX:+UseZGC"


def test_a_jvm_without_shenandoah_gets_kafkas_g1_options(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []

    def jvm(command: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        asked.append(command)
        return subprocess.CompletedProcess(command, 1, b"", b"Unrecognized VM option 'UseShenandoahGC'")

    monkeypatch.setattr(stack.subprocess, "run", jvm)
    assert stack.kafka_jvm_options() == stack.KAFKA_G1_OPTIONS
    assert asked and asked[0][1:] == ["-XX:+UseShenandoahGC", "-version"]


def test_this_machines_jvm_runs_the_collector_the_stack_picks() -> None:
    # The real JVM: whichever options are chosen must start it, or the broker would not.
    options = stack.kafka_jvm_options()
    assert options in (stack.KAFKA_SHENANDOAH_OPTIONS, stack.KAFKA_G1_OPTIONS)
    started = subprocess.run([stack._java(), *options.split(), "-version"], capture_output=True, check=False)
    assert started.returncode == 0, started.stderr.decode()
