"""``verify_log``: replay the whole event log from sequence 1 and check everything.

It recomputes every digest and every link of the audit chain (written by the audit
stage, qbus/consumers/audit.py), re-derives every result hash from the events it came
from, checks every anchored Merkle proof (and, given a chain, its on-chain root) and
names the exact event of each problem (qbus/verifier/audit_checks.py holds the checks).
Offline logic, used by ``qbus audit verify``, ``qbus up``'s self-check and the tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js import api as js_api

from qbus.bus.connection import Bus
from qbus.bus.signing import HEADER as SIGNATURE
from qbus.frontends.bounds import TooDeep, check_json_depth
from qbus.schemas.audit import (
    GENESIS,
    AuditProblem,
    ChainEntry,
    chain_head,
    event_digest,
    record_decoder,
)
from qbus.schemas.events import ResultAnchored
from qbus.verifier.audit_checks import LogChecker

RootReader = Callable[[ResultAnchored], Awaitable["tuple[str, int] | None"]]
"""Reads the (root as 0x-hex, leaf count) a contract holds for an anchor's batch; None
when the contract has no such batch. Raises when the chain cannot be read."""


class AuditReport(msgspec.Struct, kw_only=True):
    """Result of ``verify_log``: every problem found, each pinned to its event.

    Attributes:
        ok: True when no check found anything.
        events: Events read from the log.
        checked: Events whose digest was compared with the audit chain.
        unaudited: Events in the log after the chain's last record (not yet chained).
        chain_records: Audit chain records read.
        results_checked: JobCompleted events whose result hash was re-derived.
        anchors_checked: ResultAnchored events whose proof was checked.
        chain_roots_checked: Anchored batches whose root was read from the chain.
        signatures_checked: Final events and execution results whose stage signature
            was checked (0 without the stages' public keys: ``provenance`` says so).
        provenance: ``checked``, or why stage signatures were not checked.
        chain_status: ``checked``, or why the on-chain roots were not compared.
        problems: Everything found, in stream order (``AuditProblem``).
        problem: The first problem's message, for a person; None when ok.
        broken_seq: Stream sequence of the first problem's event.
        broken_event_id: Its event id.
    """

    ok: bool = True
    events: int = 0
    checked: int = 0
    unaudited: int = 0
    chain_records: int = 0
    results_checked: int = 0
    anchors_checked: int = 0
    chain_roots_checked: int = 0
    chain_status: str = "no anchors in the log"
    signatures_checked: int = 0
    provenance: str = "checked"
    problems: list[AuditProblem] = []
    problem: str | None = None
    broken_seq: int | None = None
    broken_event_id: str | None = None


async def read_all(bus: Bus, stream: str, subject: str) -> AsyncIterator[Msg]:
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


async def verify_log(
    bus: Bus,
    *,
    root_reader: RootReader | None = None,
    keep_jobs: bool = False,
    chain_note: str = "no chain configured",
) -> AuditReport:
    """Replay the whole event log from sequence 1 and check everything it can.

    The audit chain's records are read first and checked link by link; then every event
    of the log is fed to ``LogChecker`` (digests against the chain, envelopes, causes,
    circuit hashes, result hashes, Merkle proofs); finally each anchored batch's root is
    compared with the chain's when ``root_reader`` is given.

    Args:
        bus: Connected bus.
        root_reader: Reads a batch's root from the anchor contract; None skips that check
            (the report's ``chain_status`` then says ``chain_note``).
        keep_jobs: Keep the per-job records (use ``audit_log`` to get them).
        chain_note: Why there is no ``root_reader``, for the report.
    """
    report, _ = await audit_log(
        bus, root_reader=root_reader, keep_jobs=keep_jobs, chain_note=chain_note
    )
    return report


async def audit_log(
    bus: Bus,
    *,
    root_reader: RootReader | None = None,
    keep_jobs: bool = False,
    chain_note: str = "no chain configured",
) -> tuple[AuditReport, LogChecker]:
    """``verify_log``, also returning the checker (its per-job records for the export)."""
    cfg = bus.config
    report = AuditReport()
    chain: dict[int, ChainEntry] = {}
    record_problems: list[AuditProblem] = []
    prev = GENESIS
    async for msg in read_all(bus, cfg.audit_stream, cfg.audit_subject):
        seq = msg.metadata.sequence.stream
        try:
            check_json_depth(msg.data)  # a forged record must not crash the check
            record = record_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError, TooDeep) as exc:
            record_problems.append(
                AuditProblem(
                    check="chain_record",
                    message=f"audit record {seq} is unreadable: {exc}; the chain ends before it",
                    subject=msg.subject,
                )
            )
            break
        report.chain_records += 1
        if record.prev != prev or chain_head(record.prev, record.entries) != record.head:
            first = record.entries[0] if record.entries else None
            record_problems.append(
                AuditProblem(
                    check="chain_record",
                    message=f"the audit chain itself is broken at its record {seq} covering "
                    f"events {record.first_seq}..{record.last_seq} (a record was removed or "
                    "rewritten); the events after it are not trusted to the chain",
                    seq=first.seq if first else None,
                    event_id=first.event_id if first else "",
                    subject=first.subject if first else "",
                    type=first.type if first else "",
                )
            )
            break
        prev = record.head
        for entry in record.entries:
            chain[entry.seq] = entry
    checker = LogChecker(
        bus.subjects, chain, keep_jobs=keep_jobs, proof_check=_has_keccak(), trust=bus.trust
    )
    async for msg in read_all(bus, cfg.stream, bus.subjects.all):
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        checker.feed(
            msg.metadata.sequence.stream,
            msg.subject,
            msg_id,
            msg.data,
            event_digest(msg.subject, msg_id, msg.data),
            signature=(msg.headers or {}).get(SIGNATURE),
        )
    report.chain_status = await _check_roots(checker, report, root_reader, chain_note)
    checker.finish()
    report.events = checker.events
    report.checked = checker.checked
    report.unaudited = checker.unaudited
    report.results_checked = checker.results_checked
    report.anchors_checked = checker.anchors_checked
    report.signatures_checked = checker.signatures_checked
    if bus.trust is None:
        report.provenance = "not checked: no stage public keys ([signing], docs/security.md)"
    report.problems = record_problems + checker.problems
    if report.problems:
        first = report.problems[0]
        report.ok = False
        report.problem = first.message
        report.broken_seq = first.seq
        report.broken_event_id = first.event_id or None
    return report, checker


async def _check_roots(
    checker: LogChecker,
    report: AuditReport,
    root_reader: RootReader | None,
    chain_note: str,
) -> str:
    """Compare each anchored batch's root with the contract's; returns the chain status."""
    if not checker.anchors:
        return "no anchors in the log"
    if root_reader is None:
        status = f"on-chain roots not compared: {chain_note}"
        for anchor in checker.anchors:
            anchor.chain_detail = status
        return status
    roots: dict[tuple[int, str, int], tuple[str, int] | None] = {}
    for anchor in checker.anchors:
        event = anchor.event
        key = (event.chain_id, event.contract.lower(), event.batch_id)
        if key not in roots:
            try:
                roots[key] = await root_reader(event)
            except Exception as exc:
                status = f"on-chain roots not compared: the chain cannot be read ({exc})"
                for a in checker.anchors:
                    a.chain_ok, a.chain_detail = None, status
                return status
            report.chain_roots_checked += 1
        found = roots[key]
        where = f"batch {event.batch_id} of {event.contract} on chain {event.chain_id}"
        if found is None:
            anchor.chain_ok, anchor.chain_detail = False, f"{where} is not anchored"
            checker.anchor_problem(anchor, "anchor_chain", f"{where} is not anchored")
            continue
        on_chain, count = found
        if on_chain.lower().removeprefix("0x") != event.root.lower().removeprefix("0x"):
            message = (
                f"{where} has root {on_chain[:18]}… on chain, the event names "
                f"{event.root[:18]}… (tx {event.tx_hash[:18]}…)"
            )
        elif count != event.batch_size or not 0 <= event.leaf_index < count:
            message = (
                f"{where} holds {count} results on chain, the event says "
                f"{event.batch_size} with this result at index {event.leaf_index}"
            )
        else:
            anchor.chain_ok, anchor.chain_detail = True, f"{where}: root matches"
            continue
        anchor.chain_ok, anchor.chain_detail = False, message
        checker.anchor_problem(anchor, "anchor_chain", message)
    return "checked"


def _has_keccak() -> bool:
    try:
        import eth_hash.auto  # noqa: F401
    except ImportError:
        return False
    return True
