"""The closed sets of string values on the wire, each defined once as a ``Literal``.

The event structs use these aliases as field types, so decoding refuses a value outside
the set with its path (``Invalid enum value 'x' - at `$.method```) and the generated
JSON Schema lists the values as an ``enum``. Code that iterates over a set uses the
tuple beside its alias, derived with ``typing.get_args`` so the two cannot drift.

Adding a value to a set is a protocol change: a consumer that predates it refuses an
event carrying the new value (docs/protocol.md, "Evolution").
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Literal, get_args

import msgspec

__all__ = [
    "COLLAPSE_KINDS",
    "DEAD_LETTER_CAUSES",
    "DRIVERS",
    "FORMATS",
    "HYPERVISORS",
    "LANES",
    "METHODS",
    "PRIORITIES",
    "PROGRAM_FORMATS",
    "VERDICTS",
    "CollapseKind",
    "DeadLetterCause",
    "Driver",
    "Hypervisor",
    "Lane",
    "Method",
    "Priority",
    "ProgramFormat",
    "RanDriver",
    "SourceFormat",
    "Verdict",
    "allowed_values",
]

Method = Literal["sample", "statevector", "expectation", "sweep", "dynamics"]
"""How a job runs: ``sample`` (shots -> counts), ``statevector`` (the final state),
``expectation`` (Pauli-sum observables on the final state), ``sweep`` (one run per
parameter set) or ``dynamics`` (open-system time evolution)."""
METHODS: tuple[Method, ...] = get_args(Method)

Priority = Literal["high", "normal", "low"]
"""A job's queue, in the order executors drain them: ``high`` first, ``low`` last
(docs/routing.md)."""
PRIORITIES: tuple[Priority, ...] = get_args(Priority)

Lane = Literal["light", "heavy"]
"""Which of an engine's executor lanes runs a request: ``heavy`` for a job whose predicted
run time reaches ``[lanes] heavy_seconds``, so it never holds up ``light`` ones
(docs/routing.md, "Heavy lane")."""
LANES: tuple[Lane, ...] = get_args(Lane)

Driver = Literal["inline", "process", "bwrap"]
"""Sandbox drivers for engine code, weakest isolation first: the operator's ``minimum``
compares along this order (docs/hypervisor.md)."""
DRIVERS: tuple[Driver, ...] = get_args(Driver)

Hypervisor = Literal["auto", Driver]
"""A job's sandbox choice: a driver, or ``auto`` for the engine's policy default."""
HYPERVISORS: tuple[Hypervisor, ...] = get_args(Hypervisor)

RanDriver = Literal["", Driver]
"""The driver that ran a result (empty in events written before the field existed)."""

ProgramFormat = Literal["qasm2", "qasm3", "json", "quil"]
"""A program's language: OpenQASM 2 or 3, JSON IR, or Quil."""
PROGRAM_FORMATS: tuple[ProgramFormat, ...] = get_args(ProgramFormat)

SourceFormat = Literal["auto", ProgramFormat]
"""A submission's ``format``: a program format, or ``auto`` to detect it from the text."""
FORMATS: tuple[SourceFormat, ...] = get_args(SourceFormat)

Verdict = Literal["pass", "fail", "skipped"]
"""The verifier's verdict; ``skipped`` when no test could run (the detail says why)."""
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

DeadLetterCause = Literal["handler_error", "max_deliveries"]
"""Why a stage gave up on a message: its handler raised on the last delivery, or no
outcome came within ``ack_wait`` on any delivery (docs/operations.md)."""
DEAD_LETTER_CAUSES: tuple[DeadLetterCause, ...] = get_args(DeadLetterCause)

CollapseKind = Literal["dephasing", "decay", "excitation", "pauli"]
"""Kinds of Lindblad collapse operator: Z, σ⁻ = |0⟩⟨1|, σ⁺ = |1⟩⟨0| on one qubit, or a
Pauli string."""
COLLAPSE_KINDS: tuple[CollapseKind, ...] = get_args(CollapseKind)

_STEP = re.compile(r"\.([^.\[]+)|\[[^\]]*\]")


def allowed_values(root: type, path: str) -> tuple[str, ...] | None:
    """The values a closed-set field allows, found by following a decode error's path.

    Args:
        root: The struct the path starts at (an event class).
        path: A msgspec error path such as ``$.dynamics.collapse[0].kind``.

    Returns:
        The ``Literal``'s values in their declared order, or None when the path does not
        end at a closed-set field.
    """
    node: object = root
    for step in _STEP.finditer(path.removeprefix("$")):
        node = _step(node, step.group(1))
        if node is None:
            return None
    node = _strip_optional(node)
    if typing.get_origin(node) is Literal:
        return tuple(str(v) for v in get_args(node))
    return None


def _strip_optional(node: object) -> object:
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        members = [m for m in get_args(node) if m is not type(None)]
        return members[0] if len(members) == 1 else node
    return node


@functools.cache
def _field_types(struct: type) -> dict[str, object]:
    # Resolving annotations costs milliseconds a struct; a flood of bad submissions asks
    # for the same few again and again.
    return typing.get_type_hints(struct)


def _step(node: object, field: str | None) -> object | None:
    """The type one path step below ``node``: a struct field, or a list item / dict value
    for an index step (``field`` None)."""
    node = _strip_optional(node)
    if field is not None:
        if isinstance(node, type) and issubclass(node, msgspec.Struct):
            return _field_types(node).get(field)
        return None
    args = get_args(node)
    if typing.get_origin(node) in (list, tuple, set, frozenset) and args:
        return args[0]
    if typing.get_origin(node) is dict and len(args) == 2:
        return args[1]
    return None
