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

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest, numeric_params
from qbus.engines.density import check_noisy_request
from qbus.engines.reference import check_terminal_measurements, distribution, gate_matrix
from qbus.errors import CircuitError, EngineError, MissingOptionalLibraryError
from qbus.schemas.gates import GATES
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


def _big_endian(m: np.ndarray) -> np.ndarray:
    k = m.shape[0].bit_length() - 1
    axes = [*reversed(range(k)), *reversed(range(k, 2 * k))]
    return np.asarray(m).reshape((2,) * (2 * k)).transpose(axes).reshape(m.shape)


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
    missing = sorted(set(circuit.parameters) - set(values))
    if missing:
        raise CircuitError(
            f"parameter(s) {missing} have no value; pass them in the job's 'parameters'",
            code="unbound_parameter",
        )
    n = circuit.num_qubits
    dims = [2] * n
    psi = qutip.basis(dims, [0] * n)
    for op in circuit.ops:
        if op.name in ("measure", "reset", "barrier"):
            continue
        k = len(op.qubits)
        m = _big_endian(gate_matrix(op.name, numeric_params(op.params, values)))
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
    capabilities = Capabilities(
        methods=("sample", "statevector", "sweep", "expectation", "dynamics"),
        max_qubits={
            "sample": _MAX_QUBITS,
            "statevector": _MAX_QUBITS,
            "sweep": _MAX_QUBITS,
            # Density matrices: the noisy 'expectation' and the Lindblad 'dynamics'.
            "expectation": MAX_NOISY_QUBITS,
            "dynamics": MAX_DYNAMICS_QUBITS,
        },
        gates=tuple(GATES),
        noise=True,
        batching=False,
        device="cpu",
    )

    @property
    def version(self) -> str:
        """The installed QuTiP version."""
        return str(qutip.__version__)

    def validate(self, request: RunRequest) -> None:
        """The base checks, then that every measurement is terminal.

        Raises:
            EngineError: As ``Engine.validate``; ``mid_circuit_measurement`` for a
                mid-circuit measurement or a reset after a gate.
            CircuitError: ``unbound_parameter``.
        """
        super().validate(request)
        try:
            check_terminal_measurements(request.circuit)
        except CircuitError as exc:
            raise EngineError(
                f"engine '{self.name}' runs only terminal measurements: {exc}",
                code="mid_circuit_measurement",
            ) from exc
        if request.method == "dynamics":
            check_spec(self.name, request)
            if is_noisy(request.noise):
                raise EngineError(
                    "a 'dynamics' job takes its noise as collapse operators, not a noise model",
                    code="invalid_dynamics",
                )
        elif is_noisy(request.noise):
            limit = self.capabilities.max_qubits["expectation"]
            check_noisy_request(self.name, request, limit)

    def run(self, request: RunRequest) -> EngineResult:
        """Validate and run ``request``.

        Raises:
            EngineError, CircuitError: As ``validate``, before any compute.
        """
        self.validate(request)
        if request.method == "sweep":
            return self.run_sweep(request)
        if request.method == "dynamics":
            return run_dynamics(request, final_state(request.circuit, request.parameters))
        if request.method == "expectation" or is_noisy(request.noise):
            return run_noisy(request)
        start = time.perf_counter()
        circuit = request.circuit
        psi = final_state(circuit, request.parameters)
        state = np.asarray(psi.full(), dtype=np.complex128).reshape(-1)
        if request.method == "statevector":
            return EngineResult(
                counts=None,
                statevector=state,
                seed=request.seed,
                run_seconds=time.perf_counter() - start,
            )
        dist = distribution(circuit, state)
        keys = sorted(dist)
        p = np.fromiter((dist[k] for k in keys), dtype=np.float64, count=len(keys))
        p /= p.sum()
        draws = np.random.default_rng(request.seed).multinomial(request.shots, p)
        return EngineResult(
            counts={k: int(c) for k, c in zip(keys, draws, strict=True) if c},
            statevector=None,
            seed=request.seed,
            run_seconds=time.perf_counter() - start,
        )
