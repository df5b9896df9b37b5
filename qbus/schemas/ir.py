"""The circuit IR: a JSON circuit with a canonical encoding whose sha256 is its identity.

Conventions (the same as Qiskit's, so counts read the same in every engine):

* qubit 0 is the least significant bit of a state-vector index;
* a counts key is a bitstring with clbit 0 as its **rightmost** character.

A parameter is a number or an expression string over named parameters (``"theta"``,
``"2*theta + pi/4"``); named ones are bound at execution from the job's ``parameters``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgspec

from qbus.errors import SchemaError, validation_path
from qbus.schemas.gates import DIRECTIVES, GATES

Param = float | str

IR_VERSION = 1
# A job's qubit count is bounded long before this by limits; this only keeps a hostile
# document from allocating absurd index tables while it is being validated.
MAX_IR_QUBITS = 1024


class Op(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One instruction: a gate from ``GATES``, or ``measure``/``reset``/``barrier``.

    Attributes:
        name: Canonical gate or directive name.
        qubits: Qubit indices, control qubits first (OpenQASM order).
        params: Angles: numbers or expressions over named parameters.
        clbits: For ``measure``: the classical bit each qubit is written to.
    """

    name: str
    qubits: tuple[int, ...]
    params: tuple[Param, ...] = ()
    clbits: tuple[int, ...] = ()

    def __post_init__(self) -> None:
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
        for i, op in enumerate(self.ops):
            for q in op.qubits:
                if not 0 <= q < self.num_qubits:
                    raise ValueError(
                        f"ops[{i}] ('{op.name}') uses qubit {q}, but the circuit has "
                        f"{self.num_qubits} (0..{self.num_qubits - 1})"
                    )
            for c in op.clbits:
                if not 0 <= c < self.num_clbits:
                    raise ValueError(
                        f"ops[{i}] ('{op.name}') writes clbit {c}, but the circuit has "
                        f"{self.num_clbits}"
                    )
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
    """Gate count (directives excluded), two-qubit gate count and depth."""
    level = [0] * max(circuit.num_qubits, 1)
    gates = two = 0
    for op in circuit.ops:
        if op.name == "barrier":
            continue
        if op.name in GATES:
            gates += 1
            if len(op.qubits) >= 2:
                two += 1
        if not op.qubits:
            continue
        d = max(level[q] for q in op.qubits) + 1
        for q in op.qubits:
            level[q] = d
    return CircuitStats(gates=gates, two_qubit_gates=two, depth=max(level, default=0))


def to_builtins(circuit: Circuit) -> dict[str, Any]:
    """The circuit as plain JSON-ready Python values."""
    return msgspec.to_builtins(circuit)
