"""Gate-level OpenQASM beyond the plain gate call, each checked against Qiskit by unitary.

Covers Qiskit's ``qelib1.inc`` gates without an IR gate (``rccx``, ``rc3x``, ``c3x``,
``c3sqrtx``, ``c4x``, legacy ``delay``), the gate modifiers (``inv``, ``pow``, ``ctrl``,
``negctrl``) on every IR gate and on user gates, ``gphase``, ``const``, physical qubits
(``$n``, as Qiskit's exporter writes them after transpiling), ``delay`` and ``box``.
The references are Qiskit's own readers (``qiskit.qasm2`` with its legacy qelib1 gates,
``qiskit.qasm3.loads``) or Qiskit's gate API (``inverse``, ``power``, ``control``) on the
classes of ``tests/qiskit_gates.py``.
"""

from __future__ import annotations

import pytest
import qiskit.qasm3
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import Operator
from qiskit.transpiler import CouplingMap

from qbus.frontends.qasm import parse_qasm
from qbus.schemas.gates import GATES
from tests.test_qasm import (
    ir_measurements,
    ir_unitary,
    load_qasm2,
    qiskit_measurements,
    qiskit_unitary,
)

H3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'

# Angles inside the principal range, so Qiskit's matrix powers and our angle rule agree.
ANGLES = (0.7, -0.4, 1.1, 0.3)


def _params(name: str) -> tuple[float, ...]:
    return ANGLES[: GATES[name].num_params]


def _call(name: str, qubits: int) -> str:
    params = _params(name)
    text = name + ("(" + ", ".join(map(repr, params)) + ")" if params else "")
    return text + " " + ", ".join(f"q[{k}]" for k in range(qubits)) + ";"


def _parse_unitary(text: str) -> Operator:
    circuit, _ = parse_qasm(text)
    return ir_unitary(circuit)


def _reference(gate, qubits: int) -> Operator:
    qc = QuantumCircuit(qubits)
    qc.append(gate, list(range(qubits)))
    return Operator(qc)


# -- qelib1.inc -------------------------------------------------------------------------

QELIB1_EXTRAS = {"rccx": 3, "rc3x": 4, "c3x": 4, "c3sqrtx": 4, "c4x": 5}


@pytest.mark.parametrize("name", sorted(QELIB1_EXTRAS))
def test_qelib1_gates_match_qiskit(name: str) -> None:
    n = QELIB1_EXTRAS[name]
    args = ", ".join(f"q[{k}]" for k in range(n))
    # Every qubit in superposition first, so a phase error anywhere shows in the unitary.
    text = f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{n}];\nh q;\n{name} {args};\n'
    reference = load_qasm2(text)
    assert len(reference.data[-1].qubits) == n  # Qiskit's own gate, not its definition
    assert ir_unitary(parse_qasm(text)[0]).equiv(qiskit_unitary(reference))


def test_a_program_definition_overrides_a_qelib1_extra() -> None:
    text = (
        'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate rccx a, b, c { x a; }\nqreg q[3];\n'
        "rccx q[0], q[1], q[2];\n"
    )
    circuit, _ = parse_qasm(text)
    assert [op.name for op in circuit.ops] == ["x"]


# -- physical qubits --------------------------------------------------------------------


def test_physical_qubits_from_qiskits_exporter_after_transpile() -> None:
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 2)
    qc.ry(0.3, 1)
    qc.measure([0, 1, 2], [0, 1, 2])
    transpiled = transpile(
        qc,
        coupling_map=CouplingMap.from_line(6),
        basis_gates=["rz", "sx", "cx"],
        initial_layout=[4, 1, 2],
        seed_transpiler=1,
    )
    text = qiskit.qasm3.dumps(transpiled)
    assert "qubit" not in text and "$4" in text
    circuit, _ = parse_qasm(text)
    reference = qiskit.qasm3.loads(text)
    assert circuit.num_qubits == 5  # the highest index used is $4
    assert ir_unitary(circuit).equiv(qiskit_unitary(reference))
    assert ir_measurements(circuit) == qiskit_measurements(reference)


def test_physical_qubits_size_the_circuit_by_the_highest_index() -> None:
    circuit, _ = parse_qasm("OPENQASM 3.0;\nbit[1] c;\nx $7;\nc[0] = measure $2;\n")
    assert circuit.num_qubits == 8
    assert [(op.name, op.qubits) for op in circuit.ops] == [("x", (7,)), ("measure", (2,))]
