"""OpenQASM 3 classical variables (issue 21): int, uint, bool, float, angle.

Folded variables (values known when parsing) are checked by the ops they produce;
measured variables by the clbits and conditions they become, signed comparisons
exhaustively against Python's. Whole programs are run on Aer through qbus and compared
with the exact reference, and with Aer running the program Qiskit's importer reads
(``qasm3.loads``) written with bit registers and literals, since the importer has no
int/uint/bool/float declarations. Refused forms are checked for their codes.
"""

from __future__ import annotations

import itertools

import pytest
from qiskit import qasm3
from qiskit_aer import AerSimulator

from qbus.engines import reference
from qbus.engines.aer import AerEngine
from qbus.engines.base import RunRequest
from qbus.engines.convert_qiskit import from_qiskit
from qbus.errors import QasmSyntaxError
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.ir import Condition
from qbus.verifier.statistics import check_counts

H3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
SHOTS = 4000


def ops(source: str) -> list[tuple]:
    circuit, _ = parse_qasm(H3 + source)
    return [(op.name, op.qubits, op.params) for op in circuit.ops]


# -- folded variables -------------------------------------------------------------------


def test_folded_variables_go_into_angles_indices_sizes_ranges_and_conditions():
    src = (
        "int[8] n = 2;\nuint m;\nfloat f = pi / 2;\nangle[16] a = f / 2;\nbool b = true;\n"
        "int[8] size = n + 1;\nqubit[size] q;\nrx(f * n) q[0];\n"
        "for int i in [0:n] { m += i; }\nry(m + a) q[1];\n"
        "if (b && m == 3) { x q[n]; } else { h q[n]; }\n"
    )
    assert ops(src) == [
        ("rx", (0,), (3.141592653589793,)),
        ("ry", (1,), (3.0 + 0.7853981633974483,)),
        ("x", (2,), ()),
    ]


def test_assignments_follow_program_order_and_integers_wrap_to_their_width():
    src = (
        "qubit q;\nuint[2] u = 3;\nu += 2;\nrx(u) q;\nint[3] s = 3;\ns += 1;\nrx(s) q;\n"
        "uint w = 4294967295;\nw += 1;\nrx(w) q;\nfloat f = 1;\nf *= 0.5;\nf -= 0.25;\n"
        "rx(f) q;\nbool b = false;\nb = !b && 2 > 1;\nif (b) h q;\n"
    )
    assert ops(src) == [
        ("rx", (0,), (1.0,)),
        ("rx", (0,), (-4.0,)),
        ("rx", (0,), (0.0,)),
        ("rx", (0,), (0.25,)),
        ("h", (0,), ()),
    ]


def test_a_branch_not_taken_and_an_empty_loop_change_nothing():
    src = (
        "qubit q;\nint n = 1;\nif (n == 2) { n = 5; } else { n += 1; }\n"
        "for int i in [1:0] { n = 7; }\nrx(n) q;\n"
    )
    assert ops(src) == [("rx", (0,), (2.0,))]


def test_measurements_in_blocks_after_a_folded_range_or_condition():
    src = (
        H3 + "qubit[2] q;\nbit[2] c;\nint n = 1;\nfor int i in [0:n] { c[i] = measure q[i]; }\n"
        "if (n == 1) { c[0] = measure q[1]; }\n"
    )
    circuit, _ = parse_qasm(src)
    assert [(op.name, op.qubits, op.clbits) for op in circuit.ops] == [
        ("measure", (0,), (0,)),
        ("measure", (1,), (1,)),
        ("measure", (1,), (0,)),
    ]


def test_a_variable_first_measured_into_in_an_if_body_reads_as_0_where_it_was_not():
    src = (
        H3 + "qubit[2] q;\nh q[0];\nbit c = measure q[0];\nbool r;\nif (c) { r = measure q[1]; }"
        " else { if (r) x q[1]; }\nif (r) h q[0];\n"
    )
    circuit, _ = parse_qasm(src)
    branch = circuit.ops[2]
    assert branch.body[0].clbits == (1,)
    # From its measurement on, r is its clbit (still 0 where the measurement did not run).
    read = Condition(op="==", clbits=(1,), value=1)
    assert branch.orelse[0].condition == read
    assert circuit.ops[3].condition == read
    exact = reference.probabilities(circuit)
    # c = 0: r stays 0 and nothing flips; c = 1: r is measured as 0, h on q[0] never runs.
    assert exact == pytest.approx({"01": 0.5, "00": 0.5})


def test_a_float_may_hold_an_input_expression():
    circuit, _ = parse_qasm(H3 + "input float t;\nqubit q;\nfloat f = 2 * t;\nrx(f + 1) q;\n")
    assert circuit.parameters == ("t",)
    same, _ = parse_qasm(H3 + "input float t;\nqubit q;\nrx(2 * t + 1) q;\n")
    assert circuit.ops == same.ops


# -- measured variables -----------------------------------------------------------------


def test_measured_variables_are_clbits_in_declaration_order():
    src = (
        H3 + "qubit[2] q;\nqubit r;\nbit c;\nuint[2] x = measure q;\nbool b = measure r;\n"
        "int y;\ny = measure q;\nc = measure r;\n"
    )
    circuit, _ = parse_qasm(src)
    assert circuit.num_clbits == 6
    assert [(op.qubits, op.clbits) for op in circuit.ops] == [
        ((0,), (1,)),
        ((1,), (2,)),
        ((2,), (3,)),
        ((0,), (4,)),
        ((1,), (5,)),
        ((2,), (0,)),
    ]


def test_conditions_on_measured_variables():
    src = (
        H3 + "qubit[2] q;\nuint[2] x = measure q;\nbool b = measure q[0];\nuint[2] k = 2;\n"
        "if (x == 3) h q[0];\nif (b) h q[0];\nif (!b || x >= k) h q[0];\n"
        "while (x != 0) { h q; x = measure q; }\n"
    )
    circuit, _ = parse_qasm(src)
    x = (0, 1)
    assert [op.condition for op in circuit.ops if op.condition] == [
        Condition(op="==", clbits=x, value=3),
        Condition(op="==", clbits=(2,), value=1),
        Condition(
            op="or",
            args=(
                Condition(op="not", args=(Condition(op="==", clbits=(2,), value=1),)),
                Condition(op=">=", clbits=x, value=2),
            ),
        ),
        Condition(op="!=", clbits=x, value=0),
    ]


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_signed_comparisons_agree_with_twos_complement_for_every_value(op):
    compare = {
        "==": int.__eq__,
        "!=": int.__ne__,
        "<": int.__lt__,
        "<=": int.__le__,
        ">": int.__gt__,
        ">=": int.__ge__,
    }[op]
    for value in range(-4, 4):
        src = H3 + f"qubit[3] q;\nint[3] s = measure q;\nif (s {op} {value}) x q[0];\n"
        circuit, _ = parse_qasm(src)
        last = circuit.ops[-1]
        for u in range(8):
            signed = u - 8 if u >= 4 else u
            want = compare(signed, value)
            got = last.condition.evaluate(u) if last.name == "if" else last.name == "x"
            assert got == want, (op, value, u)


def test_a_comparison_every_value_meets_or_none_does_is_decided_when_parsed():
    src = H3 + "qubit[2] q;\nint[2] s = measure q;\nif (s >= -2) x q[0];\nif (s > 1) h q[0];\n"
    assert [op.name for op in parse_qasm(src)[0].ops] == ["measure", "measure", "x"]


# -- against Qiskit -----------------------------------------------------------------------

# Each program with classical variables, and what it means written in the subset Qiskit's
# importer reads (bit registers, literals, 'reg == n' and single-bit conditions).
PAIRS = {
    "folded_and_measured_uint": (
        "qubit[2] a;\nqubit b;\nint[8] n = 2;\nfloat theta = pi / 3;\nuint[2] xv;\n"
        "for int i in [0:1] { ry(theta * (i + 1)) a[i]; }\nxv = measure a;\n"
        "if (xv >= n) { rx(theta * n) b; } else { h b; }\nbool m = measure b;\n",
        "qubit[2] a;\nqubit b;\nbit[2] xv;\nbit[1] m;\nry(pi / 3) a[0];\nry(2 * pi / 3) a[1];\n"
        "xv = measure a;\nif (xv[1]) { rx(2 * pi / 3) b; } else { h b; }\nm[0] = measure b;\n",
    ),
    "signed_int": (
        "qubit[2] a;\nqubit b;\nh a;\nint[2] sv = measure a;\nif (sv < 0) { ry(0.7) b; }\n"
        "if (sv == -1) { x b; }\nbool m = measure b;\n",
        "qubit[2] a;\nqubit b;\nbit[2] sv;\nbit[1] m;\nh a;\nsv = measure a;\n"
        "if (sv[1]) { ry(0.7) b; }\nif (sv == 3) { x b; }\nm[0] = measure b;\n",
    ),
    "while_on_bool": (
        "qubit[2] q;\nh q[0];\nbool r = measure q[0];\nuint k = 0;\n"
        "while (r) { h q[0]; r = measure q[0]; }\nfor int i in [0:2] { k += 1; }\n"
        "ry(0.4 * k) q[1];\nbit c = measure q[1];\n",
        "qubit[2] q;\nbit[1] r;\nbit[1] c;\nh q[0];\nr[0] = measure q[0];\n"
        "while (r == 1) { h q[0]; r[0] = measure q[0]; }\nry(1.2) q[1];\n"
        "c[0] = measure q[1];\n",
    ),
}


@pytest.fixture(scope="module")
def aer() -> AerEngine:
    return AerEngine()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_classical_variables_run_like_the_program_qiskit_reads(aer, name):
    ours, theirs = PAIRS[name]
    circuit, _ = parse_qasm(H3 + ours)
    exact = reference.probabilities(circuit)
    loaded = qasm3.loads(H3 + theirs)
    # The same distribution, exactly, from Qiskit's reading of the equivalent program.
    assert reference.probabilities(from_qiskit(loaded)) == pytest.approx(exact, abs=1e-12)
    counts = aer.run(RunRequest(circuit=circuit, shots=SHOTS, seed=5)).counts
    verdict = check_counts(counts, exact, SHOTS)
    assert verdict.verdict == "pass", verdict.detail
    raw = AerSimulator().run(loaded, shots=SHOTS, seed_simulator=9).result().get_counts()
    direct = {key.replace(" ", ""): n for key, n in raw.items()}
    verdict = check_counts(direct, exact, SHOTS)
    assert verdict.verdict == "pass", verdict.detail


# -- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "code", "fragment"),
    [
        ("uint[2] x = measure q;\nx = x + 1;\n", "unsupported_feature", "no classical arithmetic"),
        ("uint[2] x = measure q;\nx += 1;\n", "unsupported_feature", "no classical arithmetic"),
        ("uint[2] x = measure q;\nrx(x) q[0];\n", "unsupported_feature", "'x' holds measured"),
        ("uint[2] x = measure q;\nint y = x;\n", "unsupported_feature", "'x' holds measured"),
        ("uint n = 1;\nn = 2 + measure q[0];\n", "unsupported_feature", "measurement inside"),
        ("bit c = measure q[0];\nuint n;\nif (c) { n = 1; }\n", "unsupported_feature", "'n'"),
        ("bit c = measure q[0];\nint n;\nwhile (c) { n += 1; }\n", "unsupported_feature", "body"),
        (
            "bit c = measure q[0];\nuint[2] n = 1;\nif (c) { n = measure q; }\n",
            "unsupported_feature",
            "holds 1",
        ),
        ("bit c = measure q[0];\nbool b = c;\n", "unsupported_feature", "depends on measured"),
        ("float f = measure q[0];\n", "unsupported_feature", "measuring into 'float'"),
        (
            "bit c = measure q[0];\nbool r;\nwhile (c) { if (r) x q[1]; r = measure q[1]; }\n",
            "unsupported_feature",
            "inside a 'while' body",
        ),
        (
            "uint[2] x = measure q;\nbit[2] c = measure q;\nif (x == c) h q;\n",
            "unsupported_feature",
            "two values",
        ),
        ("uint[2] x = measure q;\nif (x > -1) h q;\n", "invalid_condition", "unsigned"),
        ("int[2] x = measure q;\nif (x == 2) h q;\n", "invalid_condition", "does not fit"),
        ("int n = 1;\nwhile (n < 3) { n += 1; }\n", "unsupported_feature", "constant"),
        ("int n = 1.5;\n", "invalid_parameter", "integer"),
        ("input float t;\nint n = t;\n", "unsupported_feature", "input parameter"),
        ("float f = 1;\ngate g a { rx(f) a; }\n", "unknown_parameter", "is a variable"),
        ("const int k = 1;\nk = 2;\n", "qasm_syntax", "constant"),
        ("bit c;\nif (c) { int n = 1; }\n", "unsupported_feature", "declarations"),
        ("int n;\nn &= 1;\n", "unsupported_feature", "'&'"),
        ("uint[3] x = measure q;\n", "qasm_syntax", "cannot measure 2 qubits into 3 bits"),
    ],
)
def test_refused_forms_have_codes(source, code, fragment):
    with pytest.raises(QasmSyntaxError, match=fragment) as info:
        parse_qasm(H3 + "qubit[2] q;\n" + source)
    assert info.value.code == code


def test_every_refused_arithmetic_names_the_variable():
    for source in ("x = x * 2;", "x -= 1;", "x /= 2;"):
        with pytest.raises(QasmSyntaxError, match="'x'") as info:
            parse_qasm(H3 + "qubit[2] q;\nuint[2] x = measure q;\n" + source + "\n")
        assert info.value.code == "unsupported_feature"


def test_a_const_bool_decides_an_if():
    src = (
        "qubit q;\nconst int n = 2;\nconst bool big = n > 1 && true;\n"
        "if (big) x q;\nif (!big) h q;\n"
    )
    assert ops(src) == [("x", (0,), ())]


def test_combinations_of_folded_operands_fold():
    for a, b in itertools.product((True, False), repeat=2):
        src = (
            f"qubit q;\nbool a = {str(a).lower()};\nbool b = {str(b).lower()};\n"
            "if (a && !b) x q;\nif (a || b) h q;\n"
        )
        want = [name for name, on in (("x", a and not b), ("h", a or b)) if on]
        assert [name for name, _, _ in ops(src)] == want
