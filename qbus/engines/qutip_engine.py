"""The qutip engine: circuits as unitaries on QuTiP ``Qobj`` states.

QuTiP is imported here only; without it, importing this module raises
``MissingOptionalLibraryError`` with the ``pip install 'qbus[qutip]'`` hint, which the
registry passes on.

Each gate's ``reference.gate_matrix`` becomes a ``Qobj`` expanded to the full register
with ``qutip.expand_operator`` and applied to the state ket. QuTiP's tensor order makes
the first subsystem the most significant bit, so IR qubit ``q`` is subsystem
``n - 1 - q`` and a gate's matrix gets its bit order reversed; the full ket then comes
out in the IR's order as is. Full operators are built per gate, so the width is kept
modest. ``sample`` draws from the exact distribution with ``numpy``'s
``default_rng(seed)`` (only terminal measurements are accepted).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.engines.checks import check_bound
from qbus.engines.kernels import big_endian_matrix
from qbus.engines.params import numeric_params
from qbus.engines.reference import gate_matrix, sample_state
from qbus.engines.results import state_result
from qbus.errors import EngineError, MissingOptionalLibraryError
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import is_noisy

try:
    import qutip
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("qutip", "qutip", "the qutip engine") from exc

_MAX_QUBITS = 14

from qbus.engines.qutip_open import (  # noqa: E402 - after the optional import of qutip
    MAX_DYNAMICS_QUBITS,
    MAX_NOISY_QUBITS,
    check_spec,
    run_dynamics,
    run_noisy,
)


def final_state(circuit: Circuit, values: Mapping[str, float] | None = None) -> qutip.Qobj:
    """The final ket of ``circuit`` from ``|0...0>``, measurements and resets skipped.

    Args:
        circuit: The IR circuit (terminal measurements only).
        values: Values of the circuit's named parameters.

    Returns:
        A ket ``Qobj`` with dims ``[[2]*n, [1]*n]``; subsystem ``k`` is IR qubit ``n-1-k``.

    Raises:
        CircuitError: ``unbound_parameter`` when a named parameter has no value.
    """
    values = values or {}
    check_bound(circuit, values)
    n = circuit.num_qubits
    dims = [2] * n
    psi = qutip.basis(dims, [0] * n)
    for op in circuit.ops:
        if op.name in ("measure", "reset", "barrier"):
            continue
        k = len(op.qubits)
        m = big_endian_matrix(gate_matrix(op.name, numeric_params(op.params, values)))
        gate = qutip.Qobj(m, dims=[[2] * k, [2] * k])
        targets = [n - 1 - q for q in op.qubits]
        psi = qutip.expand_operator(gate, dims=dims, targets=targets) @ psi
    return psi


class QutipEngine(Engine):
    """QuTiP ``Qobj`` algebra as a qbus engine.

    ``statevector`` returns the final ket; ``sample`` draws ``shots`` outcomes from its
    exact distribution over the measured qubits with ``numpy.random.default_rng(seed)``,
    so a seed reproduces its counts. Only terminal measurements are accepted.
    """

    name = "qutip"
    # Density matrices: the noisy 'expectation' and the Lindblad 'dynamics'.
    capabilities = Capabilities.state_vector(
        _MAX_QUBITS,
        {"expectation": MAX_NOISY_QUBITS, "dynamics": MAX_DYNAMICS_QUBITS},
        noise=True,
    )

    @property
    def version(self) -> str:
        """The installed QuTiP version."""
        return str(qutip.__version__)

    def _check(self, request: RunRequest) -> None:
        """A ``dynamics`` request's spec, and that it brings no noise model.

        Raises:
            EngineError: ``invalid_dynamics``.
        """
        if request.method == "dynamics":
            check_spec(self.name, request)
            if is_noisy(request.noise):
                raise EngineError(
                    "a 'dynamics' job takes its noise as collapse operators, not a noise model",
                    code="invalid_dynamics",
                )

    def _run(self, request: RunRequest) -> EngineResult:
        if request.method == "dynamics":
            return run_dynamics(request, final_state(request.circuit, request.parameters))
        if request.method == "expectation" or is_noisy(request.noise):
            return run_noisy(request)
        start = time.perf_counter()
        psi = final_state(request.circuit, request.parameters)
        state = np.asarray(psi.full(), dtype=np.complex128).reshape(-1)
        return state_result(request, state, start, sample_state)
