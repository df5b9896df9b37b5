"""Audit: a hash chain over every event in the log, and its verification.

Reads ``qbus.>`` in stream order (an ordered consumer: no acks, no redelivery, gap-free
resume from the last recorded sequence); writes ChainRecords to ``qbus_audit.chain`` in
the audit stream. Only one auditor writes: each record is published with
``Nats-Expected-Last-Subject-Sequence``, so a second copy's write is refused and it
resynchronises instead of forking the chain.

``verify_log`` recomputes every digest from the event log and every link of the chain
and names the first event that does not match.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import msgspec
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from qbus.bus.connection import Bus
from qbus.schemas.audit import (
    GENESIS,
    ChainEntry,
    ChainRecord,
    chain_head,
    encoder,
    event_digest,
    next_link,
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
        while not self._stopping.is_set():
            await self._load_tip()
            try:
                await self._follow()
            except _Conflict:
                log.warning("another auditor wrote the chain; resynchronising")

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
                except Exception as exc:  # nats raises its own TimeoutError
                    if not _is_timeout(exc):
                        raise
                    msg = None
                if msg is not None:
                    meta = msg.metadata
                    msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                    if not entries:
                        first_at = loop.time()
                    entries.append(
                        ChainEntry(
                            meta.sequence.stream,
                            msg_id,
                            event_digest(msg.subject, msg_id, msg.data),
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

    async def flushed_to(self, seq: int, timeout: float = 10.0) -> None:
        """Wait until the chain covers stream sequence ``seq`` (for tests and tooling)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.last_seq < seq:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"audit chain at {self.last_seq}, wanted {seq}")
            await asyncio.sleep(0.02)


class _Conflict(Exception):
    pass


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"


@dataclass
class AuditReport:
    """Result of ``verify_log``.

    Attributes:
        ok: True when every audited event matches and the chain is intact.
        checked: Events whose digest was recomputed.
        unaudited: Events in the log after the chain's last record.
        problem: The first broken link, for a person; None when ok.
        broken_seq: Stream sequence of the first broken event.
        broken_event_id: Its event id.
    """

    ok: bool = True
    checked: int = 0
    unaudited: int = 0
    chain_records: int = 0
    problem: str | None = None
    broken_seq: int | None = None
    broken_event_id: str | None = None
    details: dict = field(default_factory=dict)


async def _read_all(bus: Bus, stream: str, subject: str):
    """Yield every message of ``stream`` on ``subject`` in order (an ordered consumer)."""
    info = await bus.js.stream_info(stream)
    last = info.state.last_seq
    if info.state.messages == 0:
        return
    sub = await bus.js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        pending_msgs_limit=100_000,
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            yield msg
            if msg.metadata.sequence.stream >= last or msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()


async def verify_log(bus: Bus) -> AuditReport:
    """Recompute the chain from the event log and compare it with the stored records."""
    cfg = bus.config
    report = AuditReport()
    expected: dict[int, ChainEntry] = {}
    prev = GENESIS
    async for msg in _read_all(bus, cfg.audit_stream, cfg.audit_subject):
        try:
            record = record_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _broken(
                report, f"audit record {msg.metadata.sequence.stream} is unreadable: {exc}"
            )
        report.chain_records += 1
        if record.prev != prev or chain_head(record.prev, record.entries) != record.head:
            first = record.entries[0] if record.entries else None
            return _broken(
                report,
                f"the audit chain itself is broken at record covering events "
                f"{record.first_seq}..{record.last_seq}",
                first,
            )
        prev = record.head
        for entry in record.entries:
            expected[entry.seq] = entry
    last_audited = max(expected, default=0)
    seen: set[int] = set()
    link = GENESIS
    async for msg in _read_all(bus, cfg.stream, bus.subjects.all):
        seq = msg.metadata.sequence.stream
        if seq > last_audited:
            report.unaudited += 1
            continue
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        digest = event_digest(msg.subject, msg_id, msg.data)
        entry = expected.get(seq)
        if entry is None:
            return _broken(
                report,
                f"event at sequence {seq} ({msg.subject}) is in the log but not in the audit chain",
                ChainEntry(seq, msg_id, digest),
            )
        seen.add(seq)
        if entry.digest != digest or entry.event_id != msg_id:
            return _broken(
                report,
                f"event {entry.event_id} at sequence {seq} ({msg.subject}) was altered: "
                f"its digest is {digest[:16]}…, the chain recorded {entry.digest[:16]}…",
                entry,
            )
        link = next_link(link, seq, digest)
        report.checked += 1
    missing = sorted(set(expected) - seen)
    if missing:
        entry = expected[missing[0]]
        return _broken(
            report,
            f"event {entry.event_id} at sequence {entry.seq} was deleted "
            f"from the log ({len(missing)} missing in all)",
            entry,
        )
    if link != prev and last_audited:
        return _broken(report, "the recomputed chain head differs from the recorded head")
    return report


def _broken(report: AuditReport, problem: str, entry: ChainEntry | None = None) -> AuditReport:
    report.ok = False
    report.problem = problem
    if entry is not None:
        report.broken_seq = entry.seq
        report.broken_event_id = entry.event_id
    return report
