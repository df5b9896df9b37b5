"""The numpy reference simulator against Qiskit: gate matrices, states, distributions."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from qiskit.quantum_info import Operator, Statevector

from qbus.engines.convert_qiskit import to_qiskit
from qbus.engines.reference import gate_matrix, probabilities, statevector
from qbus.errors import CircuitError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op
from tests.circuits import random_circuit
from tests.qiskit_gates import QISKIT_GATES


def test_every_gate_has_a_qiskit_reference() -> None:
    assert set(QISKIT_GATES) == set(GATES)


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_matrix_equals_qiskit_operator(name: str) -> None:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for _ in range(5):
        params = rng.uniform(-3 * math.pi, 3 * math.pi, GATES[name].num_params)
        ours = gate_matrix(name, tuple(params))
        theirs = Operator(QISKIT_GATES[name](*params)).data
        assert ours.dtype == np.complex128
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_parameterless_matrices_are_cached_and_read_only() -> None:
    m = gate_matrix("h")
    assert gate_matrix("h") is m
    with pytest.raises(ValueError):
        m[0, 0] = 0


def test_gate_matrix_rejects_unknown_gate_and_wrong_arity() -> None:
    with pytest.raises(CircuitError) as err:
        gate_matrix("foo")
    assert err.value.code == "unknown_gate"
    with pytest.raises(CircuitError):
        gate_matrix("rx", ())


@pytest.mark.parametrize("n", range(1, 9))
def test_statevector_equals_qiskit_on_random_circuits(n: int) -> None:
    rng = np.random.default_rng(1000 + n)
    for _ in range(8):
        circuit = random_circuit(rng, n, depth=6 * n + 4, barrier_rate=0)
        ours = statevector(circuit)
        theirs = Statevector(to_qiskit(circuit)).data
        np.testing.assert_allclose(ours, theirs, atol=1e-10)


def test_qubit_zero_is_the_least_significant_bit() -> None:
    c = Circuit(num_qubits=3, ops=(Op(name="x", qubits=(0,)),))
    assert np.argmax(np.abs(statevector(c))) == 1
    c = Circuit(num_qubits=3, ops=(Op(name="x", qubits=(2,)),))
    assert np.argmax(np.abs(statevector(c))) == 4


def _measured(circuit: Circuit, num_clbits: int, pairs: list[tuple[int, int]]) -> Circuit:
    ops = circuit.ops + tuple(Op(name="measure", qubits=(q,), clbits=(c,)) for q, c in pairs)
    return Circuit(num_qubits=circuit.num_qubits, num_clbits=num_clbits, ops=ops)


def test_bell_probabilities() -> None:
    bell = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(
            Op(name="h", qubits=(0,)),
            Op(name="cx", qubits=(0, 1)),
            Op(name="measure", qubits=(0, 1), clbits=(0, 1)),
        ),
    )
    probs = probabilities(bell)
    assert probs.keys() == {"00", "11"}
    assert probs["00"] == pytest.approx(0.5, abs=1e-12)
    assert probs["11"] == pytest.approx(0.5, abs=1e-12)


def test_probabilities_marginalise_and_map_clbits() -> None:
    rng = np.random.default_rng(7)
    base = random_circuit(rng, 4, depth=30, barrier_rate=0)
    # qubit 2 -> clbit 0, qubit 0 -> clbit 2; qubits 1, 3 unmeasured; clbits 1, 3 unwritten.
    circuit = _measured(base, 4, [(2, 0), (0, 2)])
    probs = probabilities(circuit)
    # Qiskit's marginal over qargs [2, 0]: index bit 0 is qubit 2, bit 1 is qubit 0.
    marginal = Statevector(to_qiskit(base)).probabilities(qargs=[2, 0])
    expected = {}
    for index, p in enumerate(marginal):
        q2, q0 = index & 1, (index >> 1) & 1
        key = f"0{q0}0{q2}"  # clbits 3, 2, 1, 0 from left to right
        expected[key] = p
    assert set(probs) <= set(expected)
    for key, p in expected.items():
        assert probs.get(key, 0.0) == pytest.approx(p, abs=1e-12)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)


def test_probabilities_last_write_to_a_clbit_wins() -> None:
    # x on qubit 1 only; clbit 0 is written from qubit 0 then overwritten from qubit 1.
    circuit = Circuit(
        num_qubits=2,
        num_clbits=1,
        ops=(
            Op(name="x", qubits=(1,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="measure", qubits=(1,), clbits=(0,)),
        ),
    )
    assert probabilities(circuit) == {"1": pytest.approx(1.0)}


def test_probabilities_without_measurements_reads_zeros() -> None:
    circuit = Circuit(num_qubits=2, num_clbits=3, ops=(Op(name="h", qubits=(0,)),))
    assert probabilities(circuit) == {"000": 1.0}


def test_ghz_20_qubits() -> None:
    n = 20
    ops = [Op(name="h", qubits=(0,))]
    ops += [Op(name="cx", qubits=(i, i + 1)) for i in range(n - 1)]
    ops.append(Op(name="measure", qubits=tuple(range(n)), clbits=tuple(range(n))))
    probs = probabilities(Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops)))
    assert probs == {"0" * n: pytest.approx(0.5), "1" * n: pytest.approx(0.5)}


def test_gate_after_measurement_is_rejected() -> None:
    circuit = Circuit(
        num_qubits=2,
        num_clbits=1,
        ops=(
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="x", qubits=(1,)),  # another qubit: fine
            Op(name="barrier", qubits=(0, 1)),  # barriers are fine too
            Op(name="cx", qubits=(1, 0)),
        ),
    )
    with pytest.raises(CircuitError) as err:
        statevector(circuit)
    assert err.value.code == "mid_circuit_measurement"
    assert err.value.where == "$.ops[3]"


def test_reset_of_a_fresh_qubit_is_a_no_op() -> None:
    circuit = Circuit(
        num_qubits=2,
        ops=(Op(name="h", qubits=(1,)), Op(name="reset", qubits=(0,)), Op(name="h", qubits=(0,))),
    )
    np.testing.assert_allclose(statevector(circuit), np.full(4, 0.5), atol=1e-12)


def test_reset_after_a_gate_is_rejected() -> None:
    circuit = Circuit(num_qubits=1, ops=(Op(name="h", qubits=(0,)), Op(name="reset", qubits=(0,))))
    with pytest.raises(CircuitError) as err:
        statevector(circuit)
    assert err.value.code == "mid_circuit_measurement"


def test_named_parameters_are_bound() -> None:
    circuit = Circuit(
        num_qubits=1,
        ops=(Op(name="rx", qubits=(0,), params=("2*theta",)),),
        parameters=("theta",),
    )
    expected = statevector(Circuit(num_qubits=1, ops=(Op(name="rx", qubits=(0,), params=(1.0,)),)))
    np.testing.assert_allclose(statevector(circuit, {"theta": 0.5}), expected, atol=1e-15)
    with pytest.raises(CircuitError) as err:
        statevector(circuit)
    assert err.value.code == "unbound_parameter"


def test_probabilities_with_high_clbit_indices() -> None:
    circuit = Circuit(
        num_qubits=1,
        num_clbits=100,
        ops=(Op(name="x", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(99,))),
    )
    assert probabilities(circuit) == {"1" + "0" * 99: pytest.approx(1.0)}
