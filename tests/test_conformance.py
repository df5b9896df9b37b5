"""One conformance suite, run against every installed engine (style: PennyLane's device tests).

Each engine must agree with the exact reference simulator: state fidelity >= 1 - 1e-6 for
state vectors, a chi-square test for counts. Cases an engine's capabilities exclude (a
width above its limit, a method it lacks) are not generated for it, so nothing is skipped.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from qbus.engines import reference
from qbus.engines.base import RunRequest
from qbus.engines.registry import BUILTIN_ENGINES, get_engine
from qbus.frontends.parameters import bind
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op
from qbus.verifier.statistics import check_counts
from tests.jobs import engines_under_test

FIDELITY = 1 - 1e-6


def _engines() -> list[str]:
    return engines_under_test()


def test_every_builtin_engine_loads_in_the_test_environment():
    # CI installs qbus[all]: an engine that fails to load here is a broken install.
    for name in BUILTIN_ENGINES:
        engine = get_engine(name)
        assert engine.name == name and engine.version


# -- circuits -----------------------------------------------------------------------------


def measured(c: Circuit) -> Circuit:
    ops = (
        *c.ops,
        Op(name="measure", qubits=tuple(range(c.num_qubits)), clbits=tuple(range(c.num_qubits))),
    )
    return Circuit(
        num_qubits=c.num_qubits, num_clbits=c.num_qubits, ops=ops, parameters=c.parameters
    )


def ghz(n: int) -> Circuit:
    ops = [Op(name="h", qubits=(0,))]
    ops += [Op(name="cx", qubits=(i, i + 1)) for i in range(n - 1)]
    return Circuit(num_qubits=n, ops=tuple(ops))


def qft(n: int) -> Circuit:
    ops = [Op(name="x", qubits=(0,)), Op(name="ry", qubits=(n - 1,), params=(0.7,))]
    for j in range(n):
        ops.append(Op(name="h", qubits=(j,)))
        for k in range(j + 1, n):
            ops.append(Op(name="cp", qubits=(k, j), params=(math.pi / 2 ** (k - j),)))
    for j in range(n // 2):
        ops.append(Op(name="swap", qubits=(j, n - 1 - j)))
    return Circuit(num_qubits=n, ops=tuple(ops))


def grover3(marked: int = 5) -> Circuit:
    """Two Grover iterations on 3 qubits marking ``marked``."""
    n, ops = 3, [Op(name="h", qubits=(q,)) for q in range(3)]

    def flip_zeros(value: int) -> list[Op]:
        return [Op(name="x", qubits=(q,)) for q in range(n) if not value >> q & 1]

    def ccz() -> list[Op]:
        return [
            Op(name="h", qubits=(2,)),
            Op(name="ccx", qubits=(0, 1, 2)),
            Op(name="h", qubits=(2,)),
        ]

    for _ in range(2):
        ops += flip_zeros(marked) + ccz() + flip_zeros(marked)
        ops += [Op(name="h", qubits=(q,)) for q in range(n)]
        ops += flip_zeros(0) + ccz() + flip_zeros(0)
        ops += [Op(name="h", qubits=(q,)) for q in range(n)]
    return Circuit(num_qubits=n, ops=tuple(ops))


def parametrised(n: int) -> Circuit:
    ops = []
    for q in range(n):
        ops.append(Op(name="ry", qubits=(q,), params=("theta",)))
        ops.append(Op(name="rz", qubits=(q,), params=(f"{q + 1}*phi + 0.1",)))
    ops += [Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1)]
    ops.append(Op(name="crx", qubits=(n - 1, 0), params=("theta - phi",)))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=("phi", "theta"))


def random_circuit(n: int, depth: int, rng: random.Random) -> Circuit:
    names = [g for g, spec in GATES.items() if spec.num_qubits <= n]
    ops = []
    for _ in range(depth):
        name = rng.choice(names)
        spec = GATES[name]
        ops.append(
            Op(
                name=name,
                qubits=tuple(rng.sample(range(n), spec.num_qubits)),
                params=tuple(rng.uniform(-math.pi, math.pi) for _ in range(spec.num_params)),
            )
        )
    return Circuit(num_qubits=n, ops=tuple(ops))


def single_gate(name: str, rng: random.Random) -> Circuit:
    spec = GATES[name]
    n = 3
    prep = [Op(name="ry", qubits=(q,), params=(rng.uniform(0.2, 2.9),)) for q in range(n)]
    prep += [Op(name="rz", qubits=(q,), params=(rng.uniform(0.2, 2.9),)) for q in range(n)]
    gate = Op(
        name=name,
        qubits=tuple(rng.sample(range(n), spec.num_qubits)),
        params=tuple(rng.uniform(-math.pi, math.pi) for _ in range(spec.num_params)),
    )
    return Circuit(num_qubits=n, ops=(*prep, gate))


PARAMS = {"theta": 0.83, "phi": -0.41}
_rng = random.Random(20261125)
CASES: list[tuple[str, Circuit]] = [(f"gate-{g}", single_gate(g, _rng)) for g in GATES]
CASES += [
    (f"random-{n}q-{i}", random_circuit(n, 6 * n, _rng)) for n in range(1, 11) for i in range(2)
]
CASES += [
    ("ghz-6", ghz(6)),
    ("qft-5", qft(5)),
    ("grover-3", grover3()),
    ("parametrised-4", parametrised(4)),
]


def _applicable(method: str) -> list[tuple[str, str, Circuit]]:
    out = []
    for engine in _engines():
        caps = get_engine(engine).capabilities
        if method not in caps.methods:
            continue
        for case, circuit in CASES:
            if circuit.num_qubits <= caps.max_qubits.get(method, 0) and all(
                op.name in caps.gates for op in circuit.ops
            ):
                out.append((engine, case, circuit))
    return out


@pytest.mark.parametrize(
    ("engine", "case", "circuit"),
    _applicable("statevector"),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_statevector_matches_reference(engine: str, case: str, circuit: Circuit):
    result = get_engine(engine).run(
        RunRequest(circuit=circuit, method="statevector", parameters=PARAMS)
    )
    exact = reference.statevector(bind(circuit, PARAMS) if circuit.parameters else circuit)
    state = np.asarray(result.statevector)
    assert state.shape == exact.shape
    fidelity = abs(np.vdot(exact, state)) ** 2
    assert fidelity >= FIDELITY, f"{engine} {case}: fidelity {fidelity}"


SAMPLE_CASES = {"ghz-6", "qft-5", "grover-3", "parametrised-4", "random-5q-0", "random-8q-1"}


@pytest.mark.parametrize(
    ("engine", "case", "circuit"),
    [(e, c, measured(circ)) for e, c, circ in _applicable("sample") if c in SAMPLE_CASES],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_counts_pass_the_statistical_test(engine: str, case: str, circuit: Circuit):
    shots = 4000
    result = get_engine(engine).run(
        RunRequest(circuit=circuit, method="sample", shots=shots, seed=11, parameters=PARAMS)
    )
    assert sum(result.counts.values()) == shots
    assert all(len(key) == circuit.num_clbits for key in result.counts)
    exact = reference.probabilities(bind(circuit, PARAMS) if circuit.parameters else circuit)
    verdict = check_counts(result.counts, exact, shots)
    assert verdict.verdict == "pass", f"{engine} {case}: {verdict.detail}"
