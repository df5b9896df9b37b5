"""Priorities: an executor drains ``high`` before ``normal`` before ``low``.

The router publishes a job on ``<prefix>.exec.<engine>.<job>`` (normal) or
``<prefix>.exec.<engine>.<priority>.<job>`` (high, low); each engine has one durable
consumer per priority (``Bus.ensure_executor``). ``PriorityStageRunner`` keeps pull
requests outstanding on all three and, each time it is free, takes the next batch from
the highest lane that has messages. Priority decides fetch order only: a job already
running is never interrupted, and a batch already taken is finished first.

Beside those three light lanes, an executor runs ``[lanes] heavy_slots`` heavy slots: each
a consumer of the engine's heavy durable (``execute_heavy-<engine>``, subjects
``<prefix>.exec.<engine>.heavy.<job>``) with its own handler and sandbox worker, one
message at a time. A heavy run therefore never occupies the light lanes' worker, and a
light job never waits behind one (docs/routing.md, "Heavy lane").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from nats.aio.msg import Msg

from qbus.bus.pull import PullConsumer
from qbus.bus.runner import Handler, StageRunner
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


class _HeavySlot(StageRunner):
    """One heavy slot: a StageRunner on the heavy durable whose dead letters the light
    runner's watcher reports (one watcher per durable, not one per slot)."""

    def dead_letter_watcher(self, consumers: list[str]) -> asyncio.Task | None:
        return None

    async def process(self, msgs: list[Msg]) -> None:
        # "Still working" at once, before the run: the message may have waited since its
        # delivery (a busy event loop, a worker starting), and ack_wait counts from there.
        # Light lanes do not: a job of milliseconds would pay a publish for nothing.
        for msg in msgs:
            await msg.in_progress()
        await super().process(msgs)


class PriorityStageRunner(StageRunner):
    """A StageRunner for one engine's executors that fetches high, normal, low in turn.

    Args:
        engine: The engine whose three consumers it reads.
        heavy: One handler per heavy slot (each with its own sandbox); none: no slots.
        **kwargs: As for ``StageRunner`` (``durable`` and ``subjects`` name the normal
            lane, for metrics and logs).
    """

    def __init__(self, bus, *, engine: str, heavy: list[Handler] | None = None, **kwargs) -> None:
        super().__init__(bus, **kwargs)
        self.engine = engine
        self.heavy = list(heavy or [])
        self.slots: list[StageRunner] = []

    def _start_slots(self) -> list[asyncio.Task]:
        durable = self.bus.executor_durable(self.engine, "heavy")
        self.slots = [
            _HeavySlot(
                self.bus,
                stage=self.stage,
                durable=durable,
                subjects=[self.bus.subjects.exec(self.engine, lane="heavy")],
                handler=handler,
                # One message at a time: a second heavy job waits in the stream, where
                # another executor copy's free slot can take it.
                batch=1,
                # Heavy runs take minutes: "still working" every ack_wait/3 meanwhile.
                heartbeat=True,
                consumer_poll=0,
                retries=self.retries,
            )
            for handler in self.heavy
        ]
        return [
            asyncio.create_task(slot.run(), name=f"heavy-{i}") for i, slot in enumerate(self.slots)
        ]

    def stop(self) -> None:
        """Stop the light lanes and the heavy slots, each after its current run."""
        super().stop()
        for slot in self.slots:
            slot.stop()

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
        log.info(
            "executor %s consuming priorities %s and %d heavy slot(s)",
            self.engine,
            ", ".join(PRIORITIES),
            len(self.heavy),
        )
        # Messages the executors gave up on become dead letters (qbus/bus/deadletter.py).
        durables = [self.bus.executor_durable(self.engine, p) for p in PRIORITIES]
        if self.heavy:
            durables.append(self.bus.executor_durable(self.engine, "heavy"))
        watcher = self.dead_letter_watcher(durables)
        poller = self.consumer_poller()
        slots = self._start_slots()
        try:
            while not self._stopping.is_set():
                # A heavy slot that died (its consumer could not be made, …) ends the
                # executor, so its supervisor restarts it rather than run without slots.
                for slot in slots:
                    if slot.done() and not slot.cancelled() and slot.exception():
                        raise RuntimeError("a heavy slot stopped") from slot.exception()
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
            for slot in self.slots:
                slot.stop()
            await self.stop_helpers(poller, watcher)
            for lane in lanes:
                await lane.stop()
            self.close_handler()
            # Each slot ends after its current run, closing its own handler.
            await asyncio.gather(*slots, return_exceptions=True)
