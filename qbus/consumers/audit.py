"""Audit: a hash chain over every event in the log, and its verification.

Reads ``qbus.>`` in stream order (an ordered consumer: no acks, no redelivery, gap-free
resume from the last recorded sequence); writes ChainRecords to ``qbus_audit.chain`` in
the audit stream. Only one auditor writes: each record is published with
``Nats-Expected-Last-Subject-Sequence``, so a second copy's write is refused and it
resynchronises instead of forking the chain.

The offline check of the whole log, ``verify_log``, lives below the stages in
qbus/verifier/log_audit.py: the CLI and tests run it without importing this stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.errors import Error as NatsError
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from qbus.bus.connection import Bus
from qbus.bus.pull import take_arrived
from qbus.frontends.bounds import shallow
from qbus.observability import metrics
from qbus.schemas.audit import (
    GENESIS,
    ChainEntry,
    ChainRecord,
    chain_head,
    encoder,
    event_digest,
    record_decoder,
)

log = logging.getLogger("qbus.audit")


class AuditStage:
    """Keeps the audit chain up to date with the event log.

    Args:
        bus: Connected, provisioned bus.
        max_batch: Events per chain record at most.
        flush_interval: Seconds between records while events trickle in.
    """

    stage = "audit"

    def __init__(self, bus: Bus, *, max_batch: int = 1000, flush_interval: float = 0.2):
        self.bus = bus
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self._stopping = asyncio.Event()
        self.head = GENESIS
        self.last_seq = 0
        self._record_seq = 0  # audit-stream sequence of our last record

    def stop(self) -> None:
        self._stopping.set()

    async def _load_tip(self) -> None:
        cfg = self.bus.config
        try:
            msg = await self.bus.js.get_last_msg(cfg.audit_stream, cfg.audit_subject)
        except NotFoundError:
            self.head, self.last_seq, self._record_seq = GENESIS, 0, 0
            return
        record = record_decoder.decode(msg.data)
        self.head, self.last_seq, self._record_seq = record.head, record.last_seq, msg.seq

    async def run(self) -> None:
        """Follow the event log until ``stop()``."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self._load_tip()
                await self._follow()
                delay = 0.1
            except _Conflict:
                log.warning("another auditor wrote the chain; resynchronising")
            except (TimeoutError, NatsError) as exc:
                if self._stopping.is_set():
                    return  # the connection is draining under us: a clean stop
                # A slow or restarting server must not kill the auditor: it resumes from
                # the chain's tip, so nothing is skipped or chained twice.
                log.warning("audit: %s; retrying in %.1f s", exc or type(exc).__name__, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _follow(self) -> None:
        cfg = self.bus.config
        sub = await self.bus.js.subscribe(
            self.bus.subjects.all,
            stream=cfg.stream,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            config=js_api.ConsumerConfig(opt_start_seq=self.last_seq + 1),
            pending_msgs_limit=100_000,
        )
        entries: list[ChainEntry] = []
        first_at = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                wait = self.flush_interval
                if entries:
                    wait = max(0.0, first_at + self.flush_interval - loop.time())
                try:
                    msg = await sub.next_msg(timeout=max(wait, 0.001))
                except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
                    msg = None
                if msg is not None:
                    if not entries:
                        first_at = loop.time()
                    # What is queued behind it too, without a wait per message.
                    room = max(self.max_batch - len(entries) - 1, 0)
                    for got in [msg, *take_arrived(sub, room)]:
                        msg_id = (got.headers or {}).get("Nats-Msg-Id", "")
                        entries.append(
                            ChainEntry(
                                got.metadata.sequence.stream,
                                msg_id,
                                event_digest(got.subject, msg_id, got.data),
                                got.subject,
                                _tag_of(got.data),
                            )
                        )
                # One record per batch or per flush interval, not per event: the chain
                # costs a write every 0.2 s at most while events trickle in.
                due = entries and (
                    len(entries) >= self.max_batch or loop.time() - first_at >= self.flush_interval
                )
                if due:
                    await self._write(entries)
                    entries = []
        finally:
            if entries and not self._stopping.is_set():
                await self._write(entries)
            await sub.unsubscribe()

    async def _write(self, entries: list[ChainEntry]) -> None:
        head = chain_head(self.head, entries)
        record = ChainRecord(
            first_seq=entries[0].seq,
            last_seq=entries[-1].seq,
            prev=self.head,
            head=head,
            entries=entries,
        )
        cfg = self.bus.config
        try:
            ack = await self.bus.js.publish(
                cfg.audit_subject,
                encoder.encode(record),
                headers={
                    "Nats-Msg-Id": f"chain-{record.first_seq}-{record.last_seq}",
                    "Nats-Expected-Last-Subject-Sequence": str(self._record_seq),
                },
            )
        except APIError as exc:
            if exc.err_code == 10071:  # wrong last sequence: someone else wrote
                raise _Conflict from exc
            raise
        self.head, self.last_seq, self._record_seq = head, record.last_seq, ack.seq
        metrics.AUDIT_CHAINED.inc(len(entries))
        metrics.AUDIT_LAST_SEQUENCE.set(record.last_seq)

    async def flushed_to(self, seq: int, timeout: float = 10.0) -> None:
        """Wait until the chain covers stream sequence ``seq`` (for tests and tooling)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.last_seq < seq:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"audit chain at {self.last_seq}, wanted {seq}")
            await asyncio.sleep(0.02)


class _Conflict(Exception):
    pass


class _Tag(msgspec.Struct):
    type: str = ""


_tag_decoder = msgspec.json.Decoder(_Tag)


def _tag_of(data: bytes) -> str:
    """The event's ``type`` tag, "" when the payload is not a JSON object with one."""
    try:
        # Even skipping the other fields recurses: too deep a payload would raise a
        # RecursionError here and stop the chain (qbus/frontends/bounds.py).
        tag = _tag_decoder.decode(shallow(data)).type
    except (msgspec.ValidationError, msgspec.DecodeError):
        return ""
    return tag if isinstance(tag, str) else ""
