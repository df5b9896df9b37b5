"""The jax engine's fused, elementwise block application against the reference.

Blocks are applied as sums over slices with structurally zero entries skipped
(``qbus/engines/jax_blocks.py``); these circuits use every gate the engine supports, on
random (non-adjacent, reversed) qubit orders, fused into blocks of 1 to 4 qubits.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from qbus.engines import reference
from qbus.engines.jax_blocks import block_pattern
from qbus.engines.jax_engine import DEFAULT_FUSED_QUBITS, JaxEngine
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op

_TOL = 1e-10


def _every_gate_circuit(rng: np.random.Generator, n: int, length: int) -> Circuit:
    names = sorted(name for name, spec in GATES.items() if spec.num_qubits <= n)
    ops = [Op(name="u", qubits=(q,), params=tuple(rng.uniform(-3, 3, 3))) for q in range(n)]
    for i in range(length):
        name = names[i % len(names)] if i < len(names) else str(rng.choice(names))
        spec = GATES[name]
        qubits = tuple(int(q) for q in rng.permutation(n)[: spec.num_qubits])
        ops.append(Op(name=name, qubits=qubits, params=tuple(rng.uniform(-6, 6, spec.num_params))))
    return Circuit(num_qubits=n, ops=tuple(ops))


@pytest.fixture(scope="module")
def engines() -> dict[int, JaxEngine]:
    return {k: JaxEngine(max_fused_qubits=k) for k in (1, 2, DEFAULT_FUSED_QUBITS, 4)}


@pytest.mark.parametrize("n", range(1, 11))
def test_every_gate_fused_and_unfused_match_reference(
    engines: dict[int, JaxEngine], n: int
) -> None:
    rng = np.random.default_rng(100 + n)
    circuit = _every_gate_circuit(rng, n, 40 if n > 2 else 25)
    exact = reference.statevector(circuit)
    sizes = (1, DEFAULT_FUSED_QUBITS) if n < 9 else (1, 2, DEFAULT_FUSED_QUBITS, 4)
    for k in sizes:
        got = engines[k].statevector(circuit)
        assert np.abs(got - exact).max() < _TOL, (n, k)


def test_reversed_and_spread_qubits_in_one_block(engines: dict[int, JaxEngine]) -> None:
    # One 3-qubit block whose gates list their qubits high-to-low and far apart.
    ops = [Op(name="h", qubits=(q,)) for q in range(7)]
    ops += [
        Op(name="cx", qubits=(6, 0)),
        Op(name="crz", qubits=(3, 6), params=(0.7,)),
        Op(name="ccx", qubits=(6, 3, 0)),
        Op(name="cswap", qubits=(0, 6, 3)),
        Op(name="rxx", qubits=(3, 0), params=(1.3,)),
    ]
    circuit = Circuit(num_qubits=7, ops=tuple(ops))
    exact = reference.statevector(circuit)
    for k in (1, 3, 4):
        assert np.abs(engines[k].statevector(circuit) - exact).max() < _TOL, k


def test_parameterised_circuit_compiles_once_for_every_value() -> None:
    engine = JaxEngine()
    ops = [Op(name="ry", qubits=(q,), params=(f"a{q}",)) for q in range(5)]
    ops += [Op(name="cx", qubits=(q, (q + 2) % 5)) for q in range(5)]
    ops += [Op(name="rz", qubits=(q,), params=(f"b{q}",)) for q in reversed(range(5))]
    ops += [Op(name="rzz", qubits=(4, 1), params=("a0",))]
    names = tuple(f"{a}{q}" for a in "ab" for q in range(5))
    circuit = Circuit(num_qubits=5, ops=tuple(ops), parameters=names)
    rng = np.random.default_rng(5)
    for _ in range(3):
        values = {f"{a}{q}": float(rng.uniform(-4, 4)) for a in "ab" for q in range(5)}
        got = engine.statevector(circuit, values)
        assert np.abs(got - reference.statevector(circuit, values)).max() < _TOL
    assert engine.cache_misses == 1


def test_vmapped_sweep_matches_reference_per_point() -> None:
    engine = JaxEngine()
    ops = [Op(name="rx", qubits=(q,), params=("t",)) for q in range(4)]
    ops += [Op(name="cz", qubits=(3, 0)), Op(name="cp", qubits=(1, 2), params=("s",))]
    ops += [Op(name="ry", qubits=(2,), params=("s",)), Op(name="swap", qubits=(0, 2))]
    circuit = Circuit(num_qubits=4, ops=tuple(ops), parameters=("t", "s"))
    points = [{"t": 0.3 * i, "s": 1.0 - 0.2 * i} for i in range(6)]
    states = engine.sweep(circuit, points)
    for values, got in zip(points, states, strict=True):
        assert np.abs(got - reference.statevector(circuit, values)).max() < _TOL


def test_pattern_skips_structural_zeros() -> None:
    nonzero, constant = block_pattern((0, 1), [("cx", (0, 1))])
    assert constant is not None and int(nonzero.sum()) == 4  # a permutation
    # Diagonal gates fuse into a diagonal block whatever the angles.
    nonzero, constant = block_pattern((0, 1, 2), [("rz", (0,)), ("cz", (2, 0)), ("rzz", (1, 2))])
    assert constant is None
    assert np.array_equal(nonzero, np.eye(8, dtype=bool))
    # A dense rotation makes every entry count.
    nonzero, _ = block_pattern((0, 1), [("ry", (0,)), ("ry", (1,)), ("cx", (1, 0))])
    assert nonzero.all()
