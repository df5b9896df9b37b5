"""The braket, pennylane and qutip engines against the exact reference simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qbus.engines import reference
from qbus.engines.base import Engine, RunRequest
from qbus.errors import EngineError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op
from qbus.verifier.statistics import check_counts
from tests.circuits import random_circuit

ENGINES = {
    "braket": ("qbus.engines.braket_engine", "BraketEngine"),
    "pennylane": ("qbus.engines.pennylane_engine", "PennylaneEngine"),
    "qutip": ("qbus.engines.qutip_engine", "QutipEngine"),
}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    module, cls = ENGINES[request.param]
    mod = pytest.importorskip(module)
    return getattr(mod, cls)()


def fidelity(engine: Engine, circuit: Circuit, values: dict[str, float] | None = None) -> float:
    result = engine.run(RunRequest(circuit=circuit, method="statevector", parameters=values or {}))
    state = result.statevector
    n = circuit.num_qubits
    assert state is not None and state.dtype == np.complex128 and state.shape == (2**n,)
    exact = reference.statevector(circuit, values)
    return float(abs(np.vdot(exact, state)) ** 2)


def ghz(n: int) -> Circuit:
    ops = [Op(name="h", qubits=(0,))]
    ops += [Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1)]
    ops += [Op(name="measure", qubits=(q,), clbits=(q,)) for q in range(n)]
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


@pytest.mark.parametrize("gate", sorted(GATES))
def test_each_gate_alone_matches_reference(engine: Engine, gate: str) -> None:
    rng = np.random.default_rng(sorted(GATES).index(gate))
    spec = GATES[gate]
    for _ in range(3):
        wires = tuple(int(q) for q in rng.permutation(3)[: spec.num_qubits])
        params = tuple(float(a) for a in rng.uniform(-2 * math.pi, 2 * math.pi, spec.num_params))
        # A layer of random rotations first, so the gate acts on a generic state and a
        # wrong qubit order or relative phase shows.
        prep = [Op(name="u", qubits=(q,), params=tuple(rng.uniform(0, 6, 3))) for q in range(3)]
        circuit = Circuit(num_qubits=3, ops=(*prep, Op(name=gate, qubits=wires, params=params)))
        assert fidelity(engine, circuit) >= 1 - 1e-6, (gate, wires, params)


def test_random_circuits_match_reference(engine: Engine) -> None:
    rng = np.random.default_rng(7)
    for i in range(20):
        n = 1 + i % 6
        circuit = random_circuit(rng, n, depth=6 * n + 4, measure=bool(i % 2))
        assert fidelity(engine, circuit) >= 1 - 1e-6, circuit


def test_idle_qubits_keep_their_place(engine: Engine) -> None:
    # Qubits 1 and 3 are never touched: engines that size a circuit by its used qubits
    # (Braket) must still return the full register.
    circuit = Circuit(num_qubits=4, ops=(Op(name="x", qubits=(2,)), Op(name="h", qubits=(0,))))
    assert fidelity(engine, circuit) >= 1 - 1e-9


def test_named_parameters_are_bound(engine: Engine) -> None:
    circuit = Circuit(
        num_qubits=2,
        ops=(
            Op(name="rx", qubits=(0,), params=("2*theta",)),
            Op(name="crz", qubits=(0, 1), params=("theta",)),
        ),
        parameters=("theta",),
    )
    assert fidelity(engine, circuit, {"theta": 0.7}) >= 1 - 1e-6


@pytest.mark.parametrize("which", ["ghz4", "random"])
def test_sample_counts_pass_chi_square(engine: Engine, which: str) -> None:
    if which == "ghz4":
        circuit = ghz(4)
    else:
        base = random_circuit(np.random.default_rng(3), 4, depth=20)
        # Measure a subset, into clbits in a scrambled order, with one clbit unwritten.
        measures = (
            Op(name="measure", qubits=(2,), clbits=(0,)),
            Op(name="measure", qubits=(0, 3), clbits=(3, 1)),
        )
        circuit = Circuit(num_qubits=4, num_clbits=5, ops=(*base.ops, *measures))
    shots = 4000
    result = engine.run(RunRequest(circuit=circuit, shots=shots, seed=11))
    assert result.counts is not None
    assert all(len(k) == circuit.num_clbits for k in result.counts)
    verdict = check_counts(result.counts, reference.probabilities(circuit), shots)
    assert verdict.verdict == "pass", verdict


def test_same_seed_gives_same_counts_where_seedable(engine: Engine) -> None:
    circuit = ghz(3)
    a = engine.run(RunRequest(circuit=circuit, shots=500, seed=5)).counts
    b = engine.run(RunRequest(circuit=circuit, shots=500, seed=5)).counts
    assert a is not None and b is not None
    if engine.name == "braket":
        # Braket's local simulator takes no seed: only the distribution is promised.
        assert set(a) | set(b) <= {"000", "111"} and sum(a.values()) == 500
    else:
        assert a == b


def test_validate_rejects_before_compute(engine: Engine) -> None:
    mid = Circuit(
        num_qubits=2,
        num_clbits=1,
        ops=(
            Op(name="h", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="cx", qubits=(0, 1)),
        ),
    )
    reset_after_gate = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(
            Op(name="x", qubits=(0,)),
            Op(name="reset", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
        ),
    )
    for circuit in (mid, reset_after_gate):
        for method in ("sample", "statevector"):
            with pytest.raises(EngineError) as err:
                engine.run(RunRequest(circuit=circuit, method=method))
            assert err.value.code == "mid_circuit_measurement"
    too_wide = Circuit(num_qubits=engine.capabilities.max_qubits["statevector"] + 1)
    with pytest.raises(EngineError) as err:
        engine.run(RunRequest(circuit=too_wide, method="statevector"))
    assert err.value.code == "too_many_qubits"
    with pytest.raises(EngineError) as err:
        engine.run(RunRequest(circuit=Circuit(num_qubits=1, ops=(Op(name="h", qubits=(0,)),))))
    assert err.value.code == "no_measurements"


def test_capabilities(engine: Engine) -> None:
    caps = engine.capabilities
    # Every engine samples and returns states; some add sweep, noisy expectation, dynamics.
    assert caps.methods[:2] == ("sample", "statevector")
    assert set(caps.max_qubits) == set(caps.methods)
    assert caps.gates == tuple(GATES)
    assert engine.version
