"""Table recovery that seeks the stream partitions before it lets them deliver again.

After a rebalance Faust restores the tables from their changelogs with the stream
partitions paused, then (``Recovery.on_recovery_completed``, or ``_resume_streams`` when
there was nothing to restore) it resumes the stream partitions, *awaits* a seek to the
committed offsets and finally resumes the flow, and resuming the flow clears every stream
queue (``mode.utils.queues.FlowControlEvent.resume``). faust-streaming 0.15.3 does them in
that order. Records fetched while the seek is awaited are handed to the streams and then
cleared from their queues with the fetch position already past them: a record produced
during those milliseconds was never processed. Seen in the recommender after a SIGKILL:
one interaction command of a hundred and eighty silently missing, its offset committed by
the records after it (faust-streaming/faust#216 describes the same race; its fix, #217,
reordered the calls the other way round and left the await in between).

:class:`SeekFirstRecovery` seeks while the stream partitions are still paused, then
resumes them and the flow in one step, without an await in between, so nothing is
delivered before the queues are cleared and everything after the committed offsets is
fetched again.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class SeekFirstRecovery(Recovery):
    """Faust's table recovery with the seek before the stream partitions resume (see module doc)."""

    async def _resume_streams(self, generation_id: int = 0) -> None:
        app = self.app
        await app.on_rebalance_complete.send()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        await self._seek_then_resume()
        await self._worker_ready(standbys_ready=True)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Call when active table recovery is completed."""
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}"
            )
            return
        await self._seek_then_resume()
        await self._worker_ready(standbys_ready=not self.app.assignor.assigned_standbys())

    async def _seek_then_resume(self) -> None:
        consumer = self.app.consumer
        assignment = consumer.assignment()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        else:
            self.log.info("Resuming streams with empty assignment")
        # From here to resuming the flow (which clears the stream queues) nothing awaits,
        # so no record reaches a queue only to be cleared from it.
        consumer.resume_partitions({tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.log.info("Resuming flow...")
        self.app.flow_control.resume()
        consumer.resume_flow()

    async def _worker_ready(self, *, standbys_ready: bool) -> None:
        app = cast(Any, self.app)
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if standbys_ready:
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekFirstTableManager(TableManager):
    """Faust's table manager whose recovery is :class:`SeekFirstRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
