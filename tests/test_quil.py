"""Quil input: pyQuil parses, qbus converts to the IR, the engines run it through the bus.

The conversion is checked against pyQuil itself: each standard gate's IR expansion has
pyQuil's matrix (global phase included), and whole programs give the state pyQuil's own
reference wavefunction simulator computes. There is no QVM here (not on any registry).
"""

from __future__ import annotations

import math
import random
import sys
import warnings

import cirq
import numpy as np
import pytest
from braket.circuits import Circuit as BraketCircuit
from pyquil import Program, gates
from pyquil.quilatom import MemoryReference
from pyquil.simulation import matrices as quil_matrices

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.client import Client, circuit_fields
from qbus.consumers.ingest import IngestHandler
from qbus.consumers.pipeline import Pipeline
from qbus.engines import reference
from qbus.errors import CircuitError, MissingOptionalLibraryError
from qbus.frontends.parameters import bind
from qbus.frontends.qasm import parse_qasm
from qbus.frontends.quil import looks_like_quil, parse_quil
from qbus.schemas.events import (
    CircuitIngested,
    JobCompleted,
    JobRejected,
)
from qbus.schemas.ir import Circuit, Op
from tests.jobs import QASM2_BELL, QASM3_GHZ, job, run_jobs

pytestmark = pytest.mark.timeout(180)

BELL = "DECLARE ro BIT[2]\nH 0\nCNOT 0 1\nMEASURE 0 ro[0]\nMEASURE 1 ro[1]\n"
GHZ = (
    "# a GHZ state on three qubits\n"
    "DECLARE ro BIT[3]\nH 0\nCNOT 0 1\nCNOT 1 2\n"
    "MEASURE 0 ro[0]\nMEASURE 1 ro[1]\nMEASURE 2 ro[2]\n"
)
# Memory-parametrised: theta (REAL[1]) becomes "theta", phi (REAL[2]) "phi_0"/"phi_1".
PARAMETRIC = """DECLARE ro BIT[2]
DECLARE theta REAL[1]
DECLARE phi REAL[2]
RX(theta) 0
RY(2*phi[0] - pi/4) 1
CPHASE(theta/2 + sin(phi[1])) 0 1
XY(phi[1]^2) 0 1
MEASURE 0 ro[0]
MEASURE 1 ro[1]
"""
PARAMETRIC_VALUES = {"theta": 0.7, "phi_0": 1.1, "phi_1": -0.4}

# Programs whose converted state must equal pyQuil's own reference simulation.
PROGRAMS = [
    "H 0\nCNOT 0 1",
    "H 0\nCNOT 0 1\nCNOT 1 2\nCNOT 2 3",
    "H 0\nH 1\nPSWAP(0.7) 0 1\nCPHASE01(0.4) 0 1\nCPHASE10(0.9) 1 0\nCPHASE00(1.1) 0 1",
    "RX(0.3) 0\nPHASEDFSIM(0.1, 0.2, 0.3, 0.4, 0.5) 0 1\nRY(0.6) 2\nCSWAP 2 0 1",
    "H 0\nRY(0.2) 1\nISWAP 0 1\nXY(0.3) 1 0\nCCNOT 0 1 2\nU(0.1, 0.2, 0.3) 2",
    "H 0\nRX(0.3) 1\nDAGGER CONTROLLED RX(0.5) 0 1\nCONTROLLED CONTROLLED X 1 0 2\n"
    "DAGGER U(0.4, 0.5, 0.6) 1\nDAGGER PHASEDFSIM(0.5, 0.4, 0.3, 0.2, 0.1) 2 0\nDAGGER T 2\n"
    "CONTROLLED PHASE(0.8) 2 1\nDAGGER DAGGER S 0",
    "H 0\nRZ(-pi/3) 0\nPHASE(2*pi/7) 0\nCZ 0 1\nSWAP 1 2\nI 2\nX 1\nY 2\nZ 0\nS 1\nT 0",
]


def _quiet_reference_state(text: str, n: int) -> np.ndarray:
    from pyquil.simulation import ReferenceWavefunctionSimulator

    with warnings.catch_warnings():
        # Deprecated in pyQuil 4.22 in favour of a private successor; still pyQuil's own.
        warnings.simplefilter("ignore")
        sim = ReferenceWavefunctionSimulator(n_qubits=n)
        sim.do_program(Program(text))
    return np.asarray(sim.wf)


def _unitary(circuit: Circuit) -> np.ndarray:
    """The circuit's matrix from the reference simulator, one basis state per column."""
    n = circuit.num_qubits
    cols = []
    for j in range(1 << n):
        prep = tuple(Op(name="x", qubits=(q,)) for q in range(n) if j >> q & 1)
        body = Circuit(num_qubits=n, ops=prep + circuit.ops)
        cols.append(reference.statevector(body))
    return np.array(cols).T


def _fidelity(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.vdot(a, b)) ** 2)


# -- the conversion against pyQuil --------------------------------------------------------


GATES_2Q = ["CZ", "CNOT", "SWAP", "ISWAP", "SQISW"]
GATES_2Q_PARAM = {
    "CPHASE": 1,
    "CPHASE00": 1,
    "CPHASE01": 1,
    "CPHASE10": 1,
    "PSWAP": 1,
    "XY": 1,
    "RZZ": 1,
    "RXX": 1,
    "RYY": 1,
    "FSIM": 2,
    "PHASEDFSIM": 5,
}


GATES_OTHER = ["I", "X", "Y", "Z", "H", "S", "T", "PHASE", "RX", "RY", "RZ", "U", "CCNOT", "CSWAP"]


@pytest.mark.parametrize("name", [*GATES_OTHER, *GATES_2Q, *GATES_2Q_PARAM])
def test_each_standard_gate_has_pyquils_matrix_exactly(name: str):
    rng = random.Random(name)
    nparams = {"PHASE": 1, "RX": 1, "RY": 1, "RZ": 1, "U": 3, **GATES_2Q_PARAM}.get(name, 0)
    args = [rng.uniform(-math.pi, math.pi) for _ in range(nparams)]
    matrix = getattr(quil_matrices, name)
    matrix = matrix(*args) if callable(matrix) else matrix
    width = int(math.log2(matrix.shape[0]))
    # Quil's first qubit is the most significant: listing n-1 … 0 makes pyQuil's matrix
    # index the IR's little-endian state index.
    qubits = " ".join(str(q) for q in reversed(range(width)))
    call = f"{name}({', '.join(repr(a) for a in args)})" if args else name
    circuit = parse_quil(f"{call} {qubits}")
    assert np.allclose(_unitary(circuit), matrix, atol=1e-12)
    # DAGGER inverts, CONTROLLED adds a control in front (where the IR has the gate).
    dagger = parse_quil(f"DAGGER {call} {qubits}")
    assert np.allclose(_unitary(dagger), matrix.conj().T, atol=1e-12)
    if name in ("X", "Y", "Z", "H", "PHASE", "RX", "RY", "RZ", "U", "CNOT", "SWAP"):
        controlled = parse_quil(f"CONTROLLED {call} {width} {qubits}")
        size = matrix.shape[0]
        expected = np.eye(2 * size, dtype=complex)
        expected[size:, size:] = matrix
        assert np.allclose(_unitary(controlled), expected, atol=1e-12)


@pytest.mark.parametrize("text", PROGRAMS)
def test_programs_match_pyquils_reference_simulator(text: str):
    circuit = parse_quil(text)
    ours = reference.statevector(circuit)
    theirs = _quiet_reference_state(text, circuit.num_qubits)
    # Same amplitudes, global phase included.
    assert np.allclose(ours, theirs, atol=1e-10)


def test_quil_and_qasm_of_one_circuit_give_the_same_state():
    qasm_ghz, _ = parse_qasm(QASM3_GHZ)
    quil_ghz = parse_quil(GHZ)
    assert quil_ghz.num_qubits == qasm_ghz.num_qubits == 3
    assert reference.probabilities(quil_ghz) == reference.probabilities(qasm_ghz)
    assert np.allclose(reference.statevector(quil_ghz), reference.statevector(qasm_ghz))
    qasm = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input float phi_0;
input float phi_1;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
ry(2*phi_0 - pi/4) q[1];
cp(theta/2 + sin(phi_1)) q[0], q[1];
rxx(-(phi_1**2)/2) q[0], q[1];
ryy(-(phi_1**2)/2) q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""
    from_qasm, _ = parse_qasm(qasm)
    from_quil = parse_quil(PARAMETRIC)
    assert from_quil.parameters == ("phi_0", "phi_1", "theta")
    for values in (PARAMETRIC_VALUES, {"theta": -2.0, "phi_0": 0.3, "phi_1": 1.9}):
        a = reference.statevector(from_quil, values)
        b = reference.statevector(from_qasm, values)
        assert np.allclose(a, b, atol=1e-12)


def test_parameters_bind_like_the_numbers_written_in():
    circuit = parse_quil(PARAMETRIC)
    v = PARAMETRIC_VALUES
    literal = (
        PARAMETRIC.replace("DECLARE theta REAL[1]\nDECLARE phi REAL[2]\n", "")
        .replace("phi[0]", repr(v["phi_0"]))
        .replace("phi[1]", repr(v["phi_1"]))
        .replace("theta", repr(v["theta"]))
    )
    gates_only = "\n".join(
        line for line in literal.splitlines() if not line.startswith(("DECLARE", "MEASURE"))
    )
    expected = _quiet_reference_state(gates_only, 2)
    assert np.allclose(reference.statevector(circuit, v), expected, atol=1e-12)
    assert np.allclose(reference.statevector(bind(circuit, v)), expected, atol=1e-12)


def test_constant_defgates_are_synthesised():
    rng = np.random.default_rng(3)
    # A random two-qubit unitary (QR of a complex Gaussian matrix).
    q, r = np.linalg.qr(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)))
    u = q * (np.diag(r) / abs(np.diag(r)))
    rows = "\n".join(
        "    " + ", ".join(f"{float(z.real)!r}{float(z.imag):+}i" for z in row) for row in u
    )
    text = (
        f"DEFGATE RAND:\n{rows}\n"
        "DEFGATE MYS:\n    1, 0\n    0, i\n"
        "DEFGATE FLIP AS PERMUTATION:\n    0, 1, 3, 2\n"
        "H 0\nRY(0.4) 1\nRAND 1 0\nMYS 1\nFLIP 0 1\n"
    )
    circuit = parse_quil(text)
    assert {op.name for op in circuit.ops} <= {"h", "ry", "u", "cx"}
    psi = np.zeros(4, dtype=complex)
    psi[0] = 1
    h = np.array([[1, 1], [1, -1]]) / math.sqrt(2)
    c, s = math.cos(0.2), math.sin(0.2)
    ry = np.array([[c, -s], [s, c]])
    # Quil matrices take their first qubit as the most significant: q1 ⊗ q0 here.
    psi = np.kron(ry, h) @ psi
    psi = u @ psi  # RAND 1 0
    psi = np.kron(np.diag([1, 1j]), np.eye(2)) @ psi  # MYS 1
    psi = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]]) @ psi  # FLIP 0 1
    # The synthesised DEFGATE keeps everything but its global phase.
    assert _fidelity(reference.statevector(circuit), psi) == pytest.approx(1.0, abs=1e-9)


def test_measure_declare_reset_and_sparse_qubits():
    text = (
        "DECLARE flags BIT[1]\nDECLARE ro BIT[2]\nX 4\nH 0\nRESET 0\n"
        "MEASURE 4 ro[1]\nMEASURE 0 flags[0]\nHALT\n"
    )
    circuit = parse_quil(text)
    # Qubit indices are kept; ro comes first, other bit regions follow by name.
    assert circuit.num_qubits == 5 and circuit.num_clbits == 3
    assert Op(name="measure", qubits=(4,), clbits=(1,)) in circuit.ops
    assert Op(name="measure", qubits=(0,), clbits=(2,)) in circuit.ops
    other = parse_quil("DECLARE b BIT[1]\nDECLARE a BIT[1]\nMEASURE 0 b[0]\nMEASURE 1 a[0]\n")
    assert other.ops == (
        Op(name="measure", qubits=(0,), clbits=(1,)),
        Op(name="measure", qubits=(1,), clbits=(0,)),
    )
    assert Op(name="reset", qubits=(0,)) in circuit.ops
    all_reset = parse_quil("H 0\nRESET\nX 2\n")
    assert all_reset.ops[1] == Op(name="reset", qubits=(0, 1, 2))


# (program, code, fragment of the message or location)
REJECTED: list[tuple[str, str, str]] = [
    ("H 0\nRX(1.0 0\n", "quil_syntax", "line 2, column 3"),
    ("\n\n  H 0\n  CNOT 0 1\n  MEASURE 0 ro[\n", "quil_syntax", "line 5"),
    ("H 0\nFOO 1\n", "unknown_gate", "FOO"),
    ("HH 0\n", "unknown_gate", "did you mean H"),
    ("CNOT 0 1 2\n", "wrong_arity", "CNOT"),
    ("RX 0\n", "wrong_arity", "RX"),
    ("CNOT 1 1\n", "duplicate_qubit", "[1, 1]"),
    ("DECLARE ro BIT[1]\nH 0\nMEASURE 0 ro[3]\n", "clbit_out_of_range", "ro[3]"),
    ("DECLARE ro BIT[1]\nMEASURE 0 out[0]\n", "unknown_register", "out"),
    ("DECLARE n INTEGER[1]\nRX(n[0]) 0\n", "unknown_register", "REAL"),
    ("H 0\nMEASURE 0\n", "quil_unsupported", "no classical target"),
    (
        "DECLARE ro BIT[1]\nLABEL @loop\nH 0\nMEASURE 0 ro[0]\nJUMP-WHEN @loop ro[0]\n",
        "quil_unsupported",
        "LABEL",
    ),
    ("DECLARE ro BIT[1]\nMEASURE 0 ro[0]\nJUMP-WHEN @end ro[0]\nX 0\n", "quil_unsupported", "JUMP"),
    ("DECLARE x INTEGER[1]\nMOVE x[0] 3\nH 0\n", "quil_unsupported", "classical memory"),
    ("DEFCIRCUIT BELL a b:\n    H a\n    CNOT a b\nBELL 0 1\n", "quil_unsupported", "DEFCIRCUIT"),
    ("DEFGATE R(%t):\n    cos(%t), 0\n    0, 1\nR(0.1) 0\n", "quil_unsupported", "parameters"),
    ("DEFGATE Z2(%t) q AS PAULI-SUM:\n    Z(%t) q\nZ2(0.1) 0\n", "quil_unsupported", "DEFGATE"),
    ('PRAGMA ADD-KRAUS X 0 "(1 0 0 1)"\nX 0\n', "quil_unsupported", "ADD-KRAUS"),
    ('PRAGMA READOUT-POVM 0 "(0.9 0.1 0.1 0.9)"\nX 0\n', "quil_unsupported", "READOUT-POVM"),
    ("PRAGMA MY_BACKEND_TRICK\nX 0\n", "quil_unsupported", "MY_BACKEND_TRICK"),
    ("FORKED RX(0.1, 0.2) 0 1\n", "quil_unsupported", "FORKED"),
    ("CONTROLLED ISWAP 0 1 2\n", "quil_unsupported", "CONTROLLED ISWAP"),
    ("RX(1.0+2.0i) 0\n", "quil_unsupported", "complex"),
    ("DECLARE tau REAL[1]\nRX(tau) 0\n", "quil_unsupported", "not a valid parameter name"),
    ("H 0\nHALT\nX 0\n", "quil_unsupported", "HALT"),
    ("H 0\nWAIT\n", "quil_unsupported", "WAIT"),
    ("RX(1/0) 0\n", "invalid_parameter", "division"),
    ("DECLARE t REAL[1]\nRX(" + "+".join(["t"] * 5000) + ") 0\n", "invalid_parameter", "nested"),
    (
        "DEFGATE P AS PERMUTATION:\n    " + ", ".join(map(str, range(16))) + "\nP 0 1 2 3\n",
        "quil_unsupported",
        "4 qubits",
    ),
    ("H 5000\n", "too_large", "5000"),
    ("   \n", "empty_program", ""),
]


@pytest.mark.parametrize(("text", "code", "fragment"), REJECTED)
def test_unsupported_or_malformed_quil_is_rejected_with_a_code(text, code, fragment):
    with pytest.raises(CircuitError) as info:
        parse_quil(text)
    assert info.value.code == code, info.value
    assert fragment in str(info.value)


def test_rejections_say_which_line_or_instruction():
    with pytest.raises(CircuitError) as info:
        parse_quil('H 0\n# note\nX   1\nPRAGMA ADD-KRAUS X 0 "(1 0 0 1)"  # noise\n')
    assert info.value.where == "line 4"
    with pytest.raises(CircuitError) as info:
        parse_quil("H 0\nFOO 0\n")
    assert info.value.where == "line 2"
    with pytest.raises(CircuitError) as info:
        parse_quil("DECLARE ro BIT[1]\nH 0\nFOO 0\nFOO 0\n")  # twice: no single line
    assert info.value.where == "instruction 3"  # declarations first, as pyQuil lists them


def test_auto_detection_tells_quil_from_qasm_and_json():
    for quil in (BELL, GHZ, PARAMETRIC, "H 0\nCNOT 0 1", "DAGGER RX(0.1) 0\n", "RESET\nX 0\n"):
        assert looks_like_quil(quil), quil
    for other in (QASM2_BELL, QASM3_GHZ, '{"num_qubits": 1}', "qubit q;\nh q;\n", "h q[0];\n"):
        assert not looks_like_quil(other), other
    assert not looks_like_quil("#pragma hint\nqubit[2] q;\nh q[0];\n")


def test_without_pyquil_the_error_carries_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyquil", None)
    with pytest.raises(MissingOptionalLibraryError, match=r"pip install 'qbus\[quil\]'"):
        parse_quil(BELL)


async def test_ingest_rejects_quil_without_pyquil_with_the_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyquil", None)
    from qbus.errors import Reject

    with pytest.raises(Reject) as info:
        await IngestHandler().handle(job(BELL, shots=10))
    assert info.value.code == "missing_dependency"
    assert "qbus[quil]" in info.value.message


# -- through the bus ----------------------------------------------------------------------


def _statevector(event: JobCompleted) -> np.ndarray:
    assert event.statevector is not None
    flat = np.asarray(event.statevector)
    return flat[0::2] + 1j * flat[1::2]


async def test_quil_bell_ghz_and_parametric_jobs_complete_verified(bus: Bus, pipeline: Pipeline):
    jobs = [
        job(BELL, shots=2000, job_id="quil-bell"),  # format auto: detected as Quil
        job(GHZ, format="quil", shots=2000, job_id="quil-ghz"),
        job(PARAMETRIC, shots=4000, parameters=PARAMETRIC_VALUES, job_id="quil-param"),
        job(
            GHZ.replace("MEASURE", "# MEASURE"),
            method="statevector",
            job_id="quil-ghz-sv",
        ),
        job(QASM3_GHZ.replace("c = measure q;\n", ""), method="statevector", job_id="qasm-sv"),
    ]
    finals = await run_jobs(bus, jobs, timeout=120)
    for submitted, final in zip(jobs, finals, strict=True):
        assert isinstance(final, JobCompleted), (submitted.job_id, final)
        assert final.verification.verdict == "pass", (submitted.job_id, final.verification)
    bell, ghz, param, ghz_sv, qasm_sv = finals
    assert set(bell.counts) == {"00", "11"} and sum(bell.counts.values()) == 2000
    assert set(ghz.counts) == {"000", "111"}
    assert len(param.counts) == 4 and param.verification.test.startswith("chi")
    # The Quil GHZ and the OpenQASM GHZ are one state.
    assert _fidelity(_statevector(ghz_sv), _statevector(qasm_sv)) == pytest.approx(1, abs=1e-9)
    # Ingest recorded the format it read.
    async for _, _, event in _events(bus, "quil-bell"):
        if isinstance(event, CircuitIngested):
            assert event.source_format == "quil"
            assert event.circuit.num_clbits == 2
            break
    else:
        pytest.fail("no circuit.ingested for quil-bell")


async def _events(bus: Bus, job_id: str):
    from qbus.bus.job_log import events_of

    async for item in events_of(bus, job_id, follow=False, timeout=10):
        yield item


async def test_bad_quil_is_rejected_through_the_bus_and_ingest_keeps_running(
    bus: Bus, pipeline: Pipeline
):
    jobs = [
        job("DECLARE ro BIT[1]\nH 0\nRX(0.5 0\nMEASURE 0 ro[0]\n", format="quil"),
        job("DECLARE ro BIT[1]\nLABEL @a\nH 0\nMEASURE 0 ro[0]\nJUMP-WHEN @a ro[0]\n"),
        job('PRAGMA ADD-KRAUS X 0 "(1 0 0 1)"\nDECLARE ro BIT[1]\nMEASURE 0 ro[0]\n'),
        job("DECLARE ro BIT[1]\nH 0\nMEASURE 0 ro[0]\n", shots=100),  # a good one after
    ]
    finals = await run_jobs(bus, jobs, timeout=120)
    syntax, jump, kraus, good = finals
    assert isinstance(syntax, JobRejected) and syntax.code == "quil_syntax"
    assert syntax.where == "line 3, column 1" or syntax.where.startswith("line 3")
    assert isinstance(jump, JobRejected) and jump.code == "quil_unsupported"
    assert "JUMP" in jump.message or "LABEL" in jump.message
    assert isinstance(kraus, JobRejected) and kraus.code == "quil_unsupported"
    assert kraus.where == "line 1"
    assert isinstance(good, JobCompleted) and good.verification.verdict == "pass"


async def test_client_submits_pyquil_cirq_and_braket_objects(config: Config, pipeline: Pipeline):
    # The frameworks are imported with the module: importing them here would block the
    # event loop the in-process stages start on for seconds.
    quil = Program()
    ro = quil.declare("ro", "BIT", 2)
    quil += gates.H(0)
    quil += gates.CNOT(0, 1)
    quil += gates.MEASURE(0, ro[0])
    quil += gates.MEASURE(1, MemoryReference("ro", 1))
    assert circuit_fields(quil)["format"] == "quil"
    q = cirq.LineQubit.range(2)
    bell_cirq = cirq.Circuit([cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.measure(*q, key="m")])
    bell_braket = BraketCircuit().h(0).cnot(0, 1)
    async with Client(config.bus.url) as c:
        submitted = [await c.submit(x, shots=500, seed=3) for x in (quil, bell_cirq, bell_braket)]
        results = [await j.result(timeout=90) for j in submitted]
    for result in results:
        assert isinstance(result, JobCompleted), result
        assert result.verification.verdict == "pass"
        assert set(result.counts) <= {"00", "11"} and sum(result.counts.values()) == 500


def test_a_quil_file_is_submitted_as_quil(tmp_path):
    from qbus.producers.submit import job_from_file

    path = tmp_path / "bell.quil"
    path.write_text(BELL)
    submitted = job_from_file(path, shots=10)
    assert submitted.format == "quil" and submitted.source == BELL


@pytest.mark.parametrize("text", ["DECLARE ro BIT[2]\nH 0\nCN", "DECLARE ro BIT[1]\nH\n"])
def test_a_gate_on_no_qubits_is_a_syntax_error_not_a_crash(text: str) -> None:
    # Found by tests/test_fuzz.py: pyQuil parses "CN" as a gate with no qubits and only
    # refuses it (quil.GateError) when its instructions are built.
    with pytest.raises(CircuitError) as caught:
        parse_quil(text)
    assert caught.value.code == "quil_syntax"
    assert "at least" in str(caught.value) or "1 or more qubits" in str(caught.value)
