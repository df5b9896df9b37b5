"""The audit hash chain: records kept in their own stream, one per batch of events.

For each event at stream sequence ``seq``::

    digest = sha256(subject \\n msg_id \\n payload)
    link   = sha256(prev_link || seq (8 bytes, big endian) || digest)

A ChainRecord covers a run of consecutive events and names the link before it and its
last link (``head``), so the records themselves form a chain.
"""

from __future__ import annotations

import hashlib

import msgspec

from qbus.schemas.events import Verification

GENESIS = "0" * 64


class ChainEntry(msgspec.Struct, frozen=True, array_like=True):
    """One audited event: its stream sequence, event id and digest (hex).

    ``subject`` and ``type`` (the event's tag) are kept so that a deleted event can be
    named by more than its id. They are not part of the link: the subject is already
    inside the digest, and both are only as trustworthy as the chain record that holds
    them. Records written before they existed decode with them empty.
    """

    seq: int
    event_id: str
    digest: str
    subject: str = ""
    type: str = ""


class ChainRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of chain entries.

    Attributes:
        first_seq, last_seq: Stream sequences covered (gaps are deleted messages).
        prev: The link before ``first_seq`` (``GENESIS`` for the first record).
        head: The link after ``last_seq``.
        entries: One entry per event.
    """

    first_seq: int
    last_seq: int
    prev: str
    head: str
    entries: list[ChainEntry]


def event_digest(subject: str, msg_id: str, payload: bytes) -> str:
    """Digest of one stored event."""
    h = hashlib.sha256(subject.encode())
    h.update(b"\n")
    h.update(msg_id.encode())
    h.update(b"\n")
    h.update(payload)
    return h.hexdigest()


def next_link(prev: str, seq: int, digest: str) -> str:
    """The chain link after ``prev`` for the event at ``seq``."""
    return hashlib.sha256(
        bytes.fromhex(prev) + seq.to_bytes(8, "big") + bytes.fromhex(digest)
    ).hexdigest()


def chain_head(prev: str, entries: list[ChainEntry]) -> str:
    """Fold ``entries`` onto ``prev``."""
    link = prev
    for entry in entries:
        link = next_link(link, entry.seq, entry.digest)
    return link


class AuditProblem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing ``qbus audit verify`` found wrong, pinned to the event it concerns.

    Attributes:
        check: Which check failed (the stable codes of docs/audit.md: ``chain_altered``,
            ``chain_deleted``, ``result_hash`` …).
        message: What is wrong, for a person.
        seq: Stream sequence of the event (for a deleted one: where it was).
        subject: Its subject.
        event_id: Its event id (``Nats-Msg-Id``).
        type: Its event tag (``job.completed`` …).
        job_id: The job it belongs to, when known.
        related_seq: The event it was compared with (the ExecutionCompleted a
            JobCompleted answers …), when there is one.
    """

    check: str
    message: str
    seq: int | None = None
    subject: str = ""
    event_id: str = ""
    type: str = ""
    job_id: str = ""
    related_seq: int | None = None


class EventRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one event of a job sits in the log (for the export report)."""

    seq: int
    type: str
    subject: str
    event_id: str
    timestamp: float


class AnchorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A job's ResultAnchored and what the audit made of it.

    Attributes:
        seq: Stream sequence of the ResultAnchored event.
        batch_id, root, proof, leaf_index, tx_hash, block_number, chain_id, contract:
            As published.
        proof_ok: The inclusion proof leads from the job's result hash to ``root``
            (None: not checked, the Merkle module is missing).
        chain_root_ok: The contract holds ``root`` for ``batch_id`` (None: no chain was
            reachable, so not checked).
        chain_detail: Why the chain check did not run, or what it found.
    """

    seq: int
    batch_id: int
    root: str
    proof: list[str]
    leaf_index: int
    tx_hash: str
    block_number: int
    chain_id: int
    contract: str
    proof_ok: bool | None = None
    chain_root_ok: bool | None = None
    chain_detail: str = ""


class JobAudit(msgspec.Struct, kw_only=True):
    """One line of ``qbus audit export``: a job's path through the log and its checks.

    Attributes:
        kind: Always ``job`` (the summary line has ``summary``).
        job_id: The job.
        status: ``completed``, ``failed``, ``rejected`` or ``open`` (no final event yet).
        events: Every event of the job in log order.
        final_seq: Stream sequence of the final event.
        result_hash: As published on the JobCompleted.
        verification: The verifier's verdict, as published.
        code: The error code of a JobFailed/JobRejected.
        anchor: The job's anchoring, when it was anchored.
        ok: No problem was found in any of the job's events.
        problems: What was found.
    """

    kind: str = "job"
    job_id: str
    status: str = "open"
    events: list[EventRef] = []
    final_seq: int | None = None
    result_hash: str | None = None
    verification: Verification | None = None
    code: str | None = None
    anchor: AnchorStatus | None = None
    ok: bool = True
    problems: list[AuditProblem] = []


encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(ChainRecord)
