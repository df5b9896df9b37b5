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

GENESIS = "0" * 64


class ChainEntry(msgspec.Struct, frozen=True, array_like=True):
    """One audited event: its stream sequence, event id and digest (hex)."""

    seq: int
    event_id: str
    digest: str


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


encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(ChainRecord)
