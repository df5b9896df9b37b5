"""JetStream publishes whose acks come back on one shared inbox: the hot path of every stage.

nats-py's ``js.publish`` is a request: a fresh random token, a future and an
``asyncio.wait_for`` per message, then ``json.loads`` and a dataclass for the reply. At
three or four stored events a job, that bookkeeping cost more than the publish itself
(``python benchmarks/publish_acks.py``). ``PubAcks`` does what nats.go's async publish
does: one subscription on ``<inbox>.*``, a counter for the reply token, one timer per
message, msgspec for the reply. Errors are the same as ``js.publish``'s: ``APIError``
(and its subclasses, with ``err_code``), ``NoStreamResponseError`` when no stream takes
the subject, and ``nats.errors.TimeoutError``.
"""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import PubAck


class _Reply(msgspec.Struct):
    """A JetStream publish ack, or its error."""

    stream: str = ""
    seq: int = 0
    duplicate: bool | None = None
    domain: str | None = None
    error: dict | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode


class PubAcks:
    """Publishes to JetStream and matches each ack to its message by reply token.

    Args:
        nc: A connected client.
        timeout: Seconds to wait for an ack (``js.publish``'s default).
    """

    def __init__(self, nc: Client, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = nc.new_inbox()
        self._sub: Subscription | None = None
        self._subscribing = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[PubAck]] = {}
        self._tokens = itertools.count()

    async def _subscribe(self) -> None:
        async with self._subscribing:  # once, however many publishes come first
            if self._sub is None:
                self._sub = await self.nc.subscribe(
                    f"{self._prefix}.*",
                    cb=self._arrived,
                    pending_msgs_limit=-1,
                    pending_bytes_limit=-1,
                )

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> PubAck:
        """Store ``payload`` on ``subject`` and wait for the stream's ack."""
        if self._sub is None:
            await self._subscribe()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PubAck] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(self.timeout, self._expire, token)
        try:
            reply = f"{self._prefix}.{token}"
            await self.nc.publish(subject, payload, reply=reply, headers=headers)
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(token, None)

    def _expire(self, token: str) -> None:
        future = self._waiting.pop(token, None)
        if future is not None and not future.done():
            future.set_exception(nats.errors.TimeoutError())

    async def _arrived(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) + 1 :], None)
        if future is None or future.done():
            return  # its wait timed out
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = _decode_reply(msg.data)
        except msgspec.DecodeError as exc:
            future.set_exception(nats.js.errors.APIError(description=f"bad ack: {exc}"))
            return
        if reply.error is not None:
            try:  # raises the APIError subclass for the error's code (as js.publish does)
                nats.js.errors.APIError.from_error(reply.error)
            except nats.js.errors.APIError as exc:
                future.set_exception(exc)
            except Exception:  # an error without a code
                future.set_exception(nats.js.errors.APIError(description=str(reply.error)))
            return
        future.set_result(
            PubAck(
                stream=reply.stream, seq=reply.seq, domain=reply.domain, duplicate=reply.duplicate
            )
        )
