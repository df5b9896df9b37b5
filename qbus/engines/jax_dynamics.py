"""The ``dynamics`` method on JAX: exact propagators, jitted, for small systems.

Part of the jax engine (JAX is imported here only when that engine runs).

* Closed systems (no collapse operator with a positive rate): ``H = V Λ V†`` once
  (``jnp.linalg.eigh``), then every report time at once,
  ``ψ(t) = V exp(-iΛ(t - t₀)) V† ψ₀``, and ``⟨O⟩ = ψ† O ψ`` for all times in one
  ``einsum``. Up to ``MAX_CLOSED_QUBITS``.
* Open systems: the dense Lindblad superoperator (the same row-major convention as
  ``lindblad.liouvillian``), one propagator ``expm(L Δt)`` per distinct step
  (``jax.scipy.linalg.expm``, Padé with scaling and squaring), applied step by step.
  Up to ``MAX_OPEN_QUBITS``: a 5-qubit Liouvillian is 1024 x 1024.

Both run in complex128 when JAX has 64-bit types enabled (the default jax engine turns
them on), so values agree with the scipy reference far inside its 1e-6 bound.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from qbus.engines import lindblad
from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.jax_precision import highest_precision
from qbus.errors import EngineError
from qbus.schemas.dynamics import DynamicsResult, DynamicsSpec

MAX_CLOSED_QUBITS = 12
"""Widest closed-system dynamics job (a dense 4096 x 4096 Hamiltonian)."""

MAX_OPEN_QUBITS = 5
"""Widest open-system dynamics job (a dense 1024 x 1024 Liouvillian)."""


def is_open(spec: DynamicsSpec) -> bool:
    """Whether the spec has a collapse operator with a positive rate."""
    return any(c.rate > 0 for c in spec.collapse)


def check_dynamics_request(request: RunRequest) -> DynamicsSpec:
    """The request's spec, checked for the jax engine.

    Raises:
        EngineError: ``invalid_dynamics`` (missing or malformed spec, a noise model);
            ``too_many_qubits`` past the open-system limit.
    """
    spec = request.dynamics
    n = request.circuit.num_qubits
    if spec is None:
        raise EngineError(
            "engine 'jax': method 'dynamics' needs 'dynamics' in the job's options",
            code="invalid_dynamics",
        )
    problem = spec.problem(n)
    if problem is not None:
        raise EngineError(f"{problem[0]} (at {problem[1]})", code="invalid_dynamics")
    if is_open(spec) and n > MAX_OPEN_QUBITS:
        raise EngineError(
            f"engine 'jax' evolves open systems of at most {MAX_OPEN_QUBITS} qubits (a dense "
            f"4^n Liouvillian), the circuit has {n}; use engine 'qutip'",
            code="too_many_qubits",
        )
    return spec


@jax.jit
@highest_precision
def _closed(h: jax.Array, psi0: jax.Array, dts: jax.Array, obs: jax.Array) -> jax.Array:
    # obs: (k, d, d); returns (k, T).
    lam, v = jnp.linalg.eigh(h)
    c0 = v.conj().T @ psi0
    phases = jnp.exp(-1j * jnp.outer(dts, lam))  # (T, d)
    states = (phases * c0[None, :]) @ v.T  # (T, d): row t is V (phase_t * c0)
    return jnp.einsum("ti,kij,tj->kt", states.conj(), obs, states).real


@jax.jit
@highest_precision
def _propagator(generator: jax.Array, dt: jax.Array) -> jax.Array:
    return jsl.expm(generator * dt)


@jax.jit
@highest_precision
def _traces(rho: jax.Array, obs: jax.Array) -> jax.Array:
    d = obs.shape[-1]
    # Tr(ρ O) = Σ_ij ρ_ij O_ji.
    return jnp.einsum("ij,kji->k", rho.reshape(d, d), obs).real


def run_dynamics(request: RunRequest, psi0: np.ndarray) -> EngineResult:
    """Evolve ``psi0`` (the circuit's final state, IR order) as the request's spec says."""
    start = time.perf_counter()
    spec = request.dynamics
    assert spec is not None
    n = request.circuit.num_qubits
    ctype = jnp.complex128 if jax.config.read("jax_enable_x64") else jnp.complex64
    h = lindblad.observable_matrix(spec.hamiltonian, n).toarray()
    obs = jnp.asarray(
        np.stack([lindblad.observable_matrix(o, n).toarray() for o in spec.observables]),
        dtype=ctype,
    )
    times = np.asarray(spec.times, dtype=np.float64)
    if not is_open(spec):
        values = _closed(
            jnp.asarray(h, dtype=ctype),
            jnp.asarray(psi0, dtype=ctype),
            jnp.asarray(times - times[0]),
            obs,
        )
        out = np.asarray(values, dtype=np.float64)
    else:
        ops = [lindblad.collapse_matrix(c, n) for c in spec.collapse if c.rate > 0]
        generator = jnp.asarray(
            lindblad.liouvillian(lindblad.observable_matrix(spec.hamiltonian, n), ops).toarray(),
            dtype=ctype,
        )
        rho = jnp.asarray(np.outer(psi0, psi0.conj()).reshape(-1), dtype=ctype)
        columns = [_traces(rho, obs)]
        # Evenly spaced times share one propagator (a step's float may differ in its last
        # bits, which gives a second one at most a few times).
        propagators: dict[float, jax.Array] = {}
        for dt in np.diff(times):
            step = propagators.get(float(dt))
            if step is None:
                step = propagators[float(dt)] = _propagator(generator, jnp.asarray(dt))
            rho = jnp.matmul(step, rho, precision=jax.lax.Precision.HIGHEST)
            columns.append(_traces(rho, obs))
        out = np.asarray(jnp.stack(columns, axis=1), dtype=np.float64)
    return EngineResult(
        counts=None,
        statevector=None,
        seed=request.seed,
        run_seconds=time.perf_counter() - start,
        dynamics=DynamicsResult(times=list(spec.times), values=out.tolist()),
    )
