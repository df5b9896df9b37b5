"""Fair ingest: one sender's flood cannot hold up another sender's jobs (issue 17).

Ingest reads every submit subject through one durable consumer, in stream order. Served
in that order, a valid job waits behind whatever one sender published before it: 10,000
bad submissions delay every other job by the time it takes to answer all of them.

``FairStageRunner`` instead keeps a window of delivered messages (up to ``window``
messages and ``window_bytes`` bytes; the server sends more as it drains) and sorts them
into one lane per **sender**. Each batch it hands the handler takes messages round-robin
from the lanes, an equal share of the batch from each, so a message from a quiet sender
is handled in the next batch whatever a loud one has queued. Within a lane, order is
arrival order. Batches are sized to take about ``batch_seconds`` each (from the recent
time per message, between ``MIN_BATCH`` and ``batch``): a quiet sender's message waits
for the batch in progress and its own, not for 64 expensive inputs of a loud one.

A sender is a submit subject: ``<prefix>.submit`` and each tenant's
``<prefix>.submit.<tenant>`` (unknown subjects under ``submit.`` share one lane). With
NATS auth a tenant's credentials let it publish only on its own subject, so one tenant
cannot take another's share; on an open bus (one trusted machine) programs that should
not wait for each other publish under their own names (``Client(tenant=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

from nats.aio.msg import Msg

from qbus.bus.connection import MAX_MSG_SIZE, Bus
from qbus.bus.pull import PullConsumer, take_arrived
from qbus.bus.runner import StageRunner

log = logging.getLogger("qbus.fair")

UNKNOWN_SENDER = "?"
"""The lane of messages on subjects under ``submit.`` that name no tenant."""
MIN_BATCH = 4
"""The fewest messages a batch takes when there are that many: a floor on throughput."""


class SenderLanes:
    """Delivered messages, one FIFO lane per sender, taken round-robin.

    Args:
        sender: The lane key of a message: who sent it.
    """

    def __init__(self, sender: Callable[[Msg], str]) -> None:
        self._sender = sender
        self._lanes: OrderedDict[str, deque[Msg]] = OrderedDict()
        self.count = 0
        self.bytes = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self) -> Iterator[Msg]:
        """Every message in a lane, as they are now (the lanes may change meanwhile)."""
        return iter(self.waiting())

    def add(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            key = self._sender(msg)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = deque()
            lane.append(msg)
            self.count += 1
            self.bytes += len(msg.data)

    def take(self, limit: int) -> list[Msg]:
        """Up to ``limit`` messages: an equal share of ``limit`` from every lane (at least
        one; with more lanes than ``limit``, one from each of the first ``limit`` lanes),
        lanes that had their turn moved to the back, so the others come first next time."""
        taken: list[Msg] = []
        if not self._lanes:
            return taken
        share = max(1, limit // len(self._lanes))
        for key in list(self._lanes):
            if len(taken) >= limit:
                break
            lane = self._lanes[key]
            for _ in range(min(share, len(lane), limit - len(taken))):
                taken.append(lane.popleft())
            if lane:
                self._lanes.move_to_end(key)
            else:
                del self._lanes[key]
        self.count -= len(taken)
        self.bytes -= sum(len(m.data) for m in taken)
        return taken

    def senders(self) -> int:
        """Senders with messages waiting (one lane each)."""
        return len(self._lanes)

    def waiting(self) -> list[Msg]:
        """Every message still in a lane."""
        return [msg for lane in self._lanes.values() for msg in lane]

    def drain(self) -> list[Msg]:
        """Empty the lanes; what they held."""
        msgs = self.waiting()
        self._lanes.clear()
        self.count = self.bytes = 0
        return msgs


class WindowedPull(PullConsumer):
    """A pull consumer that keeps requesting until ``lanes`` holds ``window`` messages or
    ``window_bytes`` bytes, not just ``batch``."""

    def __init__(
        self, bus: Bus, durable: str, lanes: SenderLanes, *, window: int, window_bytes: int
    ) -> None:
        super().__init__(bus, durable, batch=window)
        self.lanes = lanes
        self.window = window
        self.window_bytes = window_bytes

    async def _request(self) -> None:
        want = self.window - self._outstanding - self.lanes.count
        room = self.window_bytes - self.lanes.bytes
        # Only with room for the largest message: a request whose byte budget is below
        # the next message's size would end without delivering it.
        if want >= max(1, self.window // 8) and room >= MAX_MSG_SIZE:
            await self._pull(want, max_bytes=room)

    async def fill(self, timeout: float) -> None:
        """Move what has arrived into the lanes; wait up to ``timeout`` seconds for a
        message only when the lanes are empty."""
        assert self._sub is not None, "start() first"
        if not self.lanes:
            self.lanes.add(await self.next_batch(timeout))  # it requests more itself
            return
        await self._request()
        arrived: list[Msg] = []
        for msg in take_arrived(self._sub, self.window):
            self._take(msg, arrived)
        self.lanes.add(arrived)


class FairStageRunner(StageRunner):
    """A StageRunner that serves senders in turn (module docstring).

    Args:
        window: Delivered messages held at most (below the consumer's max_ack_pending).
        window_bytes: Their payload bytes at most (at least the largest message's size).
        batch_seconds: The time a batch should take.
        **kwargs: As for ``StageRunner``; ``batch`` is the most handled at once.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        window: int = 16_384,
        window_bytes: int = 64 << 20,
        batch_seconds: float = 0.01,
        **kwargs,
    ) -> None:
        super().__init__(bus, **kwargs)
        self.window = window
        self.window_bytes = max(window_bytes, MAX_MSG_SIZE)
        self.batch_seconds = batch_seconds
        self.lanes = SenderLanes(self._sender)
        self._per_message = batch_seconds / self.batch  # seconds, a moving average

    def batch_size(self) -> int:
        """Messages the next batch takes: about ``batch_seconds`` of recent work."""
        fit = int(self.batch_seconds / max(self._per_message, 1e-6))
        return max(MIN_BATCH, min(self.batch, fit))

    def _sender(self, msg: Msg) -> str:
        tenant = self.bus.subjects.tenant_of_submit(msg.subject)
        return UNKNOWN_SENDER if tenant is None else tenant

    async def run(self) -> None:
        """Consume until ``stop()``."""
        await self.bus.ensure_consumer(self.durable, self.subjects)
        await self.start_handler()
        consumer = await WindowedPull(
            self.bus,
            self.durable,
            self.lanes,
            window=self.window,
            window_bytes=self.window_bytes,
        ).start()
        log.info(
            "stage %s consuming %s as %s, senders in turn", self.stage, self.subjects, self.durable
        )
        watcher = self.dead_letter_watcher([self.durable])
        poller = self.consumer_poller()
        # Messages wait in the lanes for longer than a batch: keep them from redelivery.
        keep = asyncio.create_task(self._keepalive(self.lanes))
        try:
            while not self._stopping.is_set():
                await consumer.fill(timeout=0.5)
                msgs = self.lanes.take(self.batch_size())
                if msgs:
                    started = time.perf_counter()
                    await self.process(msgs)
                    took = (time.perf_counter() - started) / len(msgs)
                    self._per_message += 0.2 * (took - self._per_message)
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep
            await self.stop_helpers(poller, watcher)
            # Hand back what was never handled, so another copy takes it now.
            for msg in self.lanes.drain():
                with contextlib.suppress(Exception):
                    await msg.nak()
            await consumer.stop()
            self.close_handler()
