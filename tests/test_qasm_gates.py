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
from qiskit.circuit.library import UnitaryGate
from qiskit.quantum_info import Operator
from qiskit.transpiler import CouplingMap

from qbus.errors import QasmSyntaxError
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.gates import GATES
from qbus.schemas.ir import circuit_hash
from tests.qiskit_gates import QISKIT_GATES
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


def test_qelib1_legacy_delay_is_dropped() -> None:
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\ndelay(100) q[1];\n'
    circuit, _ = parse_qasm(text)
    assert [op.name for op in circuit.ops] == ["h"]


def test_a_program_definition_overrides_a_qelib1_extra() -> None:
    text = (
        'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate rccx a, b, c { x a; }\nqreg q[3];\n'
        "rccx q[0], q[1], q[2];\n"
    )
    circuit, _ = parse_qasm(text)
    assert [op.name for op in circuit.ops] == ["x"]


# -- modifiers on every IR gate ---------------------------------------------------------

FRACTIONAL = sorted(
    {"rx", "ry", "rz", "p", "u1", "cp", "crx", "cry", "crz", "rxx", "ryy", "rzz"}
    | {"x", "y", "z", "s", "sdg", "t", "tdg", "sx", "sxdg", "cx", "cz", "id"}
)

# (modifier prefix, extra control qubits, the same thing through Qiskit's gate API)
FORMS = [
    ("inv @ ", 0, lambda g: g.inverse()),
    ("pow(2) @ ", 0, lambda g: g.power(2)),
    ("pow(-3) @ ", 0, lambda g: g.power(-3)),
    ("pow(0) @ ", 0, lambda g: g.power(0)),
    ("ctrl @ ", 1, lambda g: g.control(1, annotated=False)),
    ("negctrl @ ", 1, lambda g: g.control(1, ctrl_state=0, annotated=False)),
    ("ctrl(2) @ ", 2, lambda g: g.control(2, annotated=False)),
    (
        "ctrl @ negctrl @ ",
        2,
        lambda g: g.control(1, ctrl_state=0, annotated=False).control(1, annotated=False),
    ),
    ("ctrl @ inv @ ", 1, lambda g: g.inverse().control(1, annotated=False)),
    # The adjoint, not g.control(...).inverse(): for CUGate, Qiskit 2.6's inverse of the
    # controlled gate is not its adjoint.
    ("inv @ ctrl @ ", 1, lambda g: UnitaryGate(Operator(g.control(1, annotated=False)).adjoint())),
    ("ctrl @ pow(2) @ ", 1, lambda g: g.power(2).control(1, annotated=False)),
]
FRACTIONAL_FORMS = [
    ("pow(0.5) @ ", 0, lambda g: g.power(0.5)),
    ("pow(-1/3) @ ", 0, lambda g: g.power(-1 / 3)),
    ("ctrl @ pow(0.5) @ ", 1, lambda g: g.power(0.5).control(1, annotated=False)),
    (
        "negctrl @ pow(1.25) @ ",
        1,
        lambda g: g.power(1.25).control(1, ctrl_state=0, annotated=False),
    ),
]
CASES = [(name, form) for name in sorted(GATES) for form in FORMS] + [
    (name, form) for name in FRACTIONAL for form in FRACTIONAL_FORMS
]


@pytest.mark.parametrize(("name", "form"), CASES, ids=[f"{f[0]}{n}" for n, f in CASES])
def test_modifier_matches_qiskit(name: str, form) -> None:
    prefix, controls, build = form
    qubits = GATES[name].num_qubits + controls
    text = H3 + f"qubit[{qubits}] q;\nh q;\n{prefix}{_call(name, qubits)}\n"
    gate = QISKIT_GATES[name](*_params(name))
    reference = QuantumCircuit(qubits)
    reference.h(range(qubits))
    reference.append(build(gate), list(range(qubits)))
    # equiv ignores only a global phase; the leading h layer makes every relative phase,
    # including the one a controlled global phase becomes, show.
    assert _parse_unitary(text).equiv(Operator(reference)), text


SPEC_PROGRAMS = [
    # A user gate with a global phase, controlled: the phase becomes a phase gate.
    "gate g(a) x, y { gphase(a); ctrl @ rz(a) x, y; inv @ s y; }\nqubit[3] q;\nh q;\n"
    "ctrl @ g(0.7) q[0], q[1], q[2];\n",
    "qubit[3] q;\nh q;\nnegctrl @ ctrl @ x q[0], q[1], q[2];\nctrl @ gphase(0.4) q[1];\n",
    "qubit[2] q;\nh q;\ninv @ pow(3) @ t q[1];\npow(0.5) @ ry(0.4) q[0];\n",
    "gate sq a { pow(0.5) @ x a; }\nqubit[2] q;\nh q[0];\nctrl @ inv @ sq q[0], q[1];\n",
    "gate both a, b { h a; cx a, b; }\nqubit[4] q;\nh q;\nctrl(2) @ inv @ both q[3], q[1], q[0], "
    "q[2];\n",
    "qubit[4] q;\nh q;\nctrl @ ctrl @ swap q[2], q[0], q[1], q[3];\n"
    "negctrl(2) @ h q[1], q[2], q[0];\n",
    "qubit[2] q;\nh q;\nctrl @ U(0.1, 0.2, 0.3) q[0], q[1];\ninv @ u2(0.5, 0.6) q[1];\n",
]


# qiskit_qasm3_import builds multi-controlled gates through Gate.control() without the
# `annotated` argument that Qiskit 2.3 deprecated leaving out.
@pytest.mark.filterwarnings("ignore:.*argument ``annotated`` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("body", SPEC_PROGRAMS)
def test_modified_programs_match_qiskit_qasm3(body: str) -> None:
    text = H3 + body
    assert _parse_unitary(text).equiv(qiskit_unitary(qiskit.qasm3.loads(text))), text


def test_controlled_global_phase_is_a_phase_gate() -> None:
    circuit, _ = parse_qasm(H3 + "qubit[2] q;\nctrl @ gphase(0.5) q[1];\ngphase(0.2);\n")
    assert [(op.name, op.qubits, op.params) for op in circuit.ops] == [("p", (1,), (0.5,))]


def test_modifiers_keep_input_parameters_symbolic() -> None:
    text = H3 + "input float t;\nqubit[2] q;\nctrl @ inv @ rx(t) q[0], q[1];\n"
    circuit, _ = parse_qasm(text)
    assert circuit.parameters == ("t",)
    assert [(op.name, op.params) for op in circuit.ops] == [("crx", ("-t",))]
    assert ir_unitary(circuit, {"t": 0.9}).equiv(_reference(QISKIT_GATES["crx"](-0.9), 2))


def test_fractional_power_of_a_composite_gate_names_it() -> None:
    text = H3 + "gate g a { h a; t a; }\nqubit q;\npow(0.5) @ g q;\n"
    with pytest.raises(QasmSyntaxError) as info:
        parse_qasm(text)
    assert info.value.code == "unsupported_feature"
    assert "'pow @ g'" in str(info.value)


def test_many_controls_are_bounded_by_max_ops() -> None:
    qubits = ", ".join(f"q[{k}]" for k in range(12))
    with pytest.raises(QasmSyntaxError) as info:
        parse_qasm(H3 + f"qubit[12] q;\nctrl(11) @ x {qubits};\n", max_ops=10_000)
    assert info.value.code == "too_large"


def test_modifiers_broadcast_over_registers() -> None:
    circuit, _ = parse_qasm(H3 + "qubit[2] a;\nqubit[2] b;\nctrl @ x a, b;\n")
    assert [(op.name, op.qubits) for op in circuit.ops] == [("cx", (0, 2)), ("cx", (1, 3))]


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


# -- const, delay, box, barrier ---------------------------------------------------------


def test_constants_fold_like_literals() -> None:
    with_constants = H3 + (
        "const int n = 3;\nconst float theta = pi / n;\nconst angle[20] half = theta / 2;\n"
        "qubit[n] q;\nrx(theta) q[0];\nctrl(n - 1) @ rz(half) q[0], q[1], q[2];\n"
        "pow(n) @ t q[1];\ngate g(a) x { rz(a + theta) x; }\ng(1) q[2];\n"
    )
    literal = H3 + (
        "qubit[3] q;\nrx(pi / 3) q[0];\nctrl(2) @ rz(pi / 3 / 2) q[0], q[1], q[2];\n"
        "pow(3) @ t q[1];\ngate g(a) x { rz(a + pi / 3) x; }\ng(1) q[2];\n"
    )
    assert circuit_hash(parse_qasm(with_constants)[0]) == circuit_hash(parse_qasm(literal)[0])


def test_a_gate_parameter_shadows_a_constant() -> None:
    text = H3 + "const float a = 5;\ngate g(a) x { rz(a) x; }\nqubit q;\ng(0.25) q;\n"
    assert parse_qasm(text)[0].ops[0].params == (0.25,)


def test_delay_and_box_are_their_contents() -> None:
    timed = H3 + (
        "qubit[2] q;\nbox[100ns] {\n  h q[0];\n  delay[20ns] q[0];\n  cx q[0], q[1];\n}\n"
        "delay[1.5us];\ndelay[30dt] q;\nbox { barrier q; }\n"
    )
    plain = H3 + "qubit[2] q;\nh q[0];\ncx q[0], q[1];\nbarrier q;\n"
    assert circuit_hash(parse_qasm(timed)[0]) == circuit_hash(parse_qasm(plain)[0])
