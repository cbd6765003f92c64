"""The recommender's table recovery: stream partitions are sought before they deliver again.

A fake consumer plays the fetcher: while its stream partitions are resumed it hands one
record per loop iteration to a stream queue managed by the app's real flow control (mode's
``FlowControlEvent``, whose ``resume`` clears the queues), and the seek to the committed
offsets takes a few loop iterations, as the call into the consumer thread does.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from recommender.recovery import SeekFirstRecovery

STREAM = TP("business.user.interaction", 0)
CHANGELOG = TP("recommender-profiles-changelog", 0)


class Fetcher:
    """The consumer side: assignment, pause state, seek, and the records it hands over."""

    def __init__(self, queue: FlowControlQueue) -> None:
        self.queue = queue
        self.streaming = False  # stream partitions paused, as during a restore
        self.handed_over: list[int] = []
        self.position = 10

    def assignment(self) -> set[TP]:
        return {STREAM, CHANGELOG}

    def resume_partitions(self, tps: set[TP]) -> None:
        if STREAM in tps:
            self.streaming = True

    def resume_flow(self) -> None:
        pass

    async def perform_seek(self) -> None:
        self.position = 10  # the consumer thread seeks to the committed offset...
        for _ in range(3):
            await asyncio.sleep(0)  # ...and the call returns to the event loop later

    async def run(self, iterations: int) -> None:
        for _ in range(iterations):
            await asyncio.sleep(0)
            if self.streaming:
                self.queue.put_nowait(self.position)
                self.handed_over.append(self.position)
                self.position += 1


def recovery_of(cls: type[Recovery], fetcher: Fetcher, flow_control: FlowControlEvent) -> Recovery:
    async def nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    recovery = cls.__new__(cls)
    app = SimpleNamespace(
        consumer=fetcher,
        flow_control=flow_control,
        on_rebalance_complete=SimpleNamespace(send=nothing),
        consumer_generation_id=1,
        conf=SimpleNamespace(broker_request_timeout=10.0),
        _fetcher=SimpleNamespace(maybe_start=nothing),
        assignor=SimpleNamespace(assigned_standbys=set),
        on_rebalance_end=lambda: None,
    )
    attributes = {
        "app": app,
        "tables": SimpleNamespace(values=list, on_actives_ready=lambda: None, on_standbys_ready=lambda: None),
        "log": SimpleNamespace(
            info=logging.info, warning=logging.warning, dev=logging.debug, debug=logging.debug
        ),
        "completed": asyncio.Event(),
        "_wait": wait,
        "_set_recovery_ended": lambda: None,
        "_is_changelog_tp": lambda tp: tp == CHANGELOG,
    }
    for name, value in attributes.items():
        object.__setattr__(recovery, name, value)
    return recovery


async def run_recovery(cls: type[Recovery], step: str) -> tuple[list[int], list[int]]:
    """Records handed to the stream, and those still in its queue, after a recovery step."""
    flow_control = FlowControlEvent(initially_suspended=False)
    queue = FlowControlQueue(flow_control=flow_control, clear_on_resume=True)
    flow_control.manage_queue(queue)
    fetcher = Fetcher(queue)
    recovery = recovery_of(cls, fetcher, flow_control)
    fetching = asyncio.create_task(fetcher.run(20))
    if step == "completed":
        await recovery.on_recovery_completed(generation_id=1)
    else:
        await recovery._resume_streams(generation_id=1)
    await fetching
    queued = []
    while not queue.empty():
        queued.append(queue.get_nowait())
    return fetcher.handed_over, queued


@pytest.mark.parametrize("step", ["completed", "nothing to restore"])
async def test_every_record_handed_to_a_stream_after_recovery_stays_in_its_queue(step: str) -> None:
    handed_over, queued = await run_recovery(SeekFirstRecovery, step)
    assert handed_over, "the fetcher never resumed"
    assert queued == handed_over
    assert handed_over[0] == 10  # from the committed offset on


@pytest.mark.parametrize("step", ["completed", "nothing to restore"])
async def test_faust_recovery_clears_records_handed_over_while_it_seeks(step: str) -> None:
    # The defect the subclass fixes (faust-streaming 0.15.3): the records handed over while
    # the seek is awaited are cleared from the queue when the flow resumes.
    handed_over, queued = await run_recovery(Recovery, step)
    lost = [offset for offset in handed_over if offset not in queued]
    assert lost
