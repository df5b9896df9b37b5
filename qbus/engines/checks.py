"""Request checks shared by every engine: the circuit-level ones ``Engine.validate`` runs.

They live apart from ``base`` and ``reference`` so that the base class, the reference
simulators and the frontends can all use them without importing one another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from qbus.errors import CircuitError, EngineError
from qbus.schemas.ir import Circuit

if TYPE_CHECKING:
    from qbus.engines.base import RunRequest


def check_terminal_measurements(circuit: Circuit) -> None:
    """Check that the circuit's measurements are terminal, in one pass over its ops.

    Raises:
        CircuitError: ``mid_circuit_measurement`` when a gate or reset acts on a qubit
            after it was measured, or a reset follows a gate on its qubit (a reset is
            only supported as the no-op it is on a fresh qubit).
    """
    touched = [False] * circuit.num_qubits  # a gate acted on it: a reset is no no-op
    measured = [False] * circuit.num_qubits
    for i, op in enumerate(circuit.ops):
        name = op.name
        if name == "barrier":
            continue
        if name == "measure":
            for q in op.qubits:
                measured[q] = True
            continue
        for q in op.qubits:
            if measured[q]:
                raise CircuitError(
                    f"'{name}' acts on qubit {q} after it was measured; only terminal "
                    "measurements are supported",
                    code="mid_circuit_measurement",
                    where=f"$.ops[{i}]",
                )
            if name == "reset":
                if touched[q]:
                    raise CircuitError(
                        f"reset of qubit {q} after a gate acted on it is not supported; "
                        "only a reset of a fresh qubit (a no-op) is",
                        code="mid_circuit_measurement",
                        where=f"$.ops[{i}]",
                    )
            else:
                touched[q] = True


def check_bound(circuit: Circuit, values: Mapping[str, float]) -> None:
    """Check that every named parameter of ``circuit`` has a value in ``values``.

    Raises:
        CircuitError: ``unbound_parameter``, naming the missing parameters.
    """
    missing = sorted(set(circuit.parameters) - set(values))
    if missing:
        raise CircuitError(
            f"parameter(s) {missing} have no value; pass them in the job's 'parameters'",
            code="unbound_parameter",
        )


def check_noisy_request(engine: str, request: RunRequest, max_qubits: int) -> None:
    """Checks every noisy engine makes on a noisy request, before any compute.

    Args:
        engine: The engine's name, for messages.
        request: The request (its noise model is non-trivial).
        max_qubits: The engine's widest noisy (density-matrix) run.

    Raises:
        EngineError: ``unsupported_method`` for a noisy ``statevector`` (the state is a
            density matrix, which qbus does not put on the wire); ``too_many_qubits``
            past ``max_qubits``; ``invalid_noise`` for a readout qubit out of range.
    """
    if request.method == "statevector":
        raise EngineError(
            "a noisy state is a density matrix, which is not a result qbus returns; use "
            "method 'sample' or 'expectation' with a noise model",
            code="unsupported_method",
        )
    n = request.circuit.num_qubits
    if n > max_qubits:
        raise EngineError(
            f"engine '{engine}' simulates noise on at most {max_qubits} qubits (a density "
            f"matrix of n qubits holds 4^n entries), the circuit has {n}",
            code="too_many_qubits",
        )
    assert request.noise is not None
    problem = request.noise.problem(n)
    if problem is not None:
        raise EngineError(f"{problem[0]} (at {problem[1]})", code="invalid_noise")


__all__ = ["check_bound", "check_noisy_request", "check_terminal_measurements"]
