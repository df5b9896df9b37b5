"""One reader of the final events for all of a gateway's ``/v1/results`` streams.

A JetStream consumer per SSE client would send every final event through the gateway's
NATS connection once per client: with 200 clients and a burst of 1,000 results that is
hundreds of megabytes at once, and nats-server cuts the connection off as a slow consumer
(measured: benchmarks/gateway.py). So the live tail is read once, each event is encoded
once, and the hub hands the encoded message to every client's queue.

A client that resumes (``Last-Event-ID``) joins the hub first and then replays what the
log holds after its id with its own ordered consumer; the hub's copies of events the
replay already gave are skipped by sequence, so nothing is missed and nothing is sent
twice. A client too slow to keep up (its queue full) has its stream ended: it reconnects
with its last id and resumes from the log, losing nothing. The hub holds no state beyond
the events in flight; it starts with the first client and stops with the last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from qbus.bus.connection import Bus
from qbus.bus.tenancy import tenant_of
from qbus.client import Delivery, ResultStream
from qbus.gateway.auth import Caller
from qbus.gateway.views import event_item, sse_data

log = logging.getLogger("qbus.gateway.hub")

QUEUE_LIMIT = 10_000
"""Messages a client may be behind before its stream is ended (it resumes by id)."""
REPLAY_IDLE = 2.0
"""Seconds a replay waits for a stored event it was told of before it ends."""


@dataclass(frozen=True)
class Message:
    """One final event, encoded once for every client.

    Attributes:
        sequence: Its event-log sequence (the SSE ``id``).
        type: Its event type (the SSE ``event``).
        tenant: Its job's tenant ("" for none), for each client's filter.
        data: The SSE ``data`` (``views.event_item`` as JSON).
    """

    sequence: int
    type: str
    tenant: str
    data: str


def message_of(delivery: Delivery) -> Message:
    """The encoded message of one final event."""
    item = event_item(delivery.sequence, delivery.subject, delivery.event)
    return Message(delivery.sequence, item["type"], tenant_of(delivery.event), sse_data(item))


_END = None  # put on a client's queue: its stream ends (the hub stopped, or it fell behind)


class ResultHub:
    """The live tail of ``<prefix>.result.*``, read once and fanned out to clients."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._clients: set[asyncio.Queue[Message | None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._stream: ResultStream | None = None
        self._lock = asyncio.Lock()

    async def join(self) -> asyncio.Queue[Message | None]:
        """A new client's queue; every final event stored from now on is put on it.

        The hub's consumer exists before this returns, so an event stored after the call
        reaches the queue.
        """
        async with self._lock:
            if self._reader is None or self._reader.done():
                stream = ResultStream(self._bus)
                await stream.start()
                self._stream = stream
                self._reader = asyncio.create_task(self._read(stream), name="qbus-result-hub")
            # One slot beyond the limit: room for the end mark of a client that fell behind.
            queue: asyncio.Queue[Message | None] = asyncio.Queue(QUEUE_LIMIT + 1)
            self._clients.add(queue)
            return queue

    def leave(self, queue: asyncio.Queue[Message | None]) -> None:
        """A client is gone; the last one stops the hub's consumer."""
        self._clients.discard(queue)
        if not self._clients and self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _read(self, stream: ResultStream) -> None:
        try:
            async with stream:
                async for delivery in stream:
                    message = message_of(delivery)
                    for queue in list(self._clients):
                        if queue.qsize() >= QUEUE_LIMIT:
                            # Behind by QUEUE_LIMIT: its stream ends after what it has;
                            # it resumes by its last id, from the log.
                            self._end(queue)
                        else:
                            queue.put_nowait(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the result hub's reader failed; its clients' streams end")
        finally:
            # A reader that ``leave`` stopped is no longer the hub's (a new one may serve
            # clients that joined since): only the current reader ends the clients.
            if self._reader is asyncio.current_task():
                for queue in list(self._clients):
                    self._end(queue)

    def _end(self, queue: asyncio.Queue[Message | None]) -> None:
        """Put the end mark after what ``queue`` holds (its spare slot) and drop it."""
        if queue in self._clients:
            self._clients.discard(queue)
            queue.put_nowait(_END)


async def replay(bus: Bus, after: int) -> AsyncIterator[Message]:
    """The final events the log holds after sequence ``after``, up to its end now.

    Stops when a delivery says nothing more is stored, or after ``REPLAY_IDLE`` seconds
    without one (the last stored messages were no events, and were skipped).
    """
    stream = ResultStream(bus, start_sequence=after + 1, idle_timeout=REPLAY_IDLE)
    async with stream:
        if await stream.backlog() == 0:
            return
        async for delivery in stream:
            yield message_of(delivery)
            if stream.pending == 0:
                return


async def client_messages(
    hub: ResultHub,
    queue: asyncio.Queue[Message | None],
    bus: Bus,
    caller: Caller,
    after: int | None,
) -> AsyncIterator[Message]:
    """Every final event ``caller`` may see: those after ``after`` in the log (when given),
    then the live ones from ``queue`` (``hub.join()``, called before the client was
    answered), each once and in log order. Leaves the hub when it ends."""
    try:
        last = 0
        if after is not None:
            last = after
            async for message in replay(bus, after):
                last = message.sequence
                if caller.may_see(message.tenant):
                    yield message
        while (message := await queue.get()) is not None:
            if message.sequence > last and caller.may_see(message.tenant):
                last = message.sequence
                yield message
    finally:
        hub.leave(queue)
