"""VQE: scipy's optimiser on the outside, energies from ``sweep`` jobs on the bus.

Each energy evaluation is one ``sweep`` job with the Hamiltonian as its observable
(exact expectation values from the final state, on any engine that sweeps). With
``L-BFGS-B`` the job carries ``1 + 2P`` points: the energy and, by the parameter-shift
rule, its exact gradient, so one job per optimiser evaluation either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import minimize

from qbus.errors import SchemaError
from qbus.frontends.job_template import Optimizer, to_observable
from qbus.frontends.qasm import parse_qasm
from qbus.producers.ansatz import ansatz_circuit, check_parameter_shift, without_measurements
from qbus.producers.template_result import Progress, TemplateResult
from qbus.schemas.pauli import Observable

if TYPE_CHECKING:
    from qbus.producers.templates import Session
    from qbus.schemas.ir import Circuit

EXACT_LIMIT = 12
"""Qubits up to which the exact ground energy is computed for comparison."""

_PAULI = {
    "X": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "Z": np.array([[1, 0], [0, -1]], dtype=np.complex128),
}


def pauli_matrix(observable: Observable, num_qubits: int) -> np.ndarray:
    """The dense matrix of a Pauli sum, qubit 0 the least significant bit."""
    dim = 2**num_qubits
    out = np.zeros((dim, dim), dtype=np.complex128)
    for term in observable.terms:
        factors = dict((q, p) for p, q in term.factors())
        m = np.ones((1, 1), dtype=np.complex128)
        for q in reversed(range(num_qubits)):  # most significant qubit first in kron
            m = np.kron(m, _PAULI.get(factors.get(q, "I"), np.eye(2)))
        out += term.coeff * m
    return out


def ground_energy(observable: Observable, num_qubits: int) -> float:
    """Lowest eigenvalue of the Pauli sum, by dense diagonalisation."""
    return float(np.linalg.eigvalsh(pauli_matrix(observable, num_qubits))[0])


def initial_point(optimizer: Optimizer, size: int, low: float, high: float) -> np.ndarray:
    """The optimiser's start: ``initial_point`` or seeded uniform values in [low, high].

    Raises:
        SchemaError: ``initial_point`` has the wrong length.
    """
    if optimizer.initial_point is not None:
        if len(optimizer.initial_point) != size:
            raise SchemaError(
                f"initial_point has {len(optimizer.initial_point)} values; the circuit has "
                f"{size} parameters",
                where="$.optimizer.initial_point",
            )
        return np.array(optimizer.initial_point, dtype=np.float64)
    return np.random.default_rng(optimizer.seed).uniform(low, high, size)


def minimise(
    session: Session,
    circuit: Circuit,
    observable: Observable,
    optimizer: Optimizer,
    x0: np.ndarray,
    progress: Progress,
    label: str = "E",
) -> tuple[Any, list[float], int]:
    """Minimise ``⟨observable⟩`` over the circuit's parameters with scipy.

    Returns:
        scipy's result, the energy after each iteration, the number of evaluations.
    """
    names = list(circuit.parameters)
    gradient = optimizer.method == "L-BFGS-B"
    if gradient:
        check_parameter_shift(circuit)
    seen: dict[bytes, float] = {}
    evaluations = 0

    def point(x: np.ndarray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(names, x, strict=True)}

    def energy(x: np.ndarray) -> float:
        nonlocal evaluations
        evaluations += 1
        value = float(session.expectations(circuit, [observable], [point(x)])[0, 0])
        seen[x.tobytes()] = value
        return value

    def energy_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        points = [point(x)]
        for k in range(len(x)):
            for shift in (np.pi / 2, -np.pi / 2):
                shifted = x.copy()
                shifted[k] += shift
                points.append(point(shifted))
        values = session.expectations(circuit, [observable], points)[:, 0]
        grad = (values[1::2] - values[2::2]) / 2
        seen[x.tobytes()] = float(values[0])
        return float(values[0]), grad

    trajectory: list[float] = []

    def callback(xk: np.ndarray) -> None:
        value = seen.get(np.asarray(xk, dtype=np.float64).tobytes())
        if value is None:
            value = energy(np.asarray(xk, dtype=np.float64))
        trajectory.append(value)
        progress(f"iter {len(trajectory):>3}  {label} = {value:+.8f}  (evaluations {evaluations})")

    options: dict[str, Any] = {"maxiter": optimizer.maxiter}
    result = minimize(
        energy_and_gradient if gradient else energy,
        x0,
        method=optimizer.method,
        jac=gradient or None,
        tol=optimizer.tol,
        options=options,
        callback=callback,
    )
    return result, trajectory, evaluations


def run_vqe(session: Session, progress: Progress) -> TemplateResult:
    """Minimise the Hamiltonian's energy over the ansatz (or parametrised circuit)."""

    t = session.template
    if t.ansatz is not None:
        circuit = ansatz_circuit(t.ansatz)
    else:
        assert t.circuit is not None
        circuit = without_measurements(parse_qasm(t.circuit)[0])
    if not circuit.parameters:
        raise SchemaError("VQE needs a circuit with named parameters", where="$.circuit")
    observable = to_observable(t.hamiltonian, "hamiltonian")
    optimizer = t.optimizer or Optimizer()
    x0 = initial_point(optimizer, len(circuit.parameters), -np.pi / 4, np.pi / 4)
    progress(
        f"VQE: {circuit.num_qubits} qubits, {len(circuit.parameters)} parameters, "
        f"{len(observable.terms)} Pauli terms, {optimizer.method} on {session.engine}"
    )
    result, trajectory, evaluations = minimise(
        session, circuit, observable, optimizer, x0, progress
    )
    energy = float(result.fun)
    summary: dict[str, Any] = {
        "energy": energy,
        "parameters": dict(zip(circuit.parameters, map(float, result.x), strict=True)),
        "trajectory": trajectory,
        "iterations": len(trajectory),
        "evaluations": evaluations,
        "optimizer": optimizer.method,
        "converged": bool(result.success),
        "message": str(result.message),
    }
    lines = [
        f"VQE energy: {energy:+.8f} after {len(trajectory)} iterations, {evaluations} "
        f"evaluations ({optimizer.method}: {result.message})"
    ]
    n = max(circuit.num_qubits, t.hamiltonian_qubits())
    if n <= EXACT_LIMIT:
        exact = ground_energy(observable, n)
        summary["exact"] = exact
        summary["error"] = energy - exact
        lines.append(f"exact ground energy: {exact:+.8f}  (error {energy - exact:+.2e})")
    return TemplateResult(t.name or "", "vqe", session.engine, summary, lines)
