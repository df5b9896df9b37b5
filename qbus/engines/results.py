"""Results built from a final state: what a state-vector engine's run returns."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qbus.engines.base import EngineResult, RunRequest
from qbus.schemas.ir import Circuit


def state_result(
    request: RunRequest,
    psi: np.ndarray,
    start: float,
    sample: Callable[[Circuit, np.ndarray, int, int], dict[str, int]],
) -> EngineResult:
    """The result of a run that computed the final state ``psi`` of the request's circuit.

    Args:
        request: A ``statevector`` (``psi`` is the result) or ``sample`` request.
        psi: The final state, ``complex128``, qubit 0 the LSB.
        start: ``perf_counter()`` time the run began.
        sample: ``(circuit, psi, shots, seed) -> counts``, the engine's way to draw.
    """
    if request.method == "statevector":
        return EngineResult.timed(request, start, statevector=psi)
    counts = sample(request.circuit, psi, request.shots, request.seed)
    return EngineResult.timed(request, start, counts=counts)


__all__ = ["state_result"]
