"""Transitional adapters from the former loop classes onto :class:`StreamLoop` (removed once unused)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlops_platform.bindings import Binding
from mlops_platform.contracts import Topic
from mlops_platform.serde import AvroSerde
from mlops_platform.settings import PlatformSettings

from .consumer import Record
from .loop import Guarantee, StreamLoop
from .producer import EventProducer, Headers, Output
from .publisher import AcknowledgedPublisher


def _bindings(topics: Sequence[str], schema_topics: Mapping[str, str] | None) -> list[Binding]:
    contracts = dict(schema_topics or {})
    return [Binding(topic, Topic(contracts.get(topic, topic))) for topic in topics]


def ConsumerLoop(  # noqa: N802 - stands in for the former class
    *,
    settings: PlatformSettings,
    service: str,
    group_id: str,
    topics: Sequence[str],
    handler: Callable[[list[Record]], None],
    serde: AvroSerde,
    producer: EventProducer,
    schema_topics: Mapping[str, str] | None = None,
    **options: Any,
) -> StreamLoop:
    return StreamLoop(
        settings=settings,
        service=service,
        group_id=group_id,
        inputs=_bindings(topics, schema_topics),
        handler=lambda records, _outbox: handler(records),
        serde=serde,
        producer=producer,
        **options,
    )


def TransactionalLoop(  # noqa: N802 - stands in for the former class
    *,
    settings: PlatformSettings,
    service: str,
    group_id: str,
    topics: Sequence[str],
    transform: Callable[[list[Record]], list[Output]],
    serde: AvroSerde,
    transactional_id: str,
    schema_topics: Mapping[str, str] | None = None,
    output_schema_topics: Mapping[str, str] | None = None,
    **options: Any,
) -> StreamLoop:
    contracts = dict(output_schema_topics or {})

    def handler(records: list[Record], outbox: Any) -> None:
        for output in transform(records):
            target = str(output.target)
            outbox.emit(
                target, output.value, output.key, headers=output.headers, schema_topic=contracts.get(target)
            )

    return StreamLoop(
        settings=settings,
        service=service,
        group_id=group_id,
        inputs=_bindings(topics, schema_topics),
        handler=handler,
        serde=serde,
        guarantee=Guarantee.EXACTLY_ONCE,
        transactional_id=transactional_id,
        **options,
    )


class AsyncEventProducer(AcknowledgedPublisher):
    """The former awaitable producer: ``publish_many([(topic, value, key), ...])``."""

    async def publish_many(
        self,
        items: Sequence[tuple[str, Mapping[str, Any], str | bytes | None]],
        *,
        headers: Headers | None = None,
    ) -> list[tuple[int, int]]:
        return await self.publish_acknowledged(
            [Output(topic, value, key, headers) for topic, value, key in items]
        )

    def close(self) -> None:
        super().close()
        self.producer.close()
