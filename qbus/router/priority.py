"""Priorities: an executor drains ``high`` before ``normal`` before ``low``.

The router publishes a job on ``<prefix>.exec.<engine>.<job>`` (normal) or
``<prefix>.exec.<engine>.<priority>.<job>`` (high, low); each engine has one durable
consumer per priority (``Bus.ensure_executor``). ``PriorityStageRunner`` keeps pull
requests outstanding on all three and, each time it is free, takes the next batch from
the highest lane that has messages. Priority decides fetch order only: a job already
running is never interrupted, and a batch already taken is finished first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from nats.aio.msg import Msg

from qbus.bus.pull import PullConsumer
from qbus.bus.runner import StageRunner
from qbus.schemas.enums import PRIORITIES

log = logging.getLogger("qbus.priority")


class _Lane(PullConsumer):
    """A pull consumer whose arrivals go to a buffer and wake one shared event."""

    def __init__(self, bus, durable: str, *, batch: int, wake: asyncio.Event) -> None:
        super().__init__(bus, durable, batch=batch)
        self._wake = wake
        self._buffer: deque[Msg] = deque()

    async def start(self) -> _Lane:
        self._inbox = self.bus.nc.new_inbox()
        self._sub = await self.bus.nc.subscribe(
            self._inbox, cb=self._arrived, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    async def _arrived(self, msg: Msg) -> None:
        self._buffer.append(msg)
        self._wake.set()

    def buffered(self) -> bool:
        return bool(self._buffer)

    async def refresh(self) -> None:
        """Keep about ``batch`` messages requested (as ``next_batch`` does)."""
        if self._outstanding and time.monotonic() - self._last_seen > 2 * self.heartbeat + 1:
            self._outstanding = 0  # no message and no heartbeat: the request is gone
        await self._request()

    def take(self) -> list[Msg]:
        """What has arrived, at most ``batch`` messages (heartbeats are consumed here)."""
        msgs: list[Msg] = []
        while self._buffer and len(msgs) < self.batch:
            self._take(self._buffer.popleft(), msgs)
        return msgs

    async def stop(self) -> None:
        if self._sub is None:
            return
        sub, self._sub = self._sub, None
        await sub.unsubscribe()
        while self._buffer:  # hand back what was never taken
            msg = self._buffer.popleft()
            if msg.reply and not (msg.headers and msg.headers.get("Status")):
                await msg.nak()


class PriorityStageRunner(StageRunner):
    """A StageRunner for one engine's executors that fetches high, normal, low in turn.

    Args:
        engine: The engine whose three consumers it reads.
        **kwargs: As for ``StageRunner`` (``durable`` and ``subjects`` name the normal
            lane, for metrics and logs).
    """

    def __init__(self, bus, *, engine: str, **kwargs) -> None:
        super().__init__(bus, **kwargs)
        self.engine = engine

    async def _keep_buffered(self, lanes: list[_Lane]) -> None:
        interval = max(self.bus.config.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for lane in lanes:
                for msg in list(lane._buffer):
                    if msg.reply and not (msg.headers and msg.headers.get("Status")):
                        await msg.in_progress()

    async def run(self) -> None:
        """Consume until ``stop()``, always from the highest lane with messages."""
        wake = asyncio.Event()
        lanes: list[_Lane] = []
        for priority in PRIORITIES:
            durable = self.bus.executor_durable(self.engine, priority)
            await self.bus.ensure_consumer(
                durable, [self.bus.subjects.exec(self.engine, priority=priority)]
            )
            lanes.append(await _Lane(self.bus, durable, batch=self.batch, wake=wake).start())
        await self.start_handler()
        log.info("executor %s consuming priorities %s", self.engine, ", ".join(PRIORITIES))
        # Messages the executors gave up on become dead letters (qbus/bus/deadletter.py).
        watcher = self.dead_letter_watcher(
            [self.bus.executor_durable(self.engine, p) for p in PRIORITIES]
        )
        poller = self.consumer_poller()
        try:
            while not self._stopping.is_set():
                for lane in lanes:
                    await lane.refresh()
                msgs: list[Msg] = []
                for lane in lanes:
                    msgs = lane.take()
                    if msgs:
                        break
                if msgs:
                    # What waits in the other lanes (and behind this batch) was delivered
                    # too: keep it from redelivery while this batch runs.
                    keep = asyncio.create_task(self._keep_buffered(lanes))
                    try:
                        await self.process(msgs)
                    finally:
                        keep.cancel()
                    continue
                wake.clear()
                if any(lane.buffered() for lane in lanes):
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=0.5)
        finally:
            await self.stop_helpers(poller, watcher)
            for lane in lanes:
                await lane.stop()
            self.close_handler()
