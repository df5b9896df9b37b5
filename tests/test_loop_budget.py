"""The run-time loop budget (issue 21): every engine that runs ``while`` stops a loop
after ``MAX_LOOP_ITERATIONS`` iterations per entry with ``loop_budget_exceeded``.

The counting program runs its loop a known number of times: a 10-qubit register
counts up by one per iteration (classically controlled X gates on the measured bits,
so the state stays a basis state and the exact reference follows one branch) until it
reads ``stop``. ``stop = MAX_LOOP_ITERATIONS`` ends exactly on the budget and must run;
one more must fail, on the reference and on Aer alike.
"""

from __future__ import annotations

import pytest

from qbus.engines import reference
from qbus.engines.aer import AerEngine
from qbus.engines.base import RunRequest
from qbus.engines.branching import MAX_LOOP_ITERATIONS
from qbus.errors import CircuitError
from qbus.frontends.qasm import parse_qasm
from qbus.verifier.statistics import check_counts

H3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
BITS = 10


def counting(stop: int) -> str:
    """``while (c != stop) { c += 1 }``, the increment done on qubits and read back."""
    flips = []
    for k in reversed(range(BITS)):
        lower = " && ".join(f"c[{j}]" for j in range(k))
        flips.append(f"if ({lower}) {{ x q[{k}]; }}" if lower else f"x q[{k}];")
    body = " ".join(flips)
    declare = f"qubit[{BITS}] q;\nbit[{BITS}] c;\n"
    return H3 + declare + f"while (c != {stop}) {{ {body} c = measure q; }}\n"


@pytest.fixture(scope="module")
def aer() -> AerEngine:
    return AerEngine()


@pytest.mark.parametrize("engine", ["reference", "qiskit-aer"])
def test_a_loop_that_ends_on_its_last_allowed_iteration_runs(aer, engine):
    circuit, _ = parse_qasm(counting(MAX_LOOP_ITERATIONS))
    runner = aer if engine == "qiskit-aer" else reference.ReferenceEngine()
    counts = runner.run(RunRequest(circuit=circuit, shots=20, seed=1)).counts
    assert counts == {format(MAX_LOOP_ITERATIONS, f"0{BITS}b"): 20}


@pytest.mark.parametrize("engine", ["reference", "qiskit-aer"])
def test_one_iteration_more_ends_with_the_loop_budget_code(aer, engine):
    circuit, _ = parse_qasm(counting(MAX_LOOP_ITERATIONS + 1))
    runner = aer if engine == "qiskit-aer" else reference.ReferenceEngine()
    with pytest.raises(CircuitError, match=f"after {MAX_LOOP_ITERATIONS} iterations") as info:
        runner.run(RunRequest(circuit=circuit, shots=20, seed=1))
    assert info.value.code == "loop_budget_exceeded"
    assert info.value.where == "$.ops[0]"


def test_aer_names_the_nested_loop_that_ran_away_and_how_many_shots_hit_it(aer):
    # The outer loop ends after one iteration; the inner one never changes c[1].
    circuit, _ = parse_qasm(
        H3 + "qubit[2] q;\nbit[2] c;\nx q[0];\nc[0] = measure q[0];\n"
        "while (c[0]) { x q[0]; c[0] = measure q[0]; h q[1]; c[1] = measure q[1];\n"
        "  while (c[1]) { x q[1]; x q[1]; c[1] = measure q[1]; } }\n"
    )
    with pytest.raises(CircuitError) as info:
        aer.run(RunRequest(circuit=circuit, shots=400, seed=2))
    assert info.value.code == "loop_budget_exceeded"
    assert info.value.where == "$.ops[2].body[4]"
    # About half the shots measure c[1] = 1 and spin; the message counts them.
    hit = int(str(info.value).split("(in ")[1].split(" of")[0])
    assert 150 < hit < 250


def test_bounded_loops_on_aer_keep_the_exact_distribution(aer):
    # Repeat-until-success loops, nested, with a gate Aer transpiles ('ch'): the budget's
    # extra clbits must not show in the counts or change them.
    circuit, _ = parse_qasm(
        H3 + "qubit[3] q;\nbit[3] c;\nh q[0];\nc[0] = measure q[0];\n"
        "while (c[0]) { x q[1]; c[1] = measure q[1];\n"
        "  while (c[1] == 1) { ch q[1], q[2]; x q[1]; c[1] = measure q[1]; }\n"
        "  h q[0]; c[0] = measure q[0]; }\nc[2] = measure q[2];\n"
    )
    shots = 4000
    counts = aer.run(RunRequest(circuit=circuit, shots=shots, seed=3)).counts
    assert set(counts) <= {"000", "001", "010", "011", "100", "101", "110", "111"}
    assert sum(counts.values()) == shots
    verdict = check_counts(counts, reference.probabilities(circuit), shots)
    assert verdict.verdict == "pass", verdict.detail
