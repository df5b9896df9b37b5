"""The exact reference of the ``dynamics`` method: matrix exponentials with scipy.

Closed systems (no collapse operators) evolve the state vector,
``ψ(t + Δ) = exp(-i H Δ) ψ(t)``; open systems evolve the vectorised density matrix with
the Lindblad superoperator (row-major vectorisation, ``vec(A ρ B) = (A ⊗ Bᵀ) vec(ρ)``)::

    L = -i (H ⊗ I - I ⊗ Hᵀ) + Σ_k [ L_k ⊗ L_k* - ½ L_k†L_k ⊗ I - ½ I ⊗ (L_k†L_k)ᵀ ]

Both apply the exponential with ``scipy.sparse.linalg.expm_multiply`` (a truncated
Taylor series with error control to double precision) from each report time to the
next. Operators are in the IR's order: qubit 0 is the least significant bit.

This is what the verifier holds a dynamics engine's values to; it is exact but not
built for size: open systems up to ``max_open_qubits`` (a ``4**n`` vector),
closed ones up to ``max_closed_qubits``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import expm_multiply

from qbus.engines.density import density_expectations
from qbus.engines.observables import expectation_values
from qbus.engines.reference import statevector
from qbus.errors import LimitError
from qbus.schemas.dynamics import CollapseOperator, DynamicsResult, DynamicsSpec
from qbus.schemas.ir import Circuit
from qbus.schemas.pauli import Observable

max_open_qubits = 6
"""Largest open system (with collapse operators) the reference evolves."""

max_closed_qubits = 12
"""Largest closed system the reference evolves."""

_SINGLE = {
    "I": np.eye(2, dtype=np.complex128),
    "X": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "Z": np.array([[1, 0], [0, -1]], dtype=np.complex128),
    # σ⁻ = |0⟩⟨1| lowers |1⟩ to |0⟩ (decay); σ⁺ = |1⟩⟨0| (excitation).
    "-": np.array([[0, 1], [0, 0]], dtype=np.complex128),
    "+": np.array([[0, 0], [1, 0]], dtype=np.complex128),
}


def local_operator(factors: Mapping[int, str], n: int) -> sp.csr_matrix:
    """The sparse ``2**n`` operator that is ``factors[q]`` on qubit ``q``, identity elsewhere.

    Args:
        factors: Qubit -> one of ``I X Y Z - +``.
        n: Number of qubits.
    """
    out = sp.identity(1, dtype=np.complex128, format="csr")
    for q in reversed(range(n)):  # qubit 0 is the least significant: rightmost factor
        out = sp.kron(out, sp.csr_matrix(_SINGLE[factors.get(q, "I")]), format="csr")
    return out


def observable_matrix(observable: Observable, n: int) -> sp.csr_matrix:
    """The sparse matrix of a Pauli-sum observable on ``n`` qubits."""
    dim = 1 << n
    out = sp.csr_matrix((dim, dim), dtype=np.complex128)
    for term in observable.terms:
        out = out + term.coeff * local_operator({q: p for p, q in term.factors()}, n)
    return out


def collapse_matrix(c: CollapseOperator, n: int) -> sp.csr_matrix:
    """``L = sqrt(rate) * op`` of one collapse operator on ``n`` qubits."""
    if c.kind == "pauli":
        factors = {q: p for p, q in c.factors()}
    else:
        assert c.qubit is not None
        factors = {c.qubit: {"dephasing": "Z", "decay": "-", "excitation": "+"}[c.kind]}
    return np.sqrt(c.rate) * local_operator(factors, n)


def liouvillian(h: sp.csr_matrix, collapse: Sequence[sp.csr_matrix]) -> sp.csr_matrix:
    """The Lindblad superoperator acting on row-major ``vec(ρ)`` (see the module doc)."""
    dim = h.shape[0]
    eye = sp.identity(dim, dtype=np.complex128, format="csr")
    out = -1j * (sp.kron(h, eye) - sp.kron(eye, h.T))
    for lk in collapse:
        ldl = (lk.conj().T @ lk).tocsr()
        out = out + sp.kron(lk, lk.conj()) - 0.5 * sp.kron(ldl, eye) - 0.5 * sp.kron(eye, ldl.T)
    return out.tocsr()


def evolve(spec: DynamicsSpec, initial: np.ndarray, n: int) -> list[list[float]]:
    """Expectation values ``values[k][t]`` of ``spec.observables`` from the state ``initial``.

    Args:
        spec: The dynamics spec (checked with ``spec.problem``).
        initial: The state at ``spec.times[0]`` (IR order, length ``2**n``).
        n: Number of qubits.

    Raises:
        LimitError: ``too_many_qubits`` past the reference's limits.
    """
    open_system = any(c.rate > 0 for c in spec.collapse)
    limit = max_open_qubits if open_system else max_closed_qubits
    if n > limit:
        kind = "open" if open_system else "closed"
        raise LimitError(
            f"the exact dynamics reference evolves {kind} systems of at most {limit} qubits, "
            f"got {n}",
            code="too_many_qubits",
        )
    h = observable_matrix(spec.hamiltonian, n)
    times = spec.times
    values: list[list[float]] = [[] for _ in spec.observables]
    if open_system:
        ops = [collapse_matrix(c, n) for c in spec.collapse if c.rate > 0]
        generator = liouvillian(h, ops)
        vec = np.outer(initial, initial.conj()).reshape(-1)
        dim = 1 << n
    else:
        generator = (-1j * h).tocsr()
        vec = np.asarray(initial, dtype=np.complex128)
    for i, t in enumerate(times):
        if i:
            vec = expm_multiply(generator * (t - times[i - 1]), vec)
        if open_system:
            got = density_expectations(vec.reshape(dim, dim), spec.observables)
        else:
            got = expectation_values(vec, list(spec.observables))
        for k, value in enumerate(got):
            values[k].append(value)
    return values


def reference_dynamics(
    circuit: Circuit, spec: DynamicsSpec, values: Mapping[str, float] | None = None
) -> DynamicsResult:
    """The exact result of a ``dynamics`` job: the circuit prepares the initial state.

    Args:
        circuit: The preparation circuit (measurements ignored).
        spec: What to evolve and report.
        values: Values of the circuit's named parameters.

    Raises:
        CircuitError: As ``reference.statevector``.
        LimitError: ``too_many_qubits`` past the reference's limits.
    """
    n = circuit.num_qubits
    ops = tuple(op for op in circuit.ops if op.name not in ("measure", "barrier"))
    prepared = statevector(msgspec.structs.replace(circuit, ops=ops), values)
    return DynamicsResult(times=list(spec.times), values=evolve(spec, prepared, n))


__all__ = [
    "collapse_matrix",
    "evolve",
    "liouvillian",
    "local_operator",
    "max_closed_qubits",
    "max_open_qubits",
    "observable_matrix",
    "reference_dynamics",
]
