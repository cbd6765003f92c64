"""Topic bindings: a topic name tied to the contract its values follow and to how records are keyed.

A service declares its bindings once (in its settings, see
:meth:`mlops_platform.settings.ServiceSettings.bindings`) and hands them to the stream
loop and the producer; nothing else needs to know that a test or a replay pointed the
service at a private topic carrying a catalogue contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlops_platform.contracts import Topic
from mlops_platform.errors import ContractError


@dataclass(frozen=True)
class Binding:
    """A topic, the catalogue contract of its values and the value field used as the record key."""

    topic: str
    contract: Topic
    key_field: str | None = None

    @classmethod
    def to(cls, contract: Topic, topic: str | None = None, *, key: str | None = None) -> Binding:
        """Bind ``contract`` to ``topic`` (the catalogue's own topic when ``topic`` is None)."""
        return cls(topic or contract.value, contract, key)

    @property
    def schema_topic(self) -> str | None:
        """The contract's topic when this binding names another topic, else None (the serde's convention)."""
        return None if self.topic == self.contract.value else self.contract.value

    def key_of(self, value: Mapping[str, Any]) -> str | None:
        """The record key taken from ``value`` (None when the binding has no key field)."""
        if self.key_field is None:
            return None
        key = value.get(self.key_field)
        return None if key is None else str(key)


@dataclass(frozen=True)
class ServiceBindings:
    """Everything a service reads and writes, as declared in its code."""

    consumes: tuple[Binding, ...] = ()
    produces: tuple[Binding, ...] = ()

    @classmethod
    def of(cls, *, consumes: Iterable[Binding] = (), produces: Iterable[Binding] = ()) -> ServiceBindings:
        return cls(tuple(consumes), tuple(produces))

    def contracts_consumed(self) -> set[str]:
        return {binding.contract.value for binding in self.consumes}

    def contracts_produced(self) -> set[str]:
        return {binding.contract.value for binding in self.produces}

    def consumed(self, topic: str) -> Binding:
        """The input binding of ``topic``."""
        for binding in self.consumes:
            if binding.topic == topic:
                return binding
        raise ContractError(f"topic {topic!r} is not among the consumed bindings")
