"""Bounds on untrusted text, checked before a recursive or native parser sees it.

msgspec decodes JSON recursively and stops with a ``RecursionError`` near Python's
recursion limit (about 1,000 levels); pyQuil's native parser crashes the whole process
(SIGSEGV) on about 20,000 nested parentheses. A submission is a few hundred bytes, so
such nesting costs an attacker nothing: every JSON payload a stage decodes and every
Quil program is measured here first, by a scan that does no recursion at all.

The scan skips the contents of double-quoted strings (JSON's, and Quil's ``PRAGMA``
strings), so brackets inside a string never count. It costs about a microsecond on a
typical submission: when the text holds no more opening brackets than the limit it
cannot nest deeper, and only then is it looked at more closely.
"""

from __future__ import annotations

import functools
import re
from itertools import accumulate, repeat
from operator import sub

import msgspec

from qbus.errors import QbusError
from qbus.schemas.events import Event, decode

__all__ = [
    "MAX_JSON_DEPTH",
    "UNDECODABLE",
    "TooDeep",
    "check_json_depth",
    "clipped",
    "decode_event",
    "nested_deeper_than",
    "shallow",
    "top_level_only",
]

# Deepest JSON nesting accepted in an event. The deepest real event (a result with
# per-point sweep counts, or a noise model inside an inline circuit) nests about 8
# levels; 64 leaves room for future fields and stays far below msgspec's ~1,000.
MAX_JSON_DEPTH = 64

# One double-quoted string with its escapes; possessive, so a string that never closes
# costs one pass over the text, not a backtracking search.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_OPEN, _CLOSE = 65, 63  # bytes that stand for an opening and a closing bracket: 64 ± 1
_BRACKET = re.compile(rb"[\[\]{}]")
_NESTED_RUN = re.compile(rb"\x01+")


class TooDeep(QbusError):
    """Input nested deeper than a parser may be given safely."""

    code = "too_deep"


@functools.cache
def _brackets_table(opens: bytes, closes: bytes) -> tuple[bytes, bytes]:
    """A ``bytes.translate`` table and delete set that keep only the bracket bytes,
    each opening one as ``_OPEN`` and each closing one as ``_CLOSE``."""
    table = bytearray(range(256))
    for byte in opens:
        table[byte] = _OPEN
    for byte in closes:
        table[byte] = _CLOSE
    keep = set(opens) | set(closes)
    return bytes(table), bytes(b for b in range(256) if b not in keep)


def nested_deeper_than(
    data: bytes, limit: int, *, opens: bytes = b"[{", closes: bytes = b"]}"
) -> bool:
    """Whether brackets in ``data`` (outside double-quoted strings) nest more than
    ``limit`` deep.

    Args:
        data: The text, as bytes.
        limit: Deepest nesting allowed.
        opens: The opening bracket bytes.
        closes: The closing bracket bytes.
    """
    # Fast path: no more opening brackets than the limit cannot nest deeper than it.
    if sum(data.count(bytes((b,))) for b in opens) <= limit:
        return False
    table, delete = _brackets_table(opens, closes)
    # Without escapes every other piece between quotes is a string's contents: a split
    # is ten times cheaper than the regular expression.
    bare = _STRING.sub(b"", data) if b"\\" in data else b"".join(data.split(b'"')[::2])
    brackets = bare.translate(table, delete)
    # Running depth after each bracket, all in C: opening +1, closing -1.
    return max(accumulate(map(sub, brackets, repeat(64))), default=0) > limit


def check_json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON that nests deeper than ``limit`` before a recursive decoder reads it.

    Raises:
        TooDeep: With a message that gives the limit.
    """
    if nested_deeper_than(data, limit):
        raise TooDeep(
            f"the JSON nests arrays/objects more than {limit} levels deep; "
            f"the limit is {limit} (no qbus event needs more than a few)"
        )


UNDECODABLE = (msgspec.DecodeError, TooDeep)
"""What ``decode_event`` raises for a payload that is no event (msgspec's
``ValidationError`` is a ``DecodeError``): catch this, not msgspec's errors alone."""


def decode_event(data: bytes) -> Event:
    """The event in ``data``, a payload read from the bus or the log, bounded first.

    Every reader of stored events decodes through here: without auth anyone can store a
    payload nested a thousand levels deep on any subject (a job's result, its ingested
    event …), and msgspec would stop the reader with a ``RecursionError``.

    Raises:
        TooDeep: Nested deeper than ``MAX_JSON_DEPTH``.
        msgspec.DecodeError: Not JSON, or (``msgspec.ValidationError``) no qbus event.
    """
    check_json_depth(data)
    return decode(data)


def top_level_only(data: bytes) -> bytes:
    """``data`` with each value nested inside a top-level member replaced by ``null``.

    What is left of a JSON object is shallow enough to decode, so the envelope of a
    message that is refused for its depth (its ``job_id``, ``event_id``, ``type``) can
    still be read and the refusal sent where its sender looks. Text that does not close
    its brackets comes back cut short, which then does not decode at all.

    Every step but one callback per string runs in C: a flood of deep messages must
    cost ingest little each (qbus/bus/fair.py).
    """
    # Strings blanked to the same length (their brackets do not count); the depth after
    # each bracket, summed in C; brackets at depth 2 or more, marked 1 in ``nested``.
    blank = _STRING.sub(_blank, data) if b'"' in data else data
    table, delete = _brackets_table(b"[{", b"]}")
    depths = accumulate(map(sub, blank.translate(table, delete), repeat(64)))
    nested = bytes(map((2).__le__, depths))
    # Bracket k sits at before[k] + k, before[k] being the length of the text between
    # brackets up to it: work per bracket, not per byte of a long string.
    before = list(accumulate(map(len, _BRACKET.split(blank))))
    out: list[bytes] = []
    start = 0
    # A run of nesting starts at the bracket that opens a member's value and ends at the
    # one that closes it, or at the end of text that never closes it.
    for run in _NESTED_RUN.finditer(nested):
        out.append(data[start : before[run.start()] + run.start()])
        if run.end() == len(nested):
            return b"".join(out)  # never closed: cut short
        out.append(b"null")
        start = before[run.end()] + run.end() + 1
    out.append(data[start:])
    return b"".join(out)


def _blank(match: re.Match[bytes]) -> bytes:
    return b'"' + b" " * (match.end() - match.start() - 2) + b'"'


def clipped(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was: an error message
    quotes an input token without growing with it."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def shallow(data: bytes, limit: int = MAX_JSON_DEPTH) -> bytes:
    """``data`` when it nests at most ``limit`` deep, else ``top_level_only(data)``: what
    a lenient decoder that reads only top-level fields (an envelope, a tag) can be given."""
    return top_level_only(data) if nested_deeper_than(data, limit) else data
