"""Open systems on QuTiP: the ``dynamics`` method (``qutip.mesolve``) and noisy circuits.

Part of the qutip engine (QuTiP is imported here only when that engine runs).

QuTiP's tensor order makes the first subsystem the most significant bit, so IR qubit
``q`` is subsystem ``n - 1 - q`` (as in ``qutip_engine``); operators built here follow
that, and a density matrix read back with ``.full()`` is in the IR's order as is.

``dynamics``: the circuit's final ket is the initial state; ``mesolve`` integrates the
Lindblad equation with the spec's Hamiltonian and collapse operators (``sesolve``, the
Schrödinger equation, when there are none) and returns each observable's expectation at
each report time. The tolerances are tightened from QuTiP's defaults (``atol=1e-12``,
``rtol=1e-10``) so values agree with the exact reference far inside its 1e-6 bound.

Noise: the density matrix goes through each gate (``U ρ U†``) and then through the
noise model's Kraus operators (``Σ K ρ K†``, ``density.gate_channels``), each expanded
to the register with ``qutip.expand_operator``.
"""

from __future__ import annotations

import time

import numpy as np
import qutip

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.density import gate_channels, result_from_density
from qbus.engines.kernels import big_endian_matrix
from qbus.engines.params import numeric_params
from qbus.engines.reference import gate_matrix
from qbus.errors import EngineError
from qbus.schemas.dynamics import CollapseOperator, DynamicsResult, DynamicsSpec
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import NoiseModel
from qbus.schemas.pauli import Observable

MAX_DYNAMICS_QUBITS = 8
"""Widest ``dynamics`` run: a Liouvillian on 8 qubits acts on 65,536-entry vectors."""

MAX_NOISY_QUBITS = 8
"""Widest noisy circuit: gates and Kraus operators are expanded to the full register."""

_SOLVER_OPTIONS = {"atol": 1e-12, "rtol": 1e-10, "nsteps": 1_000_000, "store_states": False}

_SINGLE = {
    "X": qutip.sigmax(),
    "Y": qutip.sigmay(),
    "Z": qutip.sigmaz(),
    # sigmaz() is diag(1, -1) on basis(2, 0), basis(2, 1): |0⟩ is the +1 state, as in
    # the IR. σ⁻ = |0⟩⟨1| and σ⁺ = |1⟩⟨0| in that basis:
    "-": qutip.Qobj(np.array([[0, 1], [0, 0]], dtype=np.complex128)),
    "+": qutip.Qobj(np.array([[0, 0], [1, 0]], dtype=np.complex128)),
}


def _operator(factors: dict[int, str], n: int) -> qutip.Qobj:
    return qutip.tensor(
        [_SINGLE[factors[q]] if q in factors else qutip.qeye(2) for q in reversed(range(n))]
    )


def observable(obs: Observable, n: int) -> qutip.Qobj:
    """The ``Qobj`` of a Pauli-sum observable on ``n`` qubits."""
    out = 0 * qutip.qeye([2] * n)
    for term in obs.terms:
        out = out + term.coeff * _operator({q: p for p, q in term.factors()}, n)
    return out


def collapse(c: CollapseOperator, n: int) -> qutip.Qobj:
    """``sqrt(rate) * op`` of one collapse operator."""
    if c.kind == "pauli":
        factors = {q: p for p, q in c.factors()}
    else:
        assert c.qubit is not None
        factors = {c.qubit: {"dephasing": "Z", "decay": "-", "excitation": "+"}[c.kind]}
    return np.sqrt(c.rate) * _operator(factors, n)


def check_spec(engine: str, request: RunRequest) -> DynamicsSpec:
    """The request's dynamics spec, checked.

    Raises:
        EngineError: ``invalid_dynamics`` when it is missing or does not fit the circuit.
    """
    spec = request.dynamics
    if spec is None:
        raise EngineError(
            f"engine '{engine}': method 'dynamics' needs 'dynamics' in the job's options",
            code="invalid_dynamics",
        )
    problem = spec.problem(request.circuit.num_qubits)
    if problem is not None:
        raise EngineError(f"{problem[0]} (at {problem[1]})", code="invalid_dynamics")
    return spec


def run_dynamics(request: RunRequest, initial: qutip.Qobj) -> EngineResult:
    """Evolve ``initial`` (the circuit's final ket) as the request's dynamics spec says.

    Raises:
        EngineError: ``simulation_failed`` when the solver fails (e.g. too many steps).
    """
    start = time.perf_counter()
    spec = request.dynamics
    assert spec is not None
    n = request.circuit.num_qubits
    h = observable(spec.hamiltonian, n)
    c_ops = [collapse(c, n) for c in spec.collapse if c.rate > 0]
    e_ops = [observable(o, n) for o in spec.observables]
    try:
        result = qutip.mesolve(
            h, initial, list(spec.times), c_ops=c_ops, e_ops=e_ops, options=_SOLVER_OPTIONS
        )
    except Exception as exc:  # QuTiP's integrators raise plain Exceptions
        raise EngineError(f"qutip failed: {exc}", code="simulation_failed") from exc
    values = [[float(v) for v in np.real(np.asarray(e))] for e in result.expect]
    return EngineResult(
        counts=None,
        statevector=None,
        seed=request.seed,
        run_seconds=time.perf_counter() - start,
        dynamics=DynamicsResult(times=list(spec.times), values=values),
    )


def noisy_density_matrix(
    circuit: Circuit, values: dict[str, float], noise: NoiseModel
) -> np.ndarray:
    """The final noisy density matrix of ``circuit``, in the IR's order."""
    n = circuit.num_qubits
    dims = [2] * n
    rho = qutip.ket2dm(qutip.basis(dims, [0] * n))
    for op in circuit.ops:
        if op.name in ("measure", "reset", "barrier"):
            continue
        k = len(op.qubits)
        m = big_endian_matrix(gate_matrix(op.name, numeric_params(op.params, values)))
        targets = [n - 1 - q for q in op.qubits]
        u = qutip.expand_operator(
            qutip.Qobj(m, dims=[[2] * k, [2] * k]), dims=dims, targets=targets
        )
        rho = u @ rho @ u.dag()
        for kraus, qs in gate_channels(noise, op.qubits):
            kk = len(qs)
            tq = [n - 1 - q for q in qs]
            full = [
                qutip.expand_operator(
                    qutip.Qobj(big_endian_matrix(kr), dims=[[2] * kk, [2] * kk]),
                    dims=dims,
                    targets=tq,
                )
                for kr in kraus
            ]
            rho = sum((kr @ rho @ kr.dag() for kr in full[1:]), full[0] @ rho @ full[0].dag())
    return np.asarray(rho.full(), dtype=np.complex128)


def run_noisy(request: RunRequest) -> EngineResult:
    """Run a noisy ``sample`` or an ``expectation`` request on QuTiP density matrices."""
    start = time.perf_counter()
    rho = noisy_density_matrix(request.circuit, request.parameters, request.noise or NoiseModel())
    return result_from_density(request, rho, start, request.noise)
