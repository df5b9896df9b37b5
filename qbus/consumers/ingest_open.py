"""Ingest's checks of a job's noise model and ``dynamics`` spec (used by ``ingest``).

Everything here runs before the job is queued, so a malformed spec ends as a
JobRejected with ``invalid_noise`` or ``invalid_dynamics`` and the field path.
"""

from __future__ import annotations

from qbus.engines.lindblad import max_open_qubits
from qbus.errors import Reject
from qbus.schemas.events import JobSubmitted
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import is_noisy

MAX_DYNAMICS_QUBITS = 8
"""Widest ``dynamics`` job (qutip's limit: a Liouvillian on 4^8 entries)."""


def check_open_system(job: JobSubmitted, circuit: Circuit) -> None:
    """Check the job's noise model and dynamics spec against its method and circuit.

    Raises:
        Reject: ``invalid_noise`` (readout qubit out of range, noise on a
            ``statevector`` job); ``invalid_dynamics`` (missing or malformed spec, a
            spec on another method, a noise model on a dynamics job);
            ``too_many_qubits`` past the dynamics limit.
    """
    n = circuit.num_qubits
    if job.noise is not None:
        problem = job.noise.problem(n)
        if problem is not None:
            raise Reject(problem[0], code="invalid_noise", where=problem[1])
        if is_noisy(job.noise) and job.method == "statevector":
            raise Reject(
                "a noisy state is a density matrix, which qbus does not return; use method "
                "'sample' (counts) or 'expectation' with a noise model",
                code="invalid_noise",
                where="$.noise",
            )
    if job.method != "dynamics":
        if job.dynamics is not None:
            raise Reject(
                "'dynamics' is only read by method 'dynamics'",
                code="invalid_dynamics",
                where="$.dynamics",
            )
        return
    spec = job.dynamics
    if spec is None:
        raise Reject(
            "a 'dynamics' job needs 'dynamics': a Hamiltonian, report times and observables, "
            'e.g. {"hamiltonian": {"terms": [{"coeff": 1.0, "pauli": "X0"}]}, '
            '"times": [0, 0.5, 1], "observables": [{"terms": [{"coeff": 1.0, "pauli": "Z0"}]}]}',
            code="invalid_dynamics",
            where="$.dynamics",
        )
    if is_noisy(job.noise):
        raise Reject(
            "a 'dynamics' job takes its noise as collapse operators in 'dynamics.collapse', "
            "not as a gate noise model",
            code="invalid_dynamics",
            where="$.noise",
        )
    if n > MAX_DYNAMICS_QUBITS:
        raise Reject(
            f"the circuit has {n} qubits; dynamics jobs may have at most "
            f"{MAX_DYNAMICS_QUBITS} (verified exactly up to {max_open_qubits} with collapse "
            "operators)",
            code="too_many_qubits",
        )
    problem = spec.problem(n)
    if problem is not None:
        raise Reject(problem[0], code="invalid_dynamics", where=problem[1])
