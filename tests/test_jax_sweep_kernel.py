"""The jax sweep kernel's rewrites against the exact reference.

The kernel never applies trailing Clifford gates (it conjugates the observables through
them), keeps the state factored until gates entangle it, and sums each Pauli flip group
over half the state. Each rewrite is checked here on random circuits and observables
that reach its corner cases: Y factors, identity terms, several observables, qubits
that never entangle or carry no gate, and non-Clifford gates between Clifford ones.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from qbus.engines import reference
from qbus.engines.base import RunRequest
from qbus.engines.jax_engine import JaxEngine, structure_of
from qbus.engines.jax_sweep import _plan, _string_matrix, chunk_size, clifford_images
from qbus.engines.observables import expectation_values
from qbus.engines.sweep import point_parameters, slot_table
from qbus.frontends.parameters import bind
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op
from qbus.schemas.pauli import Observable

pytestmark = pytest.mark.timeout(600)

FIXED_CLIFFORD = ("h", "s", "sdg", "x", "y", "z", "sx", "sxdg", "cx", "cy", "cz", "swap")
FIXED_OTHER = ("t", "tdg", "ch", "csx", "ccx", "cswap")
PARAMETRISED = ("rx", "ry", "rz", "u", "p", "rzz", "rxx", "crx", "cp", "cu")


def test_clifford_images_are_exact_and_only_for_clifford_gates() -> None:
    for name, spec in GATES.items():
        images = clifford_images(name)
        if spec.num_params or name in FIXED_OTHER:
            assert images is None, name
            continue
        assert images is not None, name
        g = reference.gate_matrix(name)
        for p, (c, q) in images.items():
            conjugated = g.conj().T @ _string_matrix(p) @ g
            np.testing.assert_allclose(conjugated, c * _string_matrix(q), atol=1e-12)
    # Letter j acts on the gate's qubit j: X on cx's control spreads to its target.
    assert clifford_images("cx")["XI"] == (1, "XX")
    assert clifford_images("h")["Y"] == (-1, "Y")


def _random_sweep_circuit(
    rng: np.random.Generator, n: int, depth: int, clifford_tail: int
) -> tuple[Circuit, list[str]]:
    ops: list[Op] = []
    names: list[str] = []

    def qubits(k: int) -> tuple[int, ...]:
        return tuple(int(q) for q in rng.choice(n, size=k, replace=False))

    def angle() -> str:
        names.append(f"a{len(names)}")
        return names[-1]

    for _ in range(depth):
        kind = rng.integers(3)
        pool = (PARAMETRISED, FIXED_CLIFFORD, FIXED_OTHER)[kind]
        name = str(rng.choice(pool))
        spec = GATES[name]
        if spec.num_qubits > n:
            continue
        params = tuple(angle() for _ in range(spec.num_params))
        ops.append(Op(name=name, qubits=qubits(spec.num_qubits), params=params))
    for _ in range(clifford_tail):
        name = str(rng.choice(FIXED_CLIFFORD))
        if GATES[name].num_qubits <= n:
            ops.append(Op(name=name, qubits=qubits(GATES[name].num_qubits)))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(names)), names


def _random_observables(rng: np.random.Generator, n: int, count: int) -> list[Observable]:
    observables = []
    for _ in range(count):
        terms = [{"coeff": float(rng.normal()), "pauli": ""}]
        for _ in range(int(rng.integers(1, 6))):
            letters = rng.choice(list("IXYZ"), size=n)
            pauli = " ".join(f"{p}{q}" for q, p in enumerate(letters) if p != "I")
            terms.append({"coeff": float(rng.normal()), "pauli": pauli})
        observables.append({"terms": terms})
    return msgspec.convert(observables, list[Observable])


def _exact(circuit: Circuit, values: dict[str, float], observables: list[Observable]):
    return expectation_values(reference.statevector(bind(circuit, values)), observables)


@pytest.mark.parametrize("seed", range(12))
def test_random_sweeps_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    circuit, names = _random_sweep_circuit(rng, n, depth=int(rng.integers(0, 14)), clifford_tail=4)
    # 1, 2 or 6 observables: the kernel's reductions differ only in the weights' shape.
    observables = _random_observables(rng, n, int(rng.choice([1, 2, 6])))
    points = [
        {k: float(v) for k, v in zip(names, rng.uniform(-3, 3, len(names)), strict=True)}
        for _ in range(5)
    ]
    engine = JaxEngine()
    result = engine.run(
        RunRequest(circuit=circuit, method="sweep", sweep=points, observables=observables)
    )
    assert result.sweep_results is not None
    for point, values in zip(result.sweep_results, points, strict=True):
        exact = _exact(circuit, values, observables)
        np.testing.assert_allclose(point.expectations, exact, atol=1e-10)


def _circuit(n: int, ops: list[tuple[str, tuple[int, ...], tuple[str, ...]]]) -> Circuit:
    params = tuple(p for _, _, ps in ops for p in ps)
    return Circuit(
        num_qubits=n,
        ops=tuple(Op(name=g, qubits=q, params=p) for g, q, p in ops),
        parameters=tuple(dict.fromkeys(params)),
    )


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_factored_states_merge_in_any_order(dtype: str) -> None:
    # Qubit 4 carries no gate, qubit 3 never entangles, the pairs (0, 2) and (1, 5)
    # entangle apart and merge late, and a three-qubit gate joins factors of unequal size.
    circuit = _circuit(
        6,
        [
            ("ry", (0,), ("a",)),
            ("rx", (3,), ("b",)),
            ("h", (1,), ()),
            ("cx", (2, 0), ()),
            ("rzz", (5, 1), ("c",)),
            ("u", (2,), ("a", "b", "c")),
            ("ccx", (1, 2, 5), ()),
            ("crx", (0, 1), ("b",)),
            ("rz", (3,), ("c",)),
        ],
    )
    points, states = _sweep_states(circuit, dtype, seed=3, count=7)
    tolerance = 1e-12 if dtype == "complex128" else 1e-6
    for psi, values in zip(states, points, strict=True):
        exact = reference.statevector(bind(circuit, values))
        assert abs(np.vdot(exact, psi)) ** 2 == pytest.approx(1, abs=tolerance)
        np.testing.assert_allclose(psi, exact, atol=10 * np.sqrt(tolerance))


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_gates_on_the_same_qubits_in_any_order_share_one_step(dtype: str) -> None:
    # Runs of gates on one pair or triple, listed in either qubit order, with fixed and
    # parametrised gates mixed, are one matrix per point; a one-qubit gate between two
    # of them, or a gate on another pair sharing a qubit, ends the run.
    circuit = _circuit(
        4,
        [
            ("x", (1,), ()),
            ("rxx", (0, 1), ("a",)),
            ("ryy", (1, 0), ("b",)),
            ("cx", (1, 0), ()),
            ("rzz", (0, 1), ("c",)),
            ("crx", (2, 1), ("a",)),
            ("cz", (1, 2), ()),
            ("ry", (2,), ("b",)),
            ("cp", (2, 1), ("c",)),
            ("ccx", (3, 0, 2), ()),
            ("cswap", (2, 3, 0), ()),
            ("swap", (3, 2), ()),
            ("cu", (2, 3), ("a", "b", "c", "a")),
        ],
    )
    points, states = _sweep_states(circuit, dtype, seed=5, count=6)
    atol = 1e-12 if dtype == "complex128" else 1e-5
    for psi, values in zip(states, points, strict=True):
        np.testing.assert_allclose(psi, reference.statevector(bind(circuit, values)), atol=atol)
    steps = _plan(structure_of(circuit))[1]
    assert [len(step.gates) for step in steps] == [4, 2, 1, 1, 2, 2]


def _sweep_states(
    circuit: Circuit, dtype: str, seed: int, count: int
) -> tuple[list[dict[str, float]], list[np.ndarray]]:
    """``count`` random points of the parameters a, b, c and the kernel's state at each."""
    rng = np.random.default_rng(seed)
    points = [dict(zip("abc", rng.uniform(-3, 3, 3).tolist(), strict=True)) for _ in range(count)]
    engine = JaxEngine(dtype)
    calls = engine._sweep_calls(circuit, _angles(circuit, points), [])
    return points, [psi for _, out in calls for psi in out]


def _angles(circuit: Circuit, points: list[dict[str, float]]) -> np.ndarray:
    return slot_table(circuit, point_parameters({}, points))


def test_a_circuit_of_clifford_gates_only_needs_no_state_pass() -> None:
    # Every gate is absorbed into the observable; the state left is |0...0>.
    circuit = _circuit(
        3, [("h", (0,), ()), ("cx", (0, 1), ()), ("s", (1,), ()), ("cz", (1, 2), ())]
    )
    observables = _random_observables(np.random.default_rng(5), 3, 3)
    result = JaxEngine().run(
        RunRequest(circuit=circuit, method="sweep", sweep=[{}, {}], observables=observables)
    )
    exact = _exact(circuit, {}, observables)
    for point in result.sweep_results or []:
        np.testing.assert_allclose(point.expectations, exact, atol=1e-12)


def test_gpu_chunks_take_every_point_of_a_call() -> None:
    assert chunk_size(12, "complex128", 256, "gpu") == 256
    assert chunk_size(12, "complex128", 300, "gpu") == 512  # a power of two: few compiles
    assert chunk_size(12, "complex128", 1, "gpu") == 1
    assert chunk_size(24, "complex128", 1000, "gpu") == 1  # 2**24 amplitudes at most
    # The CPU keeps cache-sized chunks.
    assert chunk_size(12, "complex128", 256) == 32


def test_gpu_chunking_gives_the_cpu_results() -> None:
    rng = np.random.default_rng(9)
    circuit, names = _random_sweep_circuit(rng, 5, depth=12, clifford_tail=2)
    observables = _random_observables(rng, 5, 2)
    points = [
        {k: float(v) for k, v in zip(names, rng.uniform(-3, 3, len(names)), strict=True)}
        for _ in range(37)
    ]
    request = RunRequest(circuit=circuit, method="sweep", sweep=points, observables=observables)
    cpu = JaxEngine()
    gpu_chunked = JaxEngine()
    gpu_chunked.capabilities = msgspec.structs.replace(gpu_chunked.capabilities, device="gpu")
    on_cpu = [p.expectations for p in cpu.run(request).sweep_results or []]
    as_on_gpu = [p.expectations for p in gpu_chunked.run(request).sweep_results or []]
    assert len(on_cpu) == len(as_on_gpu) == 37
    np.testing.assert_allclose(as_on_gpu, on_cpu, atol=1e-12)
