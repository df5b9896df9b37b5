"""The cirq and qsim engines against the reference simulator."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

pytest.importorskip("cirq")
pytest.importorskip("qsimcirq")

import qsimcirq

from qbus.engines import reference
from qbus.engines.base import Engine, RunRequest
from qbus.engines.cirq_engine import CirqEngine, QsimEngine, qsim_fuse_size
from qbus.engines.convert_cirq import line_qubits, to_cirq
from qbus.errors import EngineError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op
from qbus.verifier.statistics import check_counts, check_statevector
from tests.circuits import random_circuit

ENGINES = {"cirq": CirqEngine, "qsim": QsimEngine}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return ENGINES[request.param]()


def ghz(n: int) -> Circuit:
    ops = [Op(name="h", qubits=(0,))]
    ops += [Op(name="cx", qubits=(i, i + 1)) for i in range(n - 1)]
    ops.append(Op(name="measure", qubits=tuple(range(n)), clbits=tuple(range(n))))
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


def _assert_state(engine: Engine, circuit: Circuit, values: dict[str, float] | None = None) -> None:
    request = RunRequest(circuit=circuit, method="statevector", parameters=values or {})
    sv = engine.run(request).statevector
    assert sv is not None
    assert sv.dtype == np.complex128 and sv.shape == (2**circuit.num_qubits,)
    exact = reference.statevector(circuit, values)
    verdict = check_statevector(sv, exact)
    assert verdict.verdict == "pass", (circuit, verdict)
    # Global phase is exact too (the converters keep every gate's phase); qsim is
    # single precision.
    assert np.max(np.abs(sv - exact)) < 1e-5


@pytest.mark.parametrize("name", sorted(GATES))
def test_every_gate_alone_matches_the_reference(engine: Engine, name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    spec = GATES[name]
    # A non-trivial input state, so every matrix column matters.
    prep = [Op(name="u", qubits=(q,), params=tuple(rng.uniform(-3, 3, 3))) for q in range(3)]
    for _ in range(3):
        qubits = tuple(int(q) for q in rng.permutation(3)[: spec.num_qubits])
        params = tuple(float(a) for a in rng.uniform(-2 * math.pi, 2 * math.pi, spec.num_params))
        circuit = Circuit(num_qubits=3, ops=(*prep, Op(name=name, qubits=qubits, params=params)))
        _assert_state(engine, circuit)


def test_random_circuits_match_the_reference(engine: Engine) -> None:
    rng = np.random.default_rng(2024)
    for i in range(32):
        n = 1 + i % 8
        circuit = random_circuit(rng, n, depth=6 * n + 4, measure=bool(rng.integers(2)))
        _assert_state(engine, circuit)


def test_wide_circuit_matches_the_reference(engine: Engine) -> None:
    # 16 qubits: qsim runs multi-threaded from 14.
    circuit = random_circuit(np.random.default_rng(16), 16, depth=120)
    _assert_state(engine, circuit)


def test_idle_qubits_and_parameters(engine: Engine) -> None:
    circuit = Circuit(
        num_qubits=4,
        parameters=("theta",),
        ops=(Op(name="rx", qubits=(2,), params=("2*theta",)), Op(name="cx", qubits=(2, 3))),
    )
    _assert_state(engine, circuit, {"theta": 0.4})
    _assert_state(engine, Circuit(num_qubits=3))


def _sample(engine: Engine, circuit: Circuit, shots: int, seed: int) -> dict[str, int]:
    counts = engine.run(RunRequest(circuit=circuit, shots=shots, seed=seed)).counts
    assert counts is not None
    return counts


def test_ghz_counts_pass_the_chi_square_test(engine: Engine) -> None:
    circuit = ghz(5)
    counts = _sample(engine, circuit, 4000, 11)
    assert set(counts) == {"00000", "11111"}
    verdict = check_counts(counts, reference.probabilities(circuit), 4000)
    assert verdict.verdict == "pass", verdict


def test_random_circuit_counts_pass_the_chi_square_test(engine: Engine) -> None:
    rng = np.random.default_rng(5)
    circuit = random_circuit(rng, 5, depth=40, measure=True)
    counts = _sample(engine, circuit, 8000, 3)
    verdict = check_counts(counts, reference.probabilities(circuit), 8000)
    assert verdict.verdict == "pass", verdict


def test_counts_keep_clbit_order_and_unmeasured_clbits(engine: Engine) -> None:
    # q0 -> c2, q1 (always 1) -> c0; c1 is never written and reads 0.
    circuit = Circuit(
        num_qubits=2,
        num_clbits=3,
        ops=(
            Op(name="h", qubits=(0,)),
            Op(name="x", qubits=(1,)),
            Op(name="measure", qubits=(0, 1), clbits=(2, 0)),
        ),
    )
    counts = _sample(engine, circuit, 2000, 1)
    assert set(counts) == {"001", "101"}
    verdict = check_counts(counts, reference.probabilities(circuit), 2000)
    assert verdict.verdict == "pass", verdict


def test_same_seed_same_counts(engine: Engine) -> None:
    circuit = random_circuit(np.random.default_rng(8), 4, depth=20, measure=True)
    for seed in (0, 12345, 2**63 - 1):
        first = _sample(engine, circuit, 500, seed)
        assert _sample(engine, circuit, 500, seed) == first
    assert _sample(engine, circuit, 500, 1) != _sample(engine, circuit, 500, 2)
    # Shot-by-shot runs (a mid-circuit measurement) are seeded too.
    mid = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(
            Op(name="h", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="h", qubits=(0,)),
            Op(name="cx", qubits=(0, 1)),
            Op(name="measure", qubits=(1,), clbits=(1,)),
        ),
    )
    assert _sample(engine, mid, 200, 9) == _sample(engine, mid, 200, 9)
    assert _sample(engine, mid, 200, 2**63 - 1) == _sample(engine, mid, 200, 2**63 - 1)


def test_mid_circuit_measurement_and_reset_in_sample(engine: Engine) -> None:
    # c0 = a fair coin; then q0 is reset and flipped, so c1 = 1; clbit 2 is written
    # twice (1, then 0 after a reset): the last write wins.
    circuit = Circuit(
        num_qubits=2,
        num_clbits=3,
        ops=(
            Op(name="h", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="reset", qubits=(0,)),
            Op(name="x", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(1,)),
            Op(name="x", qubits=(1,)),
            Op(name="measure", qubits=(1,), clbits=(2,)),
            Op(name="reset", qubits=(1,)),
            Op(name="measure", qubits=(1,), clbits=(2,)),
        ),
    )
    counts = _sample(engine, circuit, 400, 4)
    assert set(counts) == {"010", "011"}
    verdict = check_counts(counts, {"010": 0.5, "011": 0.5}, 400)
    assert verdict.verdict == "pass", verdict


def test_validate_rejects_before_compute(engine: Engine) -> None:
    with pytest.raises(EngineError) as info:
        engine.validate(RunRequest(circuit=ghz(3), method="density_matrix"))
    assert info.value.code == "unsupported_method"
    wide = engine.capabilities.max_qubits["statevector"] + 1
    with pytest.raises(EngineError) as info:
        engine.run(RunRequest(circuit=Circuit(num_qubits=wide), method="statevector"))
    assert info.value.code == "too_many_qubits"
    mid = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(Op(name="measure", qubits=(0,), clbits=(0,)), Op(name="x", qubits=(0,))),
    )
    with pytest.raises(EngineError) as cinfo:
        engine.run(RunRequest(circuit=mid, method="statevector"))
    assert cinfo.value.code == "mid_circuit_measurement"


def test_capabilities(engine: Engine) -> None:
    caps = engine.capabilities
    assert caps.methods[:2] == ("sample", "statevector")
    assert set(caps.gates) == set(GATES)
    assert caps.max_qubits["sample"] >= 20
    assert engine.version


def test_every_ir_gate_has_exactly_one_cirq_mapping() -> None:
    from qbus.engines.convert_cirq import FIXED_GATES, PARAM_GATES

    assert set(FIXED_GATES) | set(PARAM_GATES) == set(GATES)
    assert not set(FIXED_GATES) & set(PARAM_GATES)


def test_qsim_state_is_its_own_complex64_state_widened_and_renormalised() -> None:
    # The engine takes qsim's raw complex64 array (not Cirq's result, which renormalises
    # it in complex64 first), widens it and renormalises in float64; the result must be
    # what widening, then dividing by the norm, gives.
    circuit = random_circuit(np.random.default_rng(17), 16, depth=200)
    state = QsimEngine().run(RunRequest(circuit=circuit, method="statevector")).statevector
    assert state is not None and state.dtype == np.complex128
    sim = qsimcirq.QSimSimulator(qsim_options={"t": os.cpu_count() or 1, "f": qsim_fuse_size(16)})
    program = to_cirq(circuit, measurements=False)
    order = list(reversed(line_qubits(16)))
    _, raw, _ = sim.simulate_into_1d_array(program, qubit_order=order)
    assert raw.dtype == np.complex64
    before = np.asarray(raw, dtype=np.complex128)
    before /= np.linalg.norm(before)
    assert np.max(np.abs(state - before)) < 1e-15
    # Cirq's own result differs only by its complex64 renormalisation.
    cirq_state = sim.simulate(program, qubit_order=order).final_state_vector
    assert np.max(np.abs(state - cirq_state)) < 1e-6
    assert abs(np.vdot(state, state).real - 1) < 1e-14
