"""The outbox, the one way the platform confirms events, and topic bindings, with a fake producer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pytest

from mlops_platform.bindings import Binding, ServiceBindings
from mlops_platform.contracts import Topic
from mlops_platform.errors import ContractError, KafkaUnavailable, PublishError
from mlops_platform.kafka import Encoded, EventProducer, Outbox, Output, encode_all
from mlops_platform.kafka.producer import DeliveryCallback


class FakeMessage:
    def __init__(self, record: Encoded, offset: int) -> None:
        self.record, self._offset = record, offset

    def topic(self) -> str:
        return self.record.topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class FakeError:
    def str(self) -> str:
        return "broker said no"


class FakeProducer:
    """Records what is produced; acknowledges on poll unless told to refuse or stay silent."""

    timeout_s = 0.3

    def __init__(self, *, refuse: set[str] | None = None, silent: bool = False) -> None:
        self.refuse, self.silent = refuse or set(), silent
        self.produced: list[Encoded] = []
        self._waiting: list[tuple[Encoded, DeliveryCallback | None]] = []

    def encode(
        self,
        target: Binding | str,
        value: Mapping[str, Any],
        *,
        key: Any = None,
        headers: Any = None,
        schema_topic: str | None = None,
    ) -> Encoded:
        if value.get("broken"):
            raise ValueError("breaks its contract")
        topic = target.topic if isinstance(target, Binding) else target
        if key is None and isinstance(target, Binding):
            key = target.key_of(value)
        return Encoded(
            topic, repr(dict(value)).encode(), key.encode() if isinstance(key, str) else key, headers
        )

    def produce_encoded(self, record: Encoded, on_delivery: DeliveryCallback | None = None) -> None:
        self.produced.append(record)
        self._waiting.append((record, on_delivery))

    def enqueue(self, record: Encoded) -> None:
        self.produced.append(record)

    def poll(self, _timeout_s: float = 0.0) -> int:
        if self.silent:
            return 0
        served, self._waiting = self._waiting, []
        for record, callback in served:
            if callback is not None:
                error = FakeError() if record.topic in self.refuse else None
                callback(cast(Any, error), cast(Any, FakeMessage(record, len(self.produced))))
        return len(served)


def outbox(producer: FakeProducer) -> Outbox:
    return Outbox(cast(EventProducer, producer))


RESULTS = Binding.to(Topic.PREDICTION_COMPLETED, key="transaction_id")


def test_nothing_reaches_kafka_before_delivery_and_keys_come_from_the_binding() -> None:
    producer = FakeProducer()
    box = outbox(producer)
    box.emit(RESULTS, {"transaction_id": "t-1"})
    box.emit(Topic.SYSTEM_ALERTS.value, {"a": 1}, key="explicit")
    assert producer.produced == [] and len(box) == 2
    positions = box.deliver()
    assert [r.key for r in producer.produced] == [b"t-1", b"explicit"]
    assert len(positions) == 2 and len(box) == 0


def test_rollback_drops_only_what_was_emitted_after_the_mark() -> None:
    producer = FakeProducer()
    box = outbox(producer)
    box.emit(RESULTS, {"transaction_id": "kept"})
    mark = box.mark()
    box.emit(RESULTS, {"transaction_id": "dropped-1"})
    box.emit(RESULTS, {"transaction_id": "dropped-2"})
    box.rollback(mark)
    box.deliver()
    assert [r.key for r in producer.produced] == [b"kept"]


def test_a_refused_record_fails_delivery_and_empties_the_outbox() -> None:
    producer = FakeProducer(refuse={Topic.SYSTEM_ALERTS.value})
    box = outbox(producer)
    box.emit(RESULTS, {"transaction_id": "t-1"})
    box.emit(Topic.SYSTEM_ALERTS.value, {"a": 1})
    with pytest.raises(PublishError, match="1 of 2"):
        box.deliver()
    assert len(box) == 0


def test_missing_acknowledgements_are_reported_as_kafka_unavailable() -> None:
    box = outbox(FakeProducer(silent=True))
    box.emit(RESULTS, {"transaction_id": "t-1"})
    with pytest.raises(KafkaUnavailable, match="did not acknowledge 1 of 1"):
        box.deliver(timeout_s=0.1)


def test_send_enqueues_without_waiting() -> None:
    producer = FakeProducer(silent=True)
    box = outbox(producer)
    box.emit(RESULTS, {"transaction_id": "t-1"})
    assert box.send() == {RESULTS.topic: 1}
    assert len(producer.produced) == 1 and len(box) == 0


def test_encode_all_fails_the_whole_set_before_producing_anything() -> None:
    producer = FakeProducer()
    with pytest.raises(ValueError, match="contract"):
        encode_all(
            cast(EventProducer, producer),
            [Output(RESULTS, {"transaction_id": "ok"}), Output(RESULTS, {"broken": True})],
        )
    assert producer.produced == []


def test_binding_names_its_contract_only_for_private_topics() -> None:
    assert Binding.to(Topic.PREDICTION_REQUEST).schema_topic is None
    private = Binding.to(Topic.PREDICTION_REQUEST, "test.requests.1")
    assert private.schema_topic == Topic.PREDICTION_REQUEST.value
    assert private.key_of({"transaction_id": "x"}) is None
    assert Binding.to(Topic.PREDICTION_REQUEST, key="transaction_id").key_of({"transaction_id": 7}) == "7"


def test_service_bindings_find_inputs_by_topic() -> None:
    inputs = Binding.to(Topic.PREDICTION_FEEDBACK, "private.feedback")
    bindings = ServiceBindings.of(consumes=[inputs], produces=[RESULTS])
    assert bindings.consumed("private.feedback") is inputs
    assert bindings.contracts_consumed() == {"prediction.feedback"}
    with pytest.raises(ContractError):
        bindings.consumed("prediction.feedback")


def test_rollback_after_a_delivery_drops_only_what_is_still_kept() -> None:
    producer = FakeProducer()
    box = outbox(producer)
    box.emit(RESULTS, {"transaction_id": "before"})
    mark = box.mark()
    box.emit(RESULTS, {"transaction_id": "delivered"})
    box.deliver()
    after = box.mark()
    box.emit(RESULTS, {"transaction_id": "kept-then-dropped"})
    box.rollback(mark)
    assert len(box) == 0, "a mark taken before a delivery still drops what was emitted after it"
    box.emit(RESULTS, {"transaction_id": "kept"})
    box.rollback(after + 1)
    box.deliver()
    assert [r.key for r in producer.produced] == [b"before", b"delivered", b"kept"]


def test_deliver_each_reports_every_record() -> None:
    producer = FakeProducer(refuse={Topic.SYSTEM_ALERTS.value})
    box = outbox(producer)
    box.emit(RESULTS, {"transaction_id": "t-1"})
    box.emit(Topic.SYSTEM_ALERTS.value, {"a": 1})
    outcomes = box.deliver_each()
    assert outcomes[0] is None and outcomes[1] is not None and "broker said no" in outcomes[1]
    silent = outbox(FakeProducer(silent=True))
    silent.emit(RESULTS, {"transaction_id": "t-2"})
    assert silent.deliver_each(timeout_s=0.1) == ["no acknowledgement from Kafka in time"]
