"""The quest engine (QuEST through qoqo-quest): what the conformance suite does not cover.

Gate-by-gate agreement with the reference is in tests/test_conformance.py, which iterates
every registered engine; tests/test_engines_bus.py runs every engine through the bus, and
the last test here does the same for quest alone.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines import reference
from qbus.engines.base import RunRequest
from qbus.engines.registry import available_engines, get_engine
from qbus.errors import EngineError
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.events import JobCompleted
from qbus.schemas.ir import Circuit, Op
from qbus.verifier.statistics import check_counts
from tests.jobs import QASM3_GHZ, job, run_jobs


@pytest.fixture(scope="module")
def quest():
    return get_engine("quest")


def test_quest_is_registered_with_its_versions(quest):
    assert "quest" in available_engines()
    assert quest.name == "quest"
    assert "+qoqo" in quest.version
    assert {"sample", "statevector"} <= set(quest.capabilities.methods)


@pytest.mark.parametrize("gate", ["ccx", "cswap"])
def test_three_qubit_gates_on_every_basis_state_and_qubit_order(quest, gate: str):
    # qoqo-quest applies its own Toffoli/ControlledSWAP with the qubits reversed; the
    # engine expands them instead. Every placement of the three qubits on four wires,
    # from every basis state, must give the reference's state.
    for qubits in itertools.permutations(range(4), 3):
        for basis in range(16):
            prep = tuple(Op(name="x", qubits=(q,)) for q in range(4) if basis >> q & 1)
            c = Circuit(num_qubits=4, ops=(*prep, Op(name=gate, qubits=qubits)))
            got = quest.run(RunRequest(circuit=c, method="statevector")).statevector
            assert np.allclose(got, reference.statevector(c), atol=1e-12), (qubits, basis)


def _measured_circuit() -> Circuit:
    # Unequal probabilities, and a clbit (2) that nothing writes.
    ops = (
        Op(name="ry", qubits=(0,), params=(1.1,)),
        Op(name="cx", qubits=(0, 1)),
        Op(name="rx", qubits=(2,), params=(0.6,)),
        Op(name="measure", qubits=(0, 1, 2), clbits=(0, 1, 3)),
    )
    return Circuit(num_qubits=3, num_clbits=4, ops=ops)


def test_quest_draws_seeded_samples_from_the_right_distribution(quest):
    circuit = _measured_circuit()
    first = quest.run(RunRequest(circuit=circuit, shots=4000, seed=11)).counts
    again = quest.run(RunRequest(circuit=circuit, shots=4000, seed=11)).counts
    other = quest.run(RunRequest(circuit=circuit, shots=4000, seed=12)).counts
    assert first == again  # one seed, one set of counts
    assert first != other
    assert sum(first.values()) == 4000
    assert all(key[1] == "0" for key in first)  # clbit 2 is never written
    verdict = check_counts(first, reference.probabilities(circuit), 4000)
    assert verdict.verdict == "pass", verdict


UNMEASURED = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'


@pytest.mark.parametrize(
    "program",
    [
        # An unmeasured qubit a gate touched overwrote clbit 1 (counts '10', not '00').
        "qreg q[2];\ncreg c[2];\nx q[1];\nmeasure q[0] -> c[1];\n",
        # An unmeasured qubit past the classical register: a Rust panic in QuEST.
        "qreg q[3];\ncreg c[1];\nx q[2];\nmeasure q[0] -> c[0];\n",
        # Measured out of order, one qubit twice, one clbit never written.
        "qreg q[3];\ncreg c[4];\nx q[0];\nh q[2];\nmeasure q[0] -> c[2];\n"
        "measure q[2] -> c[0];\nmeasure q[2] -> c[3];\n",
    ],
)
def test_quest_reads_only_measured_qubits_into_their_clbits(quest, program: str):
    circuit, _ = parse_qasm(UNMEASURED + program)
    counts = quest.run(RunRequest(circuit=circuit, shots=2000, seed=3)).counts
    verdict = check_counts(counts, reference.probabilities(circuit), 2000)
    assert verdict.verdict == "pass", (counts, verdict)


def _bernstein_vazirani(secret: str) -> str:
    # n data qubits and an ancilla that is never measured (the kind that panicked QuEST).
    n = len(secret)
    lines = [f"qreg q[{n + 1}];", f"creg c[{n}];", f"x q[{n}];", f"h q[{n}];"]
    lines += [f"h q[{i}];" for i in range(n)]
    lines += [f"cx q[{i}], q[{n}];" for i, bit in enumerate(reversed(secret)) if bit == "1"]
    lines += [f"h q[{i}];" for i in range(n)]
    lines += [f"measure q[{i}] -> c[{i}];" for i in range(n)]
    return UNMEASURED + "\n".join(lines) + "\n"


def _phase_estimation(counting: int, numerator: int) -> str:
    # Estimates the phase 2*pi*numerator/2**counting of p() on |1>: exact in ``counting``
    # bits; the eigenstate qubit is never measured.
    t = counting
    phase = 2 * np.pi * numerator / 2**t
    lines = [f"qreg q[{t + 1}];", f"creg c[{t}];", f"x q[{t}];"]
    lines += [f"h q[{j}];" for j in range(t)]
    lines += [f"cp({phase * 2**j!r}) q[{j}], q[{t}];" for j in range(t)]
    for j in range(t // 2):  # inverse QFT on the counting register
        lines.append(f"swap q[{j}], q[{t - 1 - j}];")
    for j in range(t):
        for k in range(j):
            lines.append(f"cp({-np.pi / 2 ** (j - k)!r}) q[{k}], q[{j}];")
        lines.append(f"h q[{j}];")
    lines += [f"measure q[{j}] -> c[{j}];" for j in range(t)]
    return UNMEASURED + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("program", "answer"),
    [
        (_bernstein_vazirani("1011001110101"), "1011001110101"),  # 14 qubits
        (_phase_estimation(4, 5), "0101"),  # 5 qubits
        (_phase_estimation(7, 77), format(77, "07b")),  # 8 qubits
    ],
    ids=["bernstein-vazirani-14q", "phase-estimation-5q", "phase-estimation-8q"],
)
def test_quest_samples_the_published_kinds_that_hung_it(quest, program: str, answer: str):
    # Issue 20: six held-out programs of these kinds hung quest in sample mode (a Rust
    # panic in QuEST for an unmeasured qubit past the classical register). Each has one
    # certain outcome, so the counts must be exactly it, and agree with the reference.
    circuit, _ = parse_qasm(program)
    counts = quest.run(RunRequest(circuit=circuit, shots=500, seed=5)).counts
    assert counts == {answer: 500}
    assert reference.probabilities(circuit)[answer] == pytest.approx(1.0)


def test_quest_refuses_mid_circuit_measurements_before_running(quest):
    ops = (
        Op(name="h", qubits=(0,)),
        Op(name="measure", qubits=(0,), clbits=(0,)),
        Op(name="x", qubits=(0,)),
    )
    request = RunRequest(circuit=Circuit(num_qubits=1, num_clbits=1, ops=ops), shots=10)
    with pytest.raises(EngineError) as info:
        quest.validate(request)
    assert info.value.code == "mid_circuit_measurement"


@pytest.mark.timeout(180)
async def test_quest_jobs_complete_through_the_bus(config: Config, bus: Bus):
    statevector_src = QASM3_GHZ.replace("c = measure q;\n", "")
    async with Pipeline(config, engines=("quest",)) as pipeline:
        jobs = [
            job(QASM3_GHZ, engine="quest", shots=2000, seed=5, job_id="quest-sample"),
            job(statevector_src, engine="quest", method="statevector", job_id="quest-sv"),
        ]
        sample, sv = await run_jobs(bus, jobs, timeout=150)
        pipeline.check()
    for final in (sample, sv):
        assert isinstance(final, JobCompleted), final
        assert final.engine == "quest" and final.verification.verdict == "pass"
    assert set(sample.counts) == {"000", "111"} and sum(sample.counts.values()) == 2000
    assert sv.verification.test == "fidelity"
