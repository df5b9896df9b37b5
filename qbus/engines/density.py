"""The exact noisy reference: a numpy density-matrix simulator of the job's noise model.

It applies exactly the channels of ``qbus.schemas.noise`` (depolarising in the Pauli
convention by the gate's arity, then amplitude damping per qubit, after every gate;
readout confusion on the measured distribution), so the verifier can hold a noisy
engine's counts and expectation values to the exact *noisy* answer. Like
``reference``, it is written to be obviously right rather than fast: ρ is kept as a
vector of ``4**n`` entries, viewed as a ``2n``-qubit state whose low ``n`` qubits are
the column index and high ``n`` qubits the row index, so a channel is one call of the
``kernels.apply_matrix`` with its superoperator ``Σ K ⊗ K*``.

The helpers that turn a diagonal into counts (``measured_distribution``,
``draw_counts``) and a density matrix into expectation values
(``density_expectations``) are shared with the noisy engines, which compute ρ with
their own simulators and then read it out the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from qbus.engines.base import NOISE_ENGINES, EngineResult, RunRequest, reject_noise
from qbus.engines.checks import check_bound, check_noisy_request, check_terminal_measurements
from qbus.engines.kernels import apply_matrix, draw_counts
from qbus.engines.observables import pauli_action
from qbus.engines.params import numeric_params
from qbus.engines.reference import clbit_sources, gate_matrix
from qbus.errors import LimitError
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import NoiseModel, is_noisy
from qbus.schemas.pauli import Observable, PauliTerm

max_density_qubits = 10
"""Largest circuit the density-matrix reference (and so exact noisy verification) holds."""

_SKIP = frozenset({"measure", "barrier", "reset"})
_PROB_CUTOFF = 1e-14

_PAULIS = {
    "I": np.eye(2, dtype=np.complex128),
    "X": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "Z": np.array([[1, 0], [0, -1]], dtype=np.complex128),
}


# ------------------------------------------------------------------------ channels


def depolarizing_lambda(p: float, arity: int) -> float:
    """``λ`` of ``ρ ↦ (1-λ)ρ + λ Tr(ρ) I/d`` for Pauli-convention probability ``p``.

    Qiskit Aer's ``depolarizing_error`` takes ``λ``; Cirq, Braket and PennyLane take ``p``.
    """
    d2 = 4**arity
    return p * d2 / (d2 - 1)


@lru_cache(maxsize=16)
def pauli_strings(arity: int) -> tuple[np.ndarray, ...]:
    """Every non-identity Pauli string on ``arity`` qubits as a matrix (any bit order)."""
    out = []
    for letters in itertools.product("IXYZ", repeat=arity):
        if set(letters) == {"I"}:
            continue
        m = np.array([[1.0 + 0j]])
        for letter in letters:
            m = np.kron(m, _PAULIS[letter])
        out.append(m)
    return tuple(out)


def depolarizing_kraus(p: float, arity: int) -> list[np.ndarray]:
    """Kraus operators of the Pauli-convention depolarising channel on ``arity`` qubits.

    The channel is symmetric under any permutation of its qubits, so the bit order of
    the matrices does not matter.
    """
    d = 2**arity
    rest = pauli_strings(arity)
    kraus = [np.sqrt(1.0 - p) * np.eye(d, dtype=np.complex128)]
    kraus += [np.sqrt(p / len(rest)) * m for m in rest]
    return kraus


def amplitude_damping_kraus(gamma: float) -> list[np.ndarray]:
    """Kraus operators of amplitude damping with probability ``gamma``."""
    k0 = np.array([[1, 0], [0, np.sqrt(1.0 - gamma)]], dtype=np.complex128)
    k1 = np.array([[0, np.sqrt(gamma)], [0, 0]], dtype=np.complex128)
    return [k0, k1]


def gate_channels(noise: NoiseModel, qubits: Sequence[int]) -> list[tuple[list[np.ndarray], tuple]]:
    """The channels after a gate on ``qubits``, in order, as (Kraus list, qubits) pairs."""
    out: list[tuple[list[np.ndarray], tuple]] = []
    k = len(qubits)
    p = noise.depolarizing(k)
    if p > 0:
        out.append((depolarizing_kraus(p, k), tuple(qubits)))
    if noise.amplitude_damping > 0:
        damp = amplitude_damping_kraus(noise.amplitude_damping)
        out.extend((damp, (q,)) for q in qubits)
    return out


# ------------------------------------------------------------------ the simulator


def _superoperator(kraus: Sequence[np.ndarray]) -> np.ndarray:
    # Acting on (column qubits, then row qubits): index = col + 2**k * row.
    return sum(np.kron(k, k.conj()) for k in kraus)


def density_matrix(
    circuit: Circuit,
    values: Mapping[str, float] | None = None,
    noise: NoiseModel | None = None,
) -> np.ndarray:
    """The exact final density matrix of ``circuit`` under ``noise``, from ``|0…0⟩``.

    Measurements and barriers are skipped (they must be terminal), as are resets of
    fresh qubits; readout error does not enter ρ.

    Args:
        circuit: The circuit.
        values: Values of its named parameters.
        noise: The noise model (None: noiseless).

    Returns:
        A ``2**n x 2**n`` ``complex128`` matrix in the IR's order (qubit 0 the LSB).

    Raises:
        CircuitError: ``mid_circuit_measurement``, ``unbound_parameter``.
        LimitError: ``too_many_qubits`` past ``max_density_qubits``.
    """
    values = values or {}
    check_bound(circuit, values)
    n = circuit.num_qubits
    if n > max_density_qubits:
        raise LimitError(
            f"the density-matrix reference holds at most {max_density_qubits} qubits, got {n}",
            code="too_many_qubits",
        )
    check_terminal_measurements(circuit)
    dim = 1 << n
    vec = np.zeros(dim * dim, dtype=np.complex128)
    vec[0] = 1.0
    noisy = noise is not None and noise.has_gate_noise()
    for op in circuit.ops:
        if op.name in _SKIP:
            continue
        u = gate_matrix(op.name, numeric_params(op.params, values))
        rows = tuple(q + n for q in op.qubits)
        vec = apply_matrix(vec, u, rows, 2 * n)
        vec = apply_matrix(vec, u.conj(), op.qubits, 2 * n)
        if noisy:
            assert noise is not None
            for kraus, qs in gate_channels(noise, op.qubits):
                vec = apply_matrix(vec, _superoperator(kraus), (*qs, *(q + n for q in qs)), 2 * n)
    return vec.reshape(dim, dim)


def measured_distribution(
    circuit: Circuit, probs: np.ndarray, noise: NoiseModel | None = None
) -> dict[str, float]:
    """The distribution over clbit bitstrings from the qubits' outcome probabilities.

    Each measurement reads its qubit through that qubit's readout confusion matrix,
    independently of the others (so a qubit measured into two clbits may read
    differently in each, as on a device). Unwritten clbits read ``0``; clbit 0 is the
    rightmost character; outcomes below 1e-14 are left out.

    Args:
        circuit: The circuit (terminal measurements).
        probs: ``2**n`` outcome probabilities in the IR's order (qubit 0 the LSB), e.g.
            the diagonal of ρ.
        noise: The noise model whose readout errors apply (None: none).
    """
    n, m = circuit.num_qubits, circuit.num_clbits
    source = clbit_sources(circuit)
    if not source:
        return {"0" * m: 1.0}
    probs = np.clip(np.asarray(probs, dtype=np.float64).real, 0.0, None)
    probs = probs / probs.sum()
    kept = sorted(set(source.values()))
    tensor = probs.reshape((2,) * n)
    drop = tuple(n - 1 - q for q in range(n) if q not in kept)
    # Remaining axes are the kept qubits, highest qubit first.
    marginal = tensor.sum(axis=drop) if drop else tensor
    readout = noise.readout_errors() if noise is not None else {}
    written = sorted(source)
    # einsum with integer labels: kept qubit q is label q, clbit c is label n + c.
    operands: list[object] = [marginal, [q for q in reversed(kept)]]
    for c in written:
        q = source[c]
        error = readout.get(q)
        confusion = np.array(error.confusion()) if error else np.eye(2)
        operands += [confusion, [q, n + c]]
    out_labels = [n + c for c in reversed(written)]  # highest clbit first
    dist = np.einsum(*operands, out_labels).reshape(-1)
    # Index bit j (from the right) of ``dist`` is clbit written[j].
    idx = np.flatnonzero(dist > _PROB_CUTOFF)
    dtype = np.int64 if m < 63 else object
    keys = np.zeros(idx.shape, dtype=dtype)
    for j, c in enumerate(written):
        keys |= ((idx >> j) & 1).astype(dtype) << c
    fmt = f"0{m}b"
    return {format(int(k), fmt): float(dist[i]) for k, i in zip(keys, idx, strict=True)}


def noisy_probabilities(
    circuit: Circuit,
    values: Mapping[str, float] | None = None,
    noise: NoiseModel | None = None,
) -> dict[str, float]:
    """The exact clbit distribution of ``circuit`` under ``noise``, readout included."""
    rho = density_matrix(circuit, values, noise)
    return measured_distribution(circuit, np.diagonal(rho).real, noise)


# ---------------------------------------------------------------- expectation values


def pauli_trace(rho: np.ndarray, term: PauliTerm) -> float:
    """``Tr(ρ P)`` for the Pauli string of ``term`` (its coefficient not applied)."""
    dim = rho.shape[0]
    index = np.arange(dim)
    flip, phase = pauli_action(term.factors(), index)
    # P[i, i ^ flip] = phase[i], so Tr(ρP) = Σ_i ρ[i ^ flip, i] phase[i].
    return float(np.real(np.sum(rho[index ^ flip, index] * phase)))


def density_expectations(rho: np.ndarray, observables: Sequence[Observable]) -> list[float]:
    """One ``Tr(ρ O)`` per observable, ρ in the IR's order (qubit 0 the LSB)."""
    return [float(sum(t.coeff * pauli_trace(rho, t) for t in obs.terms)) for obs in observables]


def noisy_expectations(
    circuit: Circuit,
    observables: Sequence[Observable],
    values: Mapping[str, float] | None = None,
    noise: NoiseModel | None = None,
) -> list[float]:
    """Exact expectation values of ``observables`` on the noisy final state of ``circuit``."""
    return density_expectations(density_matrix(circuit, values, noise), observables)


def big_endian_density(rho: np.ndarray, n: int) -> np.ndarray:
    """A density matrix with its qubit order reversed (big-endian <-> the IR's order)."""
    axes = [*reversed(range(n)), *reversed(range(n, 2 * n))]
    return np.ascontiguousarray(np.asarray(rho).reshape((2,) * (2 * n)).transpose(axes)).reshape(
        1 << n, 1 << n
    )


def result_from_density(
    request: RunRequest, rho: np.ndarray, start: float, noise: NoiseModel | None
) -> EngineResult:
    """The EngineResult of a noisy ``sample`` or ``expectation`` run from its final ρ.

    ``sample`` draws from the diagonal (readout error applied) with
    ``numpy.random.default_rng(seed)``; ``expectation`` evaluates the observables.
    """
    if request.method == "expectation":
        values = density_expectations(rho, request.observables)
        return EngineResult.timed(request, start, expectations=values)
    dist = measured_distribution(request.circuit, np.diagonal(rho).real, noise)
    return EngineResult.timed(request, start, counts=draw_counts(dist, request.shots, request.seed))


__all__ = [
    "NOISE_ENGINES",
    "amplitude_damping_kraus",
    "check_noisy_request",
    "density_expectations",
    "density_matrix",
    "depolarizing_kraus",
    "depolarizing_lambda",
    "draw_counts",
    "is_noisy",
    "max_density_qubits",
    "measured_distribution",
    "noisy_expectations",
    "noisy_probabilities",
    "reject_noise",
]
