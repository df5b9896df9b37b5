"""The exact numpy reference simulator: the verifier's ground truth.

Like PennyLane's ``reference.qubit`` device, this is small, dependency-free beyond
numpy, and written to be obviously right rather than fast at scale; it is what every
other engine's output is checked against.

Matrix convention (the same as Qiskit's ``Operator(gate).data``): a ``k``-qubit gate
applied to ``qubits=(q0, q1, ..., q_{k-1})`` has a ``2**k x 2**k`` matrix whose row and
column index is ``i = b0 + 2*b1 + ... + 2**(k-1) * b_{k-1}``, where ``bj`` is the bit of
``qj``. So the **first** listed qubit is the least significant bit of the matrix index,
and for controlled gates (controls listed first) the controls are the low bits.

State convention: qubit 0 is the least significant bit of a state-vector index. Viewed
as a C-ordered ``[2] * n`` tensor, qubit ``q`` is axis ``n - 1 - q``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

import qbus
from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.engines.branching import branch_distribution
from qbus.engines.checks import check_bound, check_terminal_measurements
from qbus.engines.kernels import apply_matrix, draw_counts
from qbus.engines.params import numeric_params
from qbus.engines.results import state_result
from qbus.errors import CircuitError, LimitError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, shot_by_shot

max_reference_qubits = 20
"""Largest circuit the reference engine (and so exact verification) accepts."""

# A hard stop for direct calls of ``statevector``: 2**28 amplitudes are 4 GiB, and a
# hostile circuit must not make the verifier allocate more than that.
_HARD_MAX_QUBITS = 28

# Probabilities below this are numerical noise of exactly-zero amplitudes (after many
# gates a zero amplitude comes out near 1e-17, so its probability near 1e-34); they are
# left out of ``probabilities`` so a sparse distribution stays sparse.
_PROB_CUTOFF = 1e-14

# Allowed resets are no-ops (checked first), and measurements are terminal.
_SKIP = frozenset({"measure", "barrier", "reset"})

_SQ2 = 1.0 / math.sqrt(2.0)
_I2 = np.eye(2, dtype=np.complex128)


def _frozen(m: np.ndarray) -> np.ndarray:
    # Cached matrices are shared; a caller writing into one must fail loudly.
    m = np.ascontiguousarray(m, dtype=np.complex128)
    m.flags.writeable = False
    return m


def _controlled(u: np.ndarray, num_ctrl: int = 1) -> np.ndarray:
    """Controlled-``u`` with the controls as the low bits of the matrix index."""
    t = u.shape[0]
    c = 1 << num_ctrl
    full = np.eye(c * t, dtype=np.complex128)
    mask = c - 1
    for a in range(t):
        for b in range(t):
            full[(a * c) | mask, (b * c) | mask] = u[a, b]
    return full


def _rx(theta: float) -> np.ndarray:
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array([[c, -1j * s], [-1j * s, c]], dtype=np.complex128)


def _ry(theta: float) -> np.ndarray:
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array([[c, -s], [s, c]], dtype=np.complex128)


def _rz(theta: float) -> np.ndarray:
    return np.array([[np.exp(-0.5j * theta), 0], [0, np.exp(0.5j * theta)]], dtype=np.complex128)


def _p(lam: float) -> np.ndarray:
    return np.array([[1, 0], [0, np.exp(1j * lam)]], dtype=np.complex128)


def _u(theta: float, phi: float, lam: float) -> np.ndarray:
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array(
        [
            [c, -np.exp(1j * lam) * s],
            [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c],
        ],
        dtype=np.complex128,
    )


def _u2(phi: float, lam: float) -> np.ndarray:
    return _SQ2 * np.array(
        [[1, -np.exp(1j * lam)], [np.exp(1j * phi), np.exp(1j * (phi + lam))]],
        dtype=np.complex128,
    )


_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)
_Y = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
_Z = np.array([[1, 0], [0, -1]], dtype=np.complex128)
_H = _SQ2 * np.array([[1, 1], [1, -1]], dtype=np.complex128)
_SX = 0.5 * np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]], dtype=np.complex128)
_XX = np.kron(_X, _X)
_YY = np.kron(_Y, _Y)
_I4 = np.eye(4, dtype=np.complex128)


def _swap() -> np.ndarray:
    m = np.zeros((4, 4), dtype=np.complex128)
    m[0, 0] = m[1, 2] = m[2, 1] = m[3, 3] = 1
    return m


def _cswap() -> np.ndarray:
    # Control is bit 0; when it is set, bits 1 and 2 swap: index 3 (b1) <-> 5 (b2).
    m = np.eye(8, dtype=np.complex128)
    m[[3, 5]] = m[[5, 3]]
    return m


_FIXED: dict[str, np.ndarray] = {
    name: _frozen(m)
    for name, m in {
        "id": _I2,
        "x": _X,
        "y": _Y,
        "z": _Z,
        "h": _H,
        "s": np.diag([1, 1j]),
        "sdg": np.diag([1, -1j]),
        "t": np.diag([1, np.exp(0.25j * math.pi)]),
        "tdg": np.diag([1, np.exp(-0.25j * math.pi)]),
        "sx": _SX,
        "sxdg": _SX.conj().T,
        "cx": _controlled(_X),
        "cy": _controlled(_Y),
        "cz": _controlled(_Z),
        "ch": _controlled(_H),
        "csx": _controlled(_SX),
        "swap": _swap(),
        "ccx": _controlled(_X, 2),
        "cswap": _cswap(),
    }.items()
}


def _rpp(theta: float, pp: np.ndarray) -> np.ndarray:
    # exp(-i theta/2 P(x)P) = cos(theta/2) I - i sin(theta/2) P(x)P, as RXX/RYY in Qiskit.
    return math.cos(theta / 2) * _I4 - 1j * math.sin(theta / 2) * pp


def _rzz(theta: float) -> np.ndarray:
    a, b = np.exp(-0.5j * theta), np.exp(0.5j * theta)
    return np.diag([a, b, b, a]).astype(np.complex128)


def _cu(theta: float, phi: float, lam: float, gamma: float) -> np.ndarray:
    return _controlled(np.exp(1j * gamma) * _u(theta, phi, lam))


_PARAMETRISED = {
    "rx": _rx,
    "ry": _ry,
    "rz": _rz,
    "p": _p,
    "u1": _p,
    "u2": _u2,
    "u": _u,
    "cp": lambda lam: _controlled(_p(lam)),
    "crx": lambda t: _controlled(_rx(t)),
    "cry": lambda t: _controlled(_ry(t)),
    "crz": lambda t: _controlled(_rz(t)),
    "cu": _cu,
    "rxx": lambda t: _rpp(t, _XX),
    "ryy": lambda t: _rpp(t, _YY),
    "rzz": _rzz,
}


def gate_matrix(name: str, params: Sequence[float] = ()) -> np.ndarray:
    """The unitary of one IR gate, in Qiskit's matrix convention (see the module doc).

    Args:
        name: Canonical gate name from ``GATES``.
        params: Numeric angles, as many as the gate takes.

    Returns:
        A ``complex128`` array of shape ``(2**k, 2**k)``. Matrices of parameterless gates
        are cached and read-only.

    Raises:
        CircuitError: ``unknown_gate`` for a name outside the gate library, or
            ``invalid_parameters`` for a wrong parameter count.
    """
    spec = GATES.get(name)
    if spec is None:
        raise CircuitError(f"unknown gate '{name}'", code="unknown_gate")
    if len(params) != spec.num_params:
        raise CircuitError(
            f"gate '{name}' takes {spec.num_params} parameter(s), got {len(params)}",
            code="invalid_parameters",
        )
    if spec.num_params == 0:
        return _FIXED[name]
    return _PARAMETRISED[name](*(float(p) for p in params))


def _check_size(n: int) -> None:
    if n > _HARD_MAX_QUBITS:
        raise LimitError(
            f"the reference simulator holds at most {_HARD_MAX_QUBITS} qubits, got {n}",
            code="too_many_qubits",
        )


def statevector(circuit: Circuit, values: Mapping[str, float] | None = None) -> np.ndarray:
    """The exact final state of ``circuit`` from ``|0...0>``.

    Measurements and barriers are skipped, so a circuit whose measurements are all
    terminal gives the state just before them. Everything is checked before the first
    gate is applied.

    Args:
        circuit: The circuit.
        values: Values of the circuit's named parameters.

    Returns:
        A flat ``complex128`` array of length ``2**num_qubits`` (qubit 0 is the LSB).

    Raises:
        CircuitError: ``mid_circuit_measurement`` (see ``check_terminal_measurements``);
            ``unbound_parameter`` when a named parameter has no value.
        LimitError: ``too_many_qubits`` past the simulator's hard memory bound.
    """
    values = values or {}
    check_bound(circuit, values)
    n = circuit.num_qubits
    _check_size(n)
    check_terminal_measurements(circuit)
    psi = np.zeros(1 << n, dtype=np.complex128)
    psi[0] = 1.0
    for op in circuit.ops:
        if op.name in _SKIP:
            continue
        m = gate_matrix(op.name, numeric_params(op.params, values))
        psi = apply_matrix(psi, m, op.qubits, n)
    return psi


def clbit_sources(circuit: Circuit) -> dict[int, int]:
    """Which qubit each clbit finally holds: ``{clbit: qubit}`` (the last write wins)."""
    source: dict[int, int] = {}
    for op in circuit.ops:
        if op.name == "measure":
            for q, c in zip(op.qubits, op.clbits, strict=True):
                source[c] = q
    return source


def probabilities(
    circuit: Circuit,
    values: Mapping[str, float] | None = None,
    *,
    max_branches: int | None = None,
    max_work: int | None = None,
) -> dict[str, float]:
    """The exact distribution over clbit bitstrings of a circuit.

    Qubits not measured are marginalised; clbits never written read ``0``; clbit 0 is
    the rightmost character. Outcomes with probability below 1e-14 are left out. A
    dynamic circuit (mid-circuit measurement or reset, ``if``, ``while``) is simulated
    by branch enumeration (``qbus.engines.branching``).

    Args:
        circuit: The circuit.
        values: Values of the circuit's named parameters.
        max_branches: For a dynamic circuit, fewer live branches than memory allows.
        max_work: For a dynamic circuit, most amplitude updates before giving up
            (``branching.branch_distribution``).

    Returns:
        ``{bitstring: probability}``; the probabilities sum to 1 (up to rounding).

    Raises:
        CircuitError: As ``statevector`` for a static circuit; for a dynamic one as
            ``branching.branch_distribution`` (``too_many_branches``,
            ``loop_budget_exceeded``).
    """
    if shot_by_shot(circuit):
        return branch_distribution(
            circuit, values, gate_matrix, max_branches=max_branches, max_work=max_work
        )
    psi = statevector(circuit, values)
    return distribution(circuit, psi)


def distribution(circuit: Circuit, psi: np.ndarray) -> dict[str, float]:
    n, m = circuit.num_qubits, circuit.num_clbits
    source = clbit_sources(circuit)
    if not source:
        return {"0" * m: 1.0}
    kept = sorted(set(source.values()))
    kept_set = set(kept)
    probs = (psi.real**2 + psi.imag**2).reshape((2,) * n)
    drop = tuple(n - 1 - q for q in range(n) if q not in kept_set)
    marginal = probs.sum(axis=drop).reshape(-1) if drop else probs.reshape(-1)
    # In the marginal, kept qubit kept[j] is bit j of the index.
    pos = {q: j for j, q in enumerate(kept)}
    idx = np.flatnonzero(marginal > _PROB_CUTOFF)
    # Clbit indices reach 1023: past bit 62 the keys need Python's unbounded ints.
    dtype = np.int64 if max(source) < 63 else object
    keys = np.zeros(idx.shape, dtype=dtype)
    for c, q in source.items():
        keys |= ((idx >> pos[q]) & 1).astype(dtype) << c
    fmt = f"0{m}b"
    return {format(int(k), fmt): float(marginal[i]) for k, i in zip(keys, idx, strict=True)}


def counts_from_bits(bits: np.ndarray, qubits: list[int], circuit: Circuit) -> dict[str, int]:
    """Counts keyed by clbit bitstrings from a ``shots x len(qubits)`` array of 0/1.

    Column ``j`` of ``bits`` holds qubit ``qubits[j]``; each clbit takes the qubit that
    last wrote it (``clbit_sources``), clbit 0 rightmost, unwritten clbits 0.
    """
    col = {q: j for j, q in enumerate(qubits)}
    source = clbit_sources(circuit)
    dtype = np.int64 if max(source) < 63 else object
    keys = np.zeros(bits.shape[0], dtype=dtype)
    for c, q in source.items():
        keys |= bits[:, col[q]].astype(dtype) << c
    values, n = np.unique(keys, return_counts=True)
    fmt = f"0{circuit.num_clbits}b"
    return {format(int(k), fmt): int(c) for k, c in zip(values, n, strict=True)}


class ReferenceEngine(Engine):
    """The numpy reference simulator as an engine.

    ``sample`` draws counts from the exact distribution with ``numpy``'s
    ``default_rng(seed)`` (so a seed reproduces its counts on every platform numpy
    supports); ``statevector`` returns the exact final state. Dynamic circuits
    (``sample`` only) draw from the branch-enumerated distribution.
    """

    name = "reference"
    capabilities = Capabilities.state_vector(
        max_reference_qubits, classical_control=("if", "while")
    )
    mid_circuit_methods = frozenset({"sample"})

    @property
    def version(self) -> str:
        """The qbus version: this engine ships with the package."""
        return qbus.__version__

    def _run(self, request: RunRequest) -> EngineResult:
        start = time.perf_counter()
        if request.method == "sample" and shot_by_shot(request.circuit):
            dist = branch_distribution(request.circuit, request.parameters, gate_matrix)
            counts = draw_counts(dist, request.shots, request.seed)
            return EngineResult.timed(request, start, counts=counts)
        psi = statevector(request.circuit, request.parameters)
        return state_result(request, psi, start, sample_state)


def sample_state(circuit: Circuit, psi: np.ndarray, shots: int, seed: int) -> dict[str, int]:
    """``shots`` counts drawn from the exact distribution of ``circuit``'s final state ``psi``.

    ``draw_counts`` of ``distribution``: the same counts for the same state and seed on
    every engine that samples this way.
    """
    return draw_counts(distribution(circuit, psi), shots, seed)


__all__ = [
    "ReferenceEngine",
    "check_terminal_measurements",
    "clbit_sources",
    "gate_matrix",
    "max_reference_qubits",
    "probabilities",
    "sample_state",
    "statevector",
]
