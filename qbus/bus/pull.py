"""A continuous pull consumer: keeps pull requests outstanding and hands out what arrives.

nats-py's ``fetch(batch, timeout)`` waits, once it is long-polling, until the whole batch
is in or the timeout passes: on a bus where events trickle through six stages that adds
up to the timeout per hop. This does what nats.go's ``Consume`` does instead: it keeps
about ``batch`` messages requested from the server at all times (``expires`` long, with
idle heartbeats to notice a lost request) and returns whatever has arrived as soon as at
least one message is there.
"""

from __future__ import annotations

import json
import time

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from qbus.bus.connection import Bus

_STATUS = "Status"
_PENDING_MSGS = "Nats-Pending-Messages"


def take_arrived(sub: Subscription, limit: int) -> list[Msg]:
    """Up to ``limit`` messages that have already arrived on ``sub``, without waiting.

    nats-py's ``next_msg`` costs a task, a timer and a uuid per message; after one
    ``next_msg`` has waited for the first message, what is queued behind it is taken here
    (the bookkeeping ``next_msg`` does, for a subscription without a callback).
    """
    queue = sub._pending_queue
    taken: list[Msg] = []
    while len(taken) < limit and not queue.empty():
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        taken.append(msg)
    return taken


class PullConsumer:
    """Messages of a durable pull consumer, delivered as they arrive.

    Args:
        bus: Connected bus.
        durable: Durable consumer name (must exist).
        batch: Messages kept requested; also the most one ``next_batch`` returns.
        expires: Seconds a pull request lives on the server.
        heartbeat: Seconds between the server's idle heartbeats for a request.
    """

    def __init__(
        self,
        bus: Bus,
        durable: str,
        *,
        batch: int = 256,
        expires: float = 30.0,
        # A request lost with its node (or with a consumer leader that moved) is noticed
        # after two missed heartbeats: 2 s keeps a node loss to a few seconds' pause.
        heartbeat: float = 2.0,
    ) -> None:
        self.bus = bus
        self.batch = batch
        self.expires = expires
        self.heartbeat = heartbeat
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{bus.config.stream}.{durable}"
        self._sub: Subscription | None = None
        self._inbox = ""
        self._outstanding = 0
        self._last_seen = 0.0

    async def start(self) -> PullConsumer:
        self._inbox = self.bus.nc.new_inbox()
        self._sub = await self.bus.nc.subscribe(
            self._inbox, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    async def stop(self) -> None:
        """Unsubscribe, handing back what arrived but was never taken.

        Those messages are nak'ed so another copy of the stage gets them now rather than
        after ``ack_wait``.
        """
        if self._sub is None:
            return
        sub, self._sub = self._sub, None
        await sub.unsubscribe()
        queue = sub._pending_queue
        while not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and not (msg.headers and msg.headers.get(_STATUS)):
                await msg.nak()

    async def _request(self) -> None:
        want = self.batch - self._outstanding
        if want >= max(1, self.batch // 2):
            await self._pull(want)

    async def _pull(self, want: int, max_bytes: int | None = None) -> None:
        """Ask the server for ``want`` more messages (with ``max_bytes``: at most that many
        payload bytes), delivered to this consumer's inbox."""
        body = {
            "batch": want,
            "expires": int(self.expires * 1e9),
            "idle_heartbeat": int(self.heartbeat * 1e9),
        }
        if max_bytes is not None:
            body["max_bytes"] = max_bytes
        await self.bus.nc.publish(self._next_subject, json.dumps(body).encode(), reply=self._inbox)
        self._outstanding += want

    async def next_batch(self, timeout: float) -> list[Msg]:
        """Messages that have arrived (at least one), or [] after ``timeout`` seconds."""
        assert self._sub is not None, "start() first"
        now = time.monotonic()
        if self._outstanding and now - self._last_seen > 2 * self.heartbeat + 1:
            # No message and no heartbeat: the request is gone (server restart, reconnect).
            self._outstanding = 0
        await self._request()
        try:
            first = await self._sub.next_msg(timeout=timeout)
        except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
            return []
        msgs: list[Msg] = []
        self._take(first, msgs)
        for msg in take_arrived(self._sub, self.batch - 1):
            self._take(msg, msgs)
        return msgs

    def _take(self, msg: Msg, into: list[Msg]) -> None:
        self._last_seen = time.monotonic()
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status is None and msg.reply:
            self._outstanding = max(0, self._outstanding - 1)
            into.append(msg)
            return
        if status == "100":  # idle heartbeat: the request is alive
            return
        # 408 request expired / 409 limits or leadership: the server tells what it dropped.
        pending = msg.headers.get(_PENDING_MSGS) if msg.headers else None
        if pending is not None:
            self._outstanding = max(0, self._outstanding - int(pending))
        else:
            self._outstanding = 0
