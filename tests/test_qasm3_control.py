"""OpenQASM 3 classical control (issue 21): if/else, while, for, bit initialisers.

Parser facts are checked on programs written here; programs Qiskit writes
(``qasm3.dumps`` of circuits built with IfElseOp, WhileLoopOp and ForLoopOp) are
parsed by qbus, run on Aer through qbus, and compared with Aer running Qiskit's own
circuit, with Aer on ``qasm3.loads`` of the text where Qiskit's importer reads it, and
with the exact reference.
"""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ClassicalRegister, QuantumRegister
from qiskit.circuit.classical import expr
from qiskit_aer import AerSimulator

from qbus.engines import reference
from qbus.engines.aer import AerEngine
from qbus.engines.base import RunRequest
from qbus.engines.convert_qiskit import from_qiskit, to_qiskit
from qbus.errors import CircuitError, QasmSyntaxError
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.ir import Condition
from qbus.verifier.crosscheck import compare_counts
from qbus.verifier.statistics import check_counts
from tests.test_dynamic_circuits import PROGRAMS

H3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
SHOTS = 4000


def names(source: str) -> list[tuple[str, tuple[int, ...]]]:
    circuit, _ = parse_qasm(source)
    return [(op.name, op.qubits) for op in circuit.ops]


# -- the parser -----------------------------------------------------------------------


def test_for_over_a_range_is_unrolled_with_the_variable_as_index_and_angle():
    src = H3 + "qubit[4] q;\nfor int i in [0:3] { rx(0.5 * i) q[i]; }\n"
    circuit, _ = parse_qasm(src)
    assert [(op.name, op.qubits, op.params) for op in circuit.ops] == [
        ("rx", (i,), (0.5 * i,)) for i in range(4)
    ]


def test_for_over_a_stepped_range_and_a_set():
    src = H3 + "qubit[6] q;\nfor uint[8] k in [5:-2:0] x q[k];\nfor i in {1, 4} h q[i];\n"
    assert names(src) == [("x", (5,)), ("x", (3,)), ("x", (1,)), ("h", (1,)), ("h", (4,))]


def test_an_empty_range_runs_nothing_and_the_program_goes_on():
    assert names(H3 + "qubit q;\nfor int i in [3:1] { x q; }\nh q;\n") == [("h", (0,))]


def test_nested_for_loops_and_if_inside_for():
    src = (
        H3 + "qubit[3] q;\nbit[3] c;\nc = measure q;\n"
        "for int i in [0:1] { for int j in {2} { if (c[i] == 1) cx q[i], q[j]; } }\n"
    )
    circuit, _ = parse_qasm(src)
    ifs = [op for op in circuit.ops if op.name == "if"]
    assert [op.condition.clbits for op in ifs] == [(0,), (1,)]
    assert [op.body[0].qubits for op in ifs] == [(0, 2), (1, 2)]


def test_bit_declarations_with_initialisers():
    src = H3 + 'qubit[2] q;\nbit b = measure q[1];\nbit[2] c = measure q;\nbit[2] z = "00";\n'
    circuit, _ = parse_qasm(src)
    assert circuit.num_clbits == 5
    measures = [(op.qubits, op.clbits) for op in circuit.ops]
    assert measures == [((1,), (0,)), ((0,), (1,)), ((1,), (2,))]


def test_while_parses_to_a_while_op():
    circuit, _ = parse_qasm(
        H3 + "qubit q;\nbit c;\nc = measure q;\nwhile (c != 0) { h q; c = measure q; }\n"
    )
    loop = circuit.ops[-1]
    assert loop.name == "while"
    assert loop.condition == Condition(op="!=", clbits=(0,), value=0)
    assert [op.name for op in loop.body] == ["h", "measure"]


@pytest.mark.parametrize(
    ("source", "code", "fragment"),
    [
        ("qubit q;\nfor int q in [0:1] { x q; }\n", "unsupported_feature", "declared register"),
        (
            "input float t;\nqubit q;\nfor int i in [0:t] { x q; }\n",
            "unsupported_feature",
            "depends on an input parameter",
        ),
        ("qubit q;\nfor int i in [0:0:3] { x q; }\n", "qasm_syntax", "step cannot be 0"),
        ("qubit q;\nfor int i in [0:60] { x q; x q; }\n", "too_large", "more than 100 operations"),
        ("qubit q;\nfor int i in [0:1000000000] { }\n", "too_large", "1,000,000,001 times"),
        ("qubit q;\nbit[2] c = 3;\n", "unsupported_feature", "bits start at 0"),
        ("qubit q = 1;\n", "qasm_syntax", "takes no initialiser"),
        (
            "qubit q;\nbit c;\nif (c) { for int i in [0:1] { if (c) { gate g a { x a; } } } }\n",
            "unsupported_feature",
            "declarations",
        ),
    ],
)
def test_control_errors_have_codes(source, code, fragment):
    with pytest.raises(QasmSyntaxError, match=fragment) as info:
        parse_qasm(H3 + source, max_ops=100)
    assert info.value.code == code


def test_deep_nesting_is_refused_with_a_position():
    src = H3 + "qubit q;\nbit c;\n" + "if (c) " * 40 + "x q;\n"
    with pytest.raises(QasmSyntaxError, match="nested deeper than 16") as info:
        parse_qasm(src)
    assert info.value.code == "too_large"
    deep_not = H3 + "qubit q;\nbit c;\nif (" + "!" * 20 + "c) x q;\n"
    with pytest.raises(QasmSyntaxError, match="nested deeper than 8"):
        parse_qasm(deep_not)


def test_a_runaway_while_ends_with_the_loop_budget_code():
    circuit, _ = parse_qasm(
        H3 + "qubit q;\nbit c;\nx q;\nc = measure q;\nwhile (c == 1) { x q; x q; c = measure q; }\n"
    )
    with pytest.raises(CircuitError) as info:
        reference.ReferenceEngine().run(RunRequest(circuit=circuit, shots=10))
    assert info.value.code == "loop_budget_exceeded"


# -- Qiskit's exporter as a source of programs ----------------------------------------


def _registers() -> tuple[QuantumCircuit, QuantumRegister, ClassicalRegister]:
    qr, cr = QuantumRegister(3, "q"), ClassicalRegister(3, "c")
    return QuantumCircuit(qr, cr), qr, cr


def if_else_and_for() -> QuantumCircuit:
    qc, _, cr = _registers()
    qc.h(0)
    qc.measure(0, 0)
    with qc.if_test((cr[0], 1)) as orelse:
        qc.x(1)
    with orelse:
        qc.ry(0.8, 1)
    qc.measure(1, 1)
    with qc.if_test((cr, 3)):
        qc.h(2)
    with qc.for_loop(range(3)) as i:
        qc.rx(i, 2)
    qc.measure(2, 2)
    return qc


def expression_condition() -> QuantumCircuit:
    qc, _, cr = _registers()
    qc.h([0, 1])
    qc.measure(0, 0)
    qc.measure(1, 1)
    with qc.if_test(expr.logic_and(expr.less(cr, 3), expr.logic_not(cr[0]))) as orelse:
        qc.x(2)
    with orelse:
        qc.h(2)
    qc.measure(2, 2)
    return qc


def repeat_until_success() -> QuantumCircuit:
    qc, _, cr = _registers()
    qc.h(0)
    qc.measure(0, 0)
    with qc.while_loop((cr[0], 1)):
        qc.h(0)
        qc.measure(0, 0)
    qc.h(1)
    with qc.for_loop([0, 2]):
        qc.rz(0.4, 1)
    qc.h(1)
    qc.measure(1, 1)
    return qc


BUILDERS = {f.__name__: f for f in (if_else_and_for, expression_condition, repeat_until_success)}
# qiskit_qasm3_import reads conditions on a bit or a register compared with a value, not
# '&&' / '!': the expression program is checked against Qiskit's own circuit only.
IMPORTABLE = {"if_else_and_for", "repeat_until_success"}


@pytest.fixture(scope="module")
def aer() -> AerEngine:
    return AerEngine()


def _aer_counts(qc: QuantumCircuit, seed: int) -> dict[str, int]:
    raw = AerSimulator().run(qc, shots=SHOTS, seed_simulator=seed).result().get_counts()
    return {key.replace(" ", ""): n for key, n in raw.items()}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_qiskit_exported_control_flow_runs_the_same_through_qbus(aer, name):
    qc = BUILDERS[name]()
    text = qasm3.dumps(qc)
    assert ("if (" in text) or ("while (" in text)
    circuit, fmt = parse_qasm(text)
    assert fmt == "qasm3"
    ours = aer.run(RunRequest(circuit=circuit, shots=SHOTS, seed=4)).counts
    exact = reference.probabilities(circuit)
    verdict = check_counts(ours, exact, SHOTS)
    assert verdict.verdict == "pass", verdict.detail
    direct = _aer_counts(qc, seed=8)
    agreement = compare_counts(ours, direct)
    assert agreement.verdict == "pass", agreement.detail
    assert check_counts(direct, exact, SHOTS).verdict == "pass"
    if name in IMPORTABLE:
        loaded = _aer_counts(qasm3.loads(text), seed=12)
        agreement = compare_counts(ours, loaded)
        assert agreement.verdict == "pass", agreement.detail


# -- from_qiskit: Qiskit control flow straight into the IR ----------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_from_qiskit_reads_control_flow_like_the_qasm3_export(name):
    qc = BUILDERS[name]()
    direct = from_qiskit(qc)
    assert {op.name for op in direct.ops} & {"if", "while"}
    assert "for_loop" not in {op.name for op in direct.ops}  # unrolled
    via_text, _ = parse_qasm(qasm3.dumps(qc))
    exact = reference.probabilities(direct)
    assert exact == pytest.approx(reference.probabilities(via_text), abs=1e-12)
    counts = _aer_counts(qc, seed=21)
    assert check_counts(counts, exact, SHOTS).verdict == "pass"


def test_to_qiskit_and_back_keeps_the_distribution():
    for source in PROGRAMS.values():
        circuit, _ = parse_qasm(source)
        back = from_qiskit(to_qiskit(circuit))
        assert reference.probabilities(back) == pytest.approx(reference.probabilities(circuit))


def test_from_qiskit_refuses_switch_with_a_path():
    qc, _, cr = _registers()
    qc.measure(0, 0)
    with qc.switch(cr) as case, case(0):
        qc.x(1)
    with pytest.raises(CircuitError, match="switch_case") as info:
        from_qiskit(qc)
    assert info.value.code == "unsupported_gate"
    assert info.value.where == "instruction[1]"


def test_a_literal_on_the_left_mirrors_the_comparison():
    src = H3 + "qubit q;\nbit[2] c;\nc[1] = measure q;\nif (2 > c) x q;\n"
    assert parse_qasm(src)[0].ops[-1].condition == Condition(op="<", clbits=(0, 1), value=2)
    qc, _, cr = _registers()
    with qc.if_test(expr.greater_equal(3, cr)):  # 3 >= c is c <= 3
        qc.x(0)
    assert from_qiskit(qc).ops[0].condition == Condition(op="<=", clbits=(0, 1, 2), value=3)
