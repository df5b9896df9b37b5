"""The circuit IR: a JSON circuit with a canonical encoding whose sha256 is its identity.

Conventions (the same as Qiskit's, so counts read the same in every engine):

* qubit 0 is the least significant bit of a state-vector index;
* a counts key is a bitstring with clbit 0 as its **rightmost** character.

A parameter is a number or an expression string over named parameters (``"theta"``,
``"2*theta + pi/4"``); named ones are bound at execution from the job's ``parameters``.

Classical control is data too: an ``if`` op holds a ``Condition`` on clbits and the ops
of its two branches (``body``, ``orelse``); a ``while`` op repeats ``body`` while its
condition holds (engines bound the iterations at run time). Both list, in ``qubits``,
every qubit their nested ops touch, so passes that see them as opaque still see which
qubits they block. The new fields default to empty and are omitted from the canonical
encoding, so a circuit without control flow encodes, and hashes, as before they existed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from qbus.errors import SchemaError, validation_path
from qbus.schemas.gates import DIRECTIVES, GATES

Param = float | str

IR_VERSION = 1
# A job's qubit count is bounded long before this by limits; this only keeps a hostile
# document from allocating absurd index tables while it is being validated.
MAX_IR_QUBITS = 1024

CONTROL_FLOW = frozenset({"if", "while"})
"""Op names of classical control: they hold a ``condition`` and nested ops."""

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
"""Condition operators comparing a clbit register (as an unsigned integer) with a value."""

MIRRORED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
"""Each comparison seen from the other side: ``3 < c`` is ``c > 3``."""

CONNECTIVES = frozenset({"and", "or", "not"})
"""Condition operators combining other conditions."""

# Each level of nesting is two JSON levels (a list and an object), and events are
# refused past 64 JSON levels; these bounds keep a hostile document (or one built in
# Python) from making every recursive walk of the IR deep.
MAX_CONTROL_DEPTH = 16
"""Deepest nesting of ``if``/``while`` blocks inside one another."""
MAX_CONDITION_DEPTH = 8
"""Deepest nesting of ``and``/``or``/``not`` in one condition."""


class Condition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A test of classical bits, evaluated when an ``if`` or ``while`` op is reached.

    A comparison reads ``clbits`` as an unsigned integer (``clbits[0]`` the least
    significant bit, like an OpenQASM register) and compares it with ``value``; a
    connective combines ``args``. OpenQASM 2's ``if (c == 5)`` is
    ``Condition(clbits=<c's bits>, value=5)``.

    Attributes:
        op: One of ``COMPARISONS`` or ``CONNECTIVES``.
        clbits: For a comparison: the bits read, least significant first.
        value: For a comparison: the unsigned integer compared with.
        args: For a connective: its operands (``not``: one; ``and``/``or``: two or more).
    """

    op: str = "=="
    clbits: tuple[int, ...] = ()
    value: int = 0
    args: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        if self.op in COMPARISONS:
            if not self.clbits or self.args:
                raise ValueError(f"comparison '{self.op}' needs clbits and no args")
            if self.value < 0:
                raise ValueError(f"condition value must be >= 0, got {self.value}")
            # Equality with a value the register cannot hold is a typo, not a program.
            if self.op in ("==", "!=") and self.value >= 2 ** len(self.clbits):
                raise ValueError(
                    f"value {self.value} does not fit {len(self.clbits)} clbit(s) "
                    f"(0..{2 ** len(self.clbits) - 1})"
                )
        elif self.op in CONNECTIVES:
            if self.clbits or self.value:
                raise ValueError(f"'{self.op}' takes args, not clbits or a value")
            want_one = self.op == "not"
            if (len(self.args) != 1) if want_one else (len(self.args) < 2):
                need = "exactly one operand" if want_one else "two or more operands"
                raise ValueError(f"'{self.op}' needs {need}, got {len(self.args)}")
            if condition_depth(self) > MAX_CONDITION_DEPTH:
                raise ValueError(f"condition nested deeper than {MAX_CONDITION_DEPTH} levels")
        else:
            allowed = sorted(COMPARISONS | CONNECTIVES)
            raise ValueError(f"unknown condition operator '{self.op}' (one of {allowed})")

    def read_clbits(self) -> frozenset[int]:
        """Every clbit the condition reads."""
        if self.op in COMPARISONS:
            return frozenset(self.clbits)
        return frozenset().union(*(a.read_clbits() for a in self.args))

    def evaluate(self, bits: int) -> bool:
        """The condition's truth when clbit ``i`` holds bit ``i`` of ``bits``."""
        op = self.op
        if op == "not":
            return not self.args[0].evaluate(bits)
        if op == "and":
            return all(a.evaluate(bits) for a in self.args)
        if op == "or":
            return any(a.evaluate(bits) for a in self.args)
        reg = sum(((bits >> c) & 1) << k for k, c in enumerate(self.clbits))
        return _COMPARE[op](reg, self.value)


_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def condition_depth(condition: Condition) -> int:
    """Nesting depth of a condition: 1 for a comparison."""
    if not condition.args:
        return 1
    return 1 + max(condition_depth(a) for a in condition.args)


class Op(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One instruction: a gate from ``GATES``, ``measure``/``reset``/``barrier``, or control.

    Attributes:
        name: Canonical gate or directive name, or ``if``/``while`` (``CONTROL_FLOW``).
        qubits: Qubit indices, control qubits first (OpenQASM order). For ``if`` and
            ``while``: every qubit their nested ops touch, sorted.
        params: Angles: numbers or expressions over named parameters.
        clbits: For ``measure``: the classical bit each qubit is written to.
        condition: For ``if``/``while``: the test of classical bits.
        body: For ``if``: the ops run when the condition holds; for ``while``: the ops
            repeated while it holds.
        orelse: For ``if``: the ops run when it does not.
    """

    name: str
    qubits: tuple[int, ...]
    params: tuple[Param, ...] = ()
    clbits: tuple[int, ...] = ()
    condition: Condition | None = None
    body: tuple[Op, ...] = ()
    orelse: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        if self.name in CONTROL_FLOW:
            self._check_control()
            return
        if self.condition is not None or self.body or self.orelse:
            raise ValueError(f"'{self.name}' takes no condition, body or orelse")
        spec = GATES.get(self.name)
        if spec is not None:
            if len(self.qubits) != spec.num_qubits:
                raise ValueError(
                    f"gate '{self.name}' acts on {spec.num_qubits} qubit(s), got {len(self.qubits)}"
                )
            if len(self.params) != spec.num_params:
                raise ValueError(
                    f"gate '{self.name}' takes {spec.num_params} parameter(s), "
                    f"got {len(self.params)}"
                )
            if self.clbits:
                raise ValueError(f"gate '{self.name}' takes no clbits")
        elif self.name in DIRECTIVES:
            if self.params:
                raise ValueError(f"'{self.name}' takes no parameters")
            if self.name == "measure" and len(self.clbits) != len(self.qubits):
                raise ValueError("measure needs one clbit per qubit")
            if self.name != "measure" and self.clbits:
                raise ValueError(f"'{self.name}' takes no clbits")
            if self.name != "barrier" and not self.qubits:
                raise ValueError(f"'{self.name}' needs at least one qubit")
        else:
            raise ValueError(f"unknown gate '{self.name}'")
        if len(set(self.qubits)) != len(self.qubits):
            raise ValueError(f"'{self.name}' uses a qubit twice: {list(self.qubits)}")
        for p in self.params:
            if isinstance(p, float) and not math.isfinite(p):
                raise ValueError(f"'{self.name}' has a non-finite parameter {p}")

    def _check_control(self) -> None:
        if self.condition is None:
            raise ValueError(f"'{self.name}' needs a condition")
        if self.params or self.clbits:
            raise ValueError(f"'{self.name}' takes no params or clbits")
        if self.name == "while" and self.orelse:
            raise ValueError("'while' takes no orelse")
        touched = sorted({q for op in (*self.body, *self.orelse) for q in op.qubits})
        if list(self.qubits) != touched:
            raise ValueError(
                f"'{self.name}' must list the qubits its ops touch, sorted: {touched}, "
                f"got {list(self.qubits)}"
            )


def walk_ops(ops: tuple[Op, ...]) -> Iterator[Op]:
    """Every op of ``ops`` in program order, the ops nested in control flow included.

    An ``if``/``while`` op comes before its ``body``, then its ``orelse``.
    """
    for op in ops:
        yield op
        if op.body or op.orelse:
            yield from walk_ops(op.body)
            yield from walk_ops(op.orelse)


def walk_paths(ops: tuple[Op, ...], where: str = "ops") -> Iterator[tuple[str, Op]]:
    """``walk_ops`` with each op's path: ``ops[2]``, ``ops[2].body[0]`` …"""
    for i, op in enumerate(ops):
        here = f"{where}[{i}]"
        yield here, op
        if op.body or op.orelse:
            yield from walk_paths(op.body, f"{here}.body")
            yield from walk_paths(op.orelse, f"{here}.orelse")


def map_ops(ops: tuple[Op, ...], change: Callable[[Op], Op]) -> tuple[Op, ...]:
    """``ops`` with ``change`` applied to every op that is not control flow, at any depth."""
    out = []
    for op in ops:
        if op.name in CONTROL_FLOW:
            op = msgspec.structs.replace(
                op, body=map_ops(op.body, change), orelse=map_ops(op.orelse, change)
            )
        else:
            op = change(op)
        out.append(op)
    return tuple(out)


def unbounded_loop(circuit: Circuit) -> str | None:
    """The path of the first ``while`` whose body never writes a clbit its condition reads.

    Such a loop, once entered, never ends: nothing in it can change the condition.
    None when there is no such loop.
    """
    for path, op in walk_paths(circuit.ops):
        if op.name == "while":
            assert op.condition is not None  # the IR guarantees it
            written = {c for inner in walk_ops(op.body) for c in inner.clbits}
            if not written & op.condition.read_clbits():
                return path
    return None


def has_control_flow(circuit: Circuit) -> bool:
    """Whether any top-level op of ``circuit`` is an ``if`` or ``while``."""
    return any(op.name in CONTROL_FLOW for op in circuit.ops)


def shot_by_shot(circuit: Circuit) -> bool:
    """Whether a simulator must run ``circuit`` once per shot instead of sampling one state.

    True for control flow, a measurement followed by anything on its qubit, and a reset
    after a gate on its qubit: each shot's state then depends on its own outcomes, so a
    sampling job costs shots × one run (the cost model, the heavy lane and shot chunks
    use this; docs/long-jobs.md). A reset of a fresh qubit is a no-op and does not count.
    """
    if has_control_flow(circuit):
        return True
    touched = [False] * circuit.num_qubits
    measured = [False] * circuit.num_qubits
    for op in circuit.ops:
        if op.name == "barrier":
            continue
        if op.name == "measure":
            for q in op.qubits:
                measured[q] = True
            continue
        for q in op.qubits:
            if measured[q] or (op.name == "reset" and touched[q]):
                return True
            touched[q] = touched[q] or op.name != "reset"
    return False


def control_constructs(circuit: Circuit) -> list[str]:
    """The control-flow constructs ``circuit`` uses, sorted (``["if", "while"]`` …)."""
    return sorted({op.name for op in walk_ops(circuit.ops) if op.name in CONTROL_FLOW})


def _check_nested(
    ops: tuple[Op, ...], num_qubits: int, num_clbits: int, where: str, depth: int
) -> None:
    if depth > MAX_CONTROL_DEPTH:
        raise ValueError(f"{where}: control flow nested deeper than {MAX_CONTROL_DEPTH} levels")
    for i, op in enumerate(ops):
        here = f"{where}[{i}]"
        for q in op.qubits:
            if not 0 <= q < num_qubits:
                raise ValueError(
                    f"{here} ('{op.name}') uses qubit {q}, but the circuit has "
                    f"{num_qubits} (0..{num_qubits - 1})"
                )
        read = op.condition.read_clbits() if op.condition is not None else frozenset()
        for c in (*op.clbits, *sorted(read)):
            if not 0 <= c < num_clbits:
                verb = "writes" if op.name == "measure" else "reads"
                raise ValueError(
                    f"{here} ('{op.name}') {verb} clbit {c}, but the circuit has {num_clbits}"
                )
        if op.body:
            _check_nested(op.body, num_qubits, num_clbits, f"{here}.body", depth + 1)
        if op.orelse:
            _check_nested(op.orelse, num_qubits, num_clbits, f"{here}.orelse", depth + 1)


class Circuit(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A quantum circuit.

    Attributes:
        num_qubits: Width of the quantum register.
        num_clbits: Width of the classical register.
        ops: Instructions in program order.
        parameters: Declared names of free parameters (sorted).
        version: IR format version.
    """

    num_qubits: int
    num_clbits: int = 0
    ops: tuple[Op, ...] = ()
    parameters: tuple[str, ...] = ()
    version: int = IR_VERSION

    def __post_init__(self) -> None:
        if not 0 < self.num_qubits <= MAX_IR_QUBITS:
            raise ValueError(f"num_qubits must be 1..{MAX_IR_QUBITS}, got {self.num_qubits}")
        if not 0 <= self.num_clbits <= MAX_IR_QUBITS:
            raise ValueError(f"num_clbits must be 0..{MAX_IR_QUBITS}, got {self.num_clbits}")
        if self.version != IR_VERSION:
            raise ValueError(f"IR version {self.version} is not supported (this is {IR_VERSION})")
        _check_nested(self.ops, self.num_qubits, self.num_clbits, "ops", 0)
        # That named parameters are declared is checked where program text is read
        # (qbus.frontends.parameters.check_parameters): checking it needs the expression
        # parser, which this module (types only) does not import.


class CircuitStats(msgspec.Struct, frozen=True, kw_only=True):
    """Size figures of a circuit, reported before and after rewriting."""

    gates: int
    two_qubit_gates: int
    depth: int


_canonical_encoder = msgspec.json.Encoder(order="deterministic")
_circuit_decoder = msgspec.json.Decoder(Circuit)


def _normalise(op: Op) -> Op:
    # -0.0 and 0.0 are the same angle but encode differently; ints sneak in from JSON.
    if op.body or op.orelse:
        return msgspec.structs.replace(
            op,
            body=tuple(_normalise(o) for o in op.body),
            orelse=tuple(_normalise(o) for o in op.orelse),
        )
    if not op.params:
        return op
    params = tuple((float(p) + 0.0) if isinstance(p, int | float) else p for p in op.params)
    return msgspec.structs.replace(op, params=params)


def canonical_bytes(circuit: Circuit) -> bytes:
    """The canonical encoding: deterministic JSON with defaults omitted and angles normalised."""
    normal = msgspec.structs.replace(
        circuit,
        ops=tuple(_normalise(op) for op in circuit.ops),
        parameters=tuple(sorted(set(circuit.parameters))),
    )
    return _canonical_encoder.encode(normal)


def circuit_hash(circuit: Circuit) -> str:
    """The circuit's identity: ``sha256:`` + hex digest of its canonical encoding."""
    return "sha256:" + hashlib.sha256(canonical_bytes(circuit)).hexdigest()


def decode_circuit(data: bytes | str) -> Circuit:
    """Decode a JSON IR document.

    Raises:
        SchemaError: With the failing field path in ``where``.
    """
    try:
        return _circuit_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"invalid JSON IR: {exc}", where=validation_path(exc)) from exc
    except msgspec.DecodeError as exc:
        raise SchemaError(f"JSON IR is not valid JSON: {exc}") from exc


def stats(circuit: Circuit) -> CircuitStats:
    """Gate count (directives excluded), two-qubit gate count and depth.

    Gates nested in control flow count once each; an ``if``/``while`` op counts as one
    layer of depth on the qubits it touches (which branch runs is not known here).
    """
    level = [0] * max(circuit.num_qubits, 1)
    gates = two = 0
    for op in walk_ops(circuit.ops):
        if op.name in GATES:
            gates += 1
            if len(op.qubits) >= 2:
                two += 1
    for op in circuit.ops:
        if op.name == "barrier":
            continue
        if not op.qubits:
            continue
        d = max(level[q] for q in op.qubits) + 1
        for q in op.qubits:
            level[q] = d
    return CircuitStats(gates=gates, two_qubit_gates=two, depth=max(level, default=0))


def to_builtins(circuit: Circuit) -> dict[str, Any]:
    """The circuit as plain JSON-ready Python values."""
    return msgspec.to_builtins(circuit)
