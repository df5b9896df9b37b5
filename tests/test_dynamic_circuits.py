"""Dynamic circuits (issue 21): feed-forward programs parsed, run exactly, run on Aer.

Each program is built here as OpenQASM text. The reference engine's branch
enumeration gives the exact distribution, checked against facts derived by hand; Aer
(through qbus) is held to it with the verifier's chi-square test, and to Aer running
Qiskit's own parse of the same text (``qiskit.qasm2.loads``) with the cross-engine test.
"""

from __future__ import annotations

import math

import pytest
from qiskit import qasm2
from qiskit_aer import AerSimulator

from qbus.ai.rewrite import AiRewriter
from qbus.bus.config import AiConfig
from qbus.consumers.verify import VERIFY_MAX_WORK, VerifyHandler
from qbus.engines import reference
from qbus.engines.aer import AerEngine
from qbus.engines.base import Capabilities, RunRequest
from qbus.engines.branching import MAX_LOOP_ITERATIONS
from qbus.engines.registry import get_engine
from qbus.errors import CircuitError, EngineError
from qbus.frontends.parameters import bind, check_angles, check_parameters
from qbus.frontends.qasm import parse_qasm, to_qasm3
from qbus.schemas.events import ExecutionCompleted, JobOptions
from qbus.schemas.ir import (
    Circuit,
    Condition,
    Op,
    circuit_hash,
    shot_by_shot,
    unbounded_loop,
)
from qbus.verifier.crosscheck import compare_counts
from qbus.verifier.statistics import check_counts

THETA = 0.7

# Teleport ry(THETA)|0> from q[0] to q[2]: Bell pair, Bell measurement, then X and Z
# corrections fed forward from the two measured bits.
TELEPORT = f"""OPENQASM 2.0;
include "qelib1.inc";
qreg q[3];
creg a[1];
creg b[1];
creg out[1];
ry({THETA}) q[0];
h q[1];
cx q[1],q[2];
cx q[0],q[1];
h q[0];
measure q[0] -> a[0];
measure q[1] -> b[0];
if (b==1) x q[2];
if (a==1) z q[2];
measure q[2] -> out[0];
"""

# Three-qubit bit-flip code: encode |0>, a partial bit flip rx(1.1) on data qubit 1,
# two parity checks into ancillas, a correction chosen by the 2-bit syndrome, and the
# data read out. The syndrome collapses the error to "none" or "X on q[1]", which the
# correction undoes: the data always reads 000.
SYNDROME = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[5];
creg syn[2];
creg d[3];
cx q[0],q[1];
cx q[0],q[2];
rx(1.1) q[1];
cx q[0],q[3];
cx q[1],q[3];
cx q[1],q[4];
cx q[2],q[4];
measure q[3] -> syn[0];
measure q[4] -> syn[1];
if (syn==1) x q[0];
if (syn==3) x q[1];
if (syn==2) x q[2];
measure q[0] -> d[0];
measure q[1] -> d[1];
measure q[2] -> d[2];
"""

# Iterative phase estimation of u1(2*pi*3/8) on |1>, three bits, one reused ancilla:
# each round's phase correction is fed forward from the bits already measured. The
# phase 3/8 = 0.011 in binary is exact, so the result is c = 3 with certainty.
PHI = 2 * math.pi * 3 / 8
IPE = f"""OPENQASM 2.0;
include "qelib1.inc";
qreg anc[1];
qreg tgt[1];
creg c[3];
x tgt[0];
h anc[0];
cu1({4 * PHI}) anc[0],tgt[0];
h anc[0];
measure anc[0] -> c[0];
reset anc[0];
h anc[0];
cu1({2 * PHI}) anc[0],tgt[0];
if (c==1) u1({-math.pi / 2}) anc[0];
h anc[0];
measure anc[0] -> c[1];
reset anc[0];
h anc[0];
cu1({PHI}) anc[0],tgt[0];
if (c==1) u1({-math.pi / 4}) anc[0];
if (c==2) u1({-math.pi / 2}) anc[0];
if (c==3) u1({-3 * math.pi / 4}) anc[0];
h anc[0];
measure anc[0] -> c[2];
"""

PROGRAMS = {"teleport": TELEPORT, "syndrome": SYNDROME, "ipe": IPE}
SHOTS = 4000


@pytest.fixture(scope="module")
def aer() -> AerEngine:
    return AerEngine()


def marginal(dist: dict[str, float], bit: int) -> float:
    """Probability that clbit ``bit`` reads 1."""
    return sum(p for key, p in dist.items() if key[-1 - bit] == "1")


def test_if_statements_parse_into_if_ops():
    circuit, fmt = parse_qasm(TELEPORT)
    assert fmt == "qasm2"
    ifs = [op for op in circuit.ops if op.name == "if"]
    assert [op.condition for op in ifs] == [
        Condition(clbits=(1,), value=1),
        Condition(clbits=(0,), value=1),
    ]
    assert [op.body[0].name for op in ifs] == ["x", "z"]
    assert all(op.qubits == (2,) for op in ifs)
    syndrome, _ = parse_qasm(SYNDROME)
    conds = [op.condition for op in syndrome.ops if op.name == "if"]
    assert [c.clbits for c in conds] == [(0, 1)] * 3  # the whole 2-bit register s
    assert [c.value for c in conds] == [1, 3, 2]
    assert shot_by_shot(circuit) and shot_by_shot(syndrome)


def test_reference_teleports_exactly():
    circuit, _ = parse_qasm(TELEPORT)
    dist = reference.probabilities(circuit)
    # out is clbit 2; a and b are uniform and independent of it.
    assert marginal(dist, 2) == pytest.approx(math.sin(THETA / 2) ** 2, abs=1e-12)
    assert marginal(dist, 0) == pytest.approx(0.5, abs=1e-12)
    assert marginal(dist, 1) == pytest.approx(0.5, abs=1e-12)
    assert sum(dist.values()) == pytest.approx(1.0, abs=1e-12)


def test_reference_without_feed_forward_does_not_teleport():
    # The same program with the corrections dropped: q[2] is then maximally mixed.
    circuit, _ = parse_qasm(
        TELEPORT.replace("if (b==1) x q[2];", "").replace("if (a==1) z q[2];", "")
    )
    assert marginal(reference.probabilities(circuit), 2) == pytest.approx(0.5, abs=1e-12)


def test_reference_syndrome_correction_restores_the_data():
    circuit, _ = parse_qasm(SYNDROME)
    dist = reference.probabilities(circuit)
    flip = math.sin(1.1 / 2) ** 2
    # Keys: d (clbits 2..4) then s (clbits 0..1). Data always 000; syndrome 11 (an X
    # on q[1] flips both parities) with the flip probability, else 00.
    assert dist == pytest.approx({"00000": 1 - flip, "00011": flip}, abs=1e-12)


def test_reference_iterative_phase_estimation_is_certain():
    circuit, _ = parse_qasm(IPE)
    assert reference.probabilities(circuit) == pytest.approx({"011": 1.0}, abs=1e-12)


def test_reference_mid_circuit_reset_and_remeasure():
    circuit, _ = parse_qasm(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[2];\n'
        "h q[0];\nmeasure q[0] -> c[0];\nreset q[0];\nmeasure q[0] -> c[1];\n"
    )
    assert reference.probabilities(circuit) == pytest.approx({"00": 0.5, "01": 0.5}, abs=1e-12)


def test_reference_engine_samples_the_exact_distribution():
    circuit, _ = parse_qasm(TELEPORT)
    engine = reference.ReferenceEngine()
    result = engine.run(RunRequest(circuit=circuit, shots=SHOTS, seed=11))
    assert sum(result.counts.values()) == SHOTS
    verdict = check_counts(result.counts, reference.probabilities(circuit), SHOTS)
    assert verdict.verdict == "pass", verdict.detail
    again = engine.run(RunRequest(circuit=circuit, shots=SHOTS, seed=11))
    assert again.counts == result.counts


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_aer_through_qbus_matches_the_exact_reference(aer, name):
    circuit, _ = parse_qasm(PROGRAMS[name])
    counts = aer.run(RunRequest(circuit=circuit, shots=SHOTS, seed=5)).counts
    assert sum(counts.values()) == SHOTS
    verdict = check_counts(counts, reference.probabilities(circuit), SHOTS)
    assert verdict.verdict == "pass", verdict.detail


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_aer_through_qbus_agrees_with_aer_on_qiskits_own_parse(aer, name):
    circuit, _ = parse_qasm(PROGRAMS[name])
    ours = aer.run(RunRequest(circuit=circuit, shots=SHOTS, seed=5)).counts
    qc = qasm2.loads(PROGRAMS[name], custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    raw = AerSimulator().run(qc, shots=SHOTS, seed_simulator=9).result().get_counts()
    # Qiskit separates registers with spaces, last declared first: without the spaces
    # the key is the IR's (registers flattened in declaration order, clbit 0 rightmost).
    theirs = {key.replace(" ", ""): n for key, n in raw.items()}
    agreement = compare_counts(ours, theirs)
    assert agreement.verdict == "pass", agreement.detail
    # And Qiskit's run agrees with the exact distribution too.
    assert check_counts(theirs, reference.probabilities(circuit), SHOTS).verdict == "pass"


def _looping(condition_value: int) -> Circuit:
    """``while (c == value) { h q; measure q -> c; }`` after ``x q; measure q -> c``."""
    body = (Op(name="h", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,)))
    return Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(
            Op(name="x", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(
                name="while",
                qubits=(0,),
                condition=Condition(clbits=(0,), value=condition_value),
                body=body,
            ),
        ),
    )


def test_repeat_until_success_loop_ends_in_the_exit_state():
    # Repeat while c == 1: every exit has c == 0 (branches under 1e-14 are dropped).
    assert reference.probabilities(_looping(1)) == pytest.approx({"0": 1.0}, abs=1e-12)


def test_runaway_loop_is_stopped_with_a_code():
    # x q; measure -> c = 1; then "while c == 1 { x q; x q; measure }" never changes c.
    body = (
        Op(name="x", qubits=(0,)),
        Op(name="x", qubits=(0,)),
        Op(name="measure", qubits=(0,), clbits=(0,)),
    )
    runaway = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(
            Op(name="x", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="while", qubits=(0,), condition=Condition(clbits=(0,), value=1), body=body),
        ),
    )
    with pytest.raises(CircuitError, match=f"after {MAX_LOOP_ITERATIONS} iterations") as info:
        reference.probabilities(runaway)
    assert info.value.code == "loop_budget_exceeded"
    assert info.value.where == "$.ops[2]"


def test_branch_explosion_is_refused_before_memory_runs_out():
    n = 20
    ops = [Op(name="h", qubits=(q,)) for q in range(n)]
    ops += [Op(name="measure", qubits=(q,), clbits=(q,)) for q in range(n)]
    ops += [Op(name="x", qubits=(0,))]  # a gate after them: the measurements branch
    circuit = Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))
    with pytest.raises(CircuitError) as info:
        reference.probabilities(circuit)
    assert info.value.code == "too_many_branches"


def _rounds(n: int, rounds: int) -> Circuit:
    """``rounds`` of entangle, then measure and reset every other qubit: branches double
    each round while the gates pile up (the shape of benchmarks/fairness.py's job)."""
    ops: list[Op] = []
    for r in range(rounds):
        ops += [Op(name="h", qubits=(q,)) for q in range(n)]
        ops += [Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1)]
        for q in range(r % 2, n, 2):
            ops += [Op(name="measure", qubits=(q,), clbits=(q,)), Op(name="reset", qubits=(q,))]
    ops += [Op(name="measure", qubits=(q,), clbits=(q,)) for q in range(n)]
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


def test_exact_branching_gives_up_past_its_work_budget():
    small = _rounds(4, 2)
    exact = reference.probabilities(small)
    assert math.isclose(sum(exact.values()), 1.0)
    # The same answer within a budget that is big enough.
    assert reference.probabilities(small, max_work=10**7) == pytest.approx(exact)
    with pytest.raises(CircuitError, match="amplitude updates") as info:
        reference.probabilities(small, max_work=2_000)
    assert info.value.code == "too_many_branches"


async def test_verify_skips_a_dynamic_circuit_too_costly_to_branch_and_remembers_it(
    monkeypatch: pytest.MonkeyPatch,
):
    # Within the stage's branch limit for many rounds, but not within its work budget:
    # skipped at once instead of holding every other job's verification.
    circuit = _rounds(12, 30)
    calls = []
    real = reference.probabilities

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "probabilities", counted)
    handler = VerifyHandler()
    for k in range(2):
        verdict = handler._verify(_completed(circuit, f"costly-{k}"))
        assert verdict.verdict == "skipped"
        assert "amplitude updates" in verdict.detail
    assert len(calls) == 1  # the second job is answered from the stage's cache
    assert calls[0]["max_work"] == VERIFY_MAX_WORK


def _completed(circuit: Circuit, job_id: str) -> ExecutionCompleted:
    options = JobOptions(shots=100, seed=1)
    return ExecutionCompleted(
        event_id=f"{job_id}-x",
        job_id=job_id,
        causation_id=f"{job_id}-r",
        engine="qiskit-aer",
        engine_version="test",
        circuit=circuit,
        circuit_hash=circuit_hash(circuit),
        options=options,
        seed=1,
        counts={"0" * circuit.num_clbits: 100},
        run_seconds=0.1,
    )


def test_engines_without_classical_control_refuse_it_before_running():
    circuit, _ = parse_qasm(TELEPORT)
    quest = get_engine("quest")
    assert quest.capabilities.classical_control == ()
    with pytest.raises(EngineError) as info:
        quest.validate(RunRequest(circuit=circuit, shots=10))
    assert info.value.code == "classical_control_unsupported"
    assert "'if'" in str(info.value)
    with pytest.raises(EngineError) as info:
        reference.ReferenceEngine().validate(RunRequest(circuit=circuit, method="statevector"))
    assert info.value.code == "unsupported_method"


class _Small(reference.ReferenceEngine):
    """The reference restricted to four gates: a real engine with a smaller gate set."""

    name = "small"
    capabilities = Capabilities(
        methods=("sample",),
        max_qubits={"sample": 5},
        gates=("ry", "h", "cx", "x"),
        classical_control=("if",),
    )


def test_nested_gates_outside_an_engines_gate_set_are_found():
    circuit, _ = parse_qasm(TELEPORT)  # its 'z' is nested in an 'if'
    with pytest.raises(EngineError, match=r"gate 'z' \(at \$\.ops\[\d+\]\.body\[0\]\)") as info:
        _Small().validate(RunRequest(circuit=circuit, shots=10))
    assert info.value.code == "unsupported_gate"


def test_the_exact_check_catches_a_run_that_ignored_the_feed_forward():
    circuit, _ = parse_qasm(TELEPORT)
    no_feed_forward, _ = parse_qasm(
        TELEPORT.replace("if (b==1) x q[2];", "").replace("if (a==1) z q[2];", "")
    )
    wrong = reference.ReferenceEngine().run(
        RunRequest(circuit=no_feed_forward, shots=SHOTS, seed=2)
    )
    verdict = check_counts(wrong.counts, reference.probabilities(circuit), SHOTS)
    assert verdict.verdict == "fail", verdict.detail


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_export_to_qasm3_reads_back_with_the_same_distribution(name):
    circuit, _ = parse_qasm(PROGRAMS[name])
    back, fmt = parse_qasm(to_qasm3(circuit))
    assert fmt == "qasm3"
    assert reference.probabilities(back) == pytest.approx(reference.probabilities(circuit))
    # Conditions on the whole register or on one bit read back the same; the syndrome's
    # on 2 of 5 bits are spelled out bit by bit (equivalent, another hash).
    same = circuit_hash(back) == circuit_hash(circuit)
    assert same == (name != "syndrome")


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("value", [1, 2, 5])
def test_exported_conditions_on_a_bit_subset_are_equivalent(op, value):
    # Bits 3, 1, 4 of a 5-bit register: written out bit by bit, read back, then
    # evaluated on every register value against the original.
    cond = Condition(op=op, clbits=(3, 1, 4), value=value)
    circuit = Circuit(
        num_qubits=1,
        num_clbits=5,
        ops=(Op(name="if", qubits=(0,), condition=cond, body=(Op(name="x", qubits=(0,)),)),),
    )
    back, _ = parse_qasm(to_qasm3(circuit))
    read = back.ops[0].condition
    assert all(read.evaluate(bits) == cond.evaluate(bits) for bits in range(32))


def test_named_parameters_inside_blocks_are_checked_and_bound():
    circuit, _ = parse_qasm(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float theta;\nqubit[2] q;\nbit[2] c;\n'
        "h q[0];\nc[0] = measure q[0];\nif (c[0] == 1) { ry(theta) q[1]; }\n"
        "c[1] = measure q[1];\n"
    )
    check_parameters(circuit)
    bound = bind(circuit, {"theta": 1.2})
    assert bound.ops[2].body[0].params == (1.2,)
    p1 = math.sin(0.6) ** 2
    expected = {"00": 0.5, "01": 0.5 * (1 - p1), "11": 0.5 * p1}
    assert reference.probabilities(bound) == pytest.approx(expected, abs=1e-12)
    assert reference.probabilities(circuit, {"theta": 1.2}) == pytest.approx(expected, abs=1e-12)
    # theta is within bounds, 1e7 * theta is not: the nested op's angle is checked.
    scaled, _ = parse_qasm(to_qasm3(circuit).replace("ry(theta)", "ry(1e7 * theta)"))
    with pytest.raises(CircuitError, match=r"ops\[2\]\.body\[0\] \('ry'\) angle") as info:
        check_angles(scaled, {"theta": 1e6})
    assert info.value.where == "$.ops[2].body[0].params"


# -- Cirq: classically controlled operations --------------------------------------------

# OpenQASM 3 with an else branch and a compound condition on a 2-bit register.
COMPOUND = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
h q[0];
h q[1];
c[0] = measure q[0];
c[1] = measure q[1];
if (c < 2 && !(c == 0)) { x q[2]; } else if (c[1]) { h q[2]; } else { ry(0.4) q[2]; }
c[2] = measure q[2];
"""


@pytest.mark.parametrize("engine_name", ["cirq", "qsim"])
@pytest.mark.parametrize("name", [*sorted(PROGRAMS), "compound"])
def test_cirq_runs_if_programs_like_the_exact_reference(name, engine_name):
    # qsim runs them through cirq.defer_measurements (ancilla qubits, quantum controls).
    circuit, _ = parse_qasm(PROGRAMS.get(name, COMPOUND))
    engine = get_engine(engine_name)
    assert engine.capabilities.classical_control == ("if",)
    counts = engine.run(RunRequest(circuit=circuit, shots=SHOTS, seed=6)).counts
    assert sum(counts.values()) == SHOTS
    verdict = check_counts(counts, reference.probabilities(circuit), SHOTS)
    assert verdict.verdict == "pass", verdict.detail


# A block that measures and resets, and a later condition on the bit it measured.
MEASURING_BLOCK = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\nh q[0];\n'
    "c[0] = measure q[0];\nry(0.9) q[1];\n"
    "if (c[0] == 1) { h q[1]; c[1] = measure q[1]; reset q[1]; ry(0.5) q[1]; }\n"
    "else { x q[2]; }\nif (c[1] == 1) { x q[2]; }\nc[2] = measure q[2];\n"
)


@pytest.mark.parametrize("engine_name", ["cirq", "qsim"])
def test_cirq_runs_blocks_that_measure_and_reset(engine_name):
    # Cirq cannot condition a measurement or (deferred, on qsim) a reset: to_cirq
    # writes them on a scratch qubit (convert_cirq._controlled_measure).
    circuit, _ = parse_qasm(MEASURING_BLOCK)
    engine = get_engine(engine_name)
    counts = engine.run(RunRequest(circuit=circuit, shots=SHOTS, seed=8)).counts
    assert set(counts) <= {format(k, "03b") for k in range(8)}
    verdict = check_counts(counts, reference.probabilities(circuit), SHOTS)
    assert verdict.verdict == "pass", verdict.detail


@pytest.mark.parametrize("engine_name", ["cirq", "qsim"])
def test_cirq_refuses_what_it_cannot_write(engine_name):
    engine = get_engine(engine_name)
    loop = _looping(1)
    with pytest.raises(EngineError, match="'while'") as info:
        engine.validate(RunRequest(circuit=loop, shots=10))
    assert info.value.code == "classical_control_unsupported"
    # A block measuring into the bit its own condition reads: Cirq tests the condition
    # again at every operation, so the x after the measurement would see the new value.
    rewrites, _ = parse_qasm(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\n'
        "c[0] = measure q[0];\nif (c[0] == 1) { h q[0]; c[0] = measure q[0]; x q[1]; }\n"
        "c[1] = measure q[1];\n"
    )
    with pytest.raises(EngineError, match=r"\$\.ops\[2\]\.body\[1\].*enclosing 'if'") as info:
        engine.validate(RunRequest(circuit=rewrites, shots=10))
    assert info.value.code == "classical_control_unsupported"
    # Aer and the reference run it, and agree.
    counts = get_engine("qiskit-aer").run(RunRequest(circuit=rewrites, shots=SHOTS)).counts
    assert check_counts(counts, reference.probabilities(rewrites), SHOTS).verdict == "pass"


def test_a_loop_whose_body_cannot_change_its_condition_is_refused_before_running():
    spin = Op(
        name="while",
        qubits=(0,),
        condition=Condition(clbits=(0,), value=1),
        body=(Op(name="x", qubits=(0,)),),
    )
    circuit = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(Op(name="h", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,)), spin),
    )
    assert unbounded_loop(circuit) == "ops[2]"
    assert unbounded_loop(_looping(1)) is None
    for engine in (reference.ReferenceEngine(), get_engine("qiskit-aer")):
        with pytest.raises(EngineError, match=r"\$\.ops\[2\]") as info:
            engine.validate(RunRequest(circuit=circuit, shots=10))
        assert info.value.code == "unbounded_loop"


async def test_the_ai_rewrite_skips_dynamic_circuits_without_asking_a_model():
    circuit, _ = parse_qasm(TELEPORT)
    # No model server at this address: a skip must not even try to reach it.
    rewriter = AiRewriter(AiConfig(host="http://127.0.0.1:9", timeout=1, max_retries=0))
    proposed, report = await rewriter.rewrite(circuit)
    assert proposed is None
    assert report.verdict == "skipped"
    assert "classical control" in report.warning
