"""Parametrised circuits for templates: hardware-efficient and custom ansätze, QAOA.

Circuits are built as IR (``qbus.schemas.ir.Circuit``) with named parameters, so one
circuit serves every evaluation: each job binds values through ``parameters`` or a
``sweep``, and the circuit's hash (and so the result cache) stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from qbus.errors import SchemaError
from qbus.frontends.expr import free_names
from qbus.frontends.job_template import Ansatz
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.ir import Circuit, Op

SHIFT_GATES = frozenset(("rx", "ry", "rz", "p", "u1", "rxx", "ryy", "rzz"))
"""Gates ``exp(-i θ P / 2)`` (up to a global phase) for a Pauli word P: the two-term
parameter-shift rule ``dE/dθ = (E(θ + π/2) - E(θ - π/2)) / 2`` holds for them."""


def hardware_efficient(ansatz: Ansatz) -> Circuit:
    """Rotation layers and entangling ladders, no measurements.

    ``layers`` times: every rotation kind on every qubit, then ``entangler`` on
    (0,1), (1,2), …; a final rotation layer follows. Parameters are named
    ``theta_000``, ``theta_001``, … in the order the gates use them (zero-padded so
    the sorted order the IR keeps is that order).
    """
    n = ansatz.qubits or 1
    ops: list[Op] = []
    names: list[str] = []

    def rotation_layer() -> None:
        for q in range(n):
            for gate in ansatz.rotations:
                name = f"theta_{len(names):03d}"
                names.append(name)
                ops.append(Op(name=gate, qubits=(q,), params=(name,)))

    for _ in range(ansatz.layers):
        rotation_layer()
        for q in range(n - 1):
            ops.append(Op(name=ansatz.entangler, qubits=(q, q + 1)))
    rotation_layer()
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(names))


def ansatz_circuit(ansatz: Ansatz) -> Circuit:
    """The ansatz as a parametrised circuit without measurements.

    Raises:
        CircuitError: A custom ansatz's program does not parse.
    """
    if ansatz.kind == "hardware_efficient":
        return hardware_efficient(ansatz)
    assert ansatz.qasm is not None  # the schema requires it for 'custom'
    circuit, _ = parse_qasm(ansatz.qasm)
    return without_measurements(circuit)


def without_measurements(circuit: Circuit) -> Circuit:
    """``circuit`` without measurements and barriers (expectations use the final state)."""
    ops = tuple(op for op in circuit.ops if op.name not in ("measure", "barrier"))
    return msgspec.structs.replace(circuit, ops=ops, num_clbits=0)


def with_measurements(circuit: Circuit) -> Circuit:
    """``circuit`` with every qubit measured into the clbit of the same index."""
    n = circuit.num_qubits
    measure = Op(name="measure", qubits=tuple(range(n)), clbits=tuple(range(n)))
    return msgspec.structs.replace(circuit, ops=(*circuit.ops, measure), num_clbits=n)


def check_parameter_shift(circuit: Circuit) -> None:
    """Make sure the parameter-shift rule gives exact gradients for ``circuit``.

    It does when every parameter is the whole angle of exactly one gate from
    ``SHIFT_GATES``.

    Raises:
        SchemaError: Naming the first parameter that breaks the rule.
    """
    uses: dict[str, list[tuple[str, object]]] = {name: [] for name in circuit.parameters}
    for op in circuit.ops:
        for p in op.params:
            if isinstance(p, str):
                for name in free_names(p):
                    uses[name].append((op.name, p))
    for name, found in uses.items():
        if len(found) != 1 or found[0][0] not in SHIFT_GATES or found[0][1] != name:
            raise SchemaError(
                f"L-BFGS-B needs parameter-shift gradients, which need each parameter to be "
                f"the whole angle of one rx/ry/rz/p/rxx/ryy/rzz gate; {name!r} is used as "
                f"{[p for _, p in found]} in {[g for g, _ in found]}. Use COBYLA or "
                "Nelder-Mead for this circuit",
                where="$.optimizer.method",
            )


def qaoa_circuit(
    n: int, edges: Sequence[tuple[int, int]], weights: Sequence[float], p: int
) -> Circuit:
    """The depth-``p`` QAOA circuit for MaxCut, without measurements.

    |+…+⟩, then per layer ``l``: ``rzz(gamma_l · w)`` on every edge (the cost
    unitary ``exp(-i γ Σ w Z_a Z_b / 2)``) and ``rx(2 · beta_l)`` on every qubit (the
    mixer ``exp(-i β Σ X)``).
    """
    ops = [Op(name="h", qubits=(q,)) for q in range(n)]
    names = []
    for layer in range(p):
        gamma, beta = f"gamma_{layer:02d}", f"beta_{layer:02d}"
        names += [gamma, beta]
        for (a, b), w in zip(edges, weights, strict=True):
            angle = gamma if w == 1.0 else f"{w!r} * {gamma}"
            ops.append(Op(name="rzz", qubits=(a, b), params=(angle,)))
        ops += [Op(name="rx", qubits=(q,), params=(f"2.0 * {beta}",)) for q in range(n)]
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(sorted(names)))
