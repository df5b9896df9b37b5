"""The qbus noise model on PennyLane: channels on the ``default.mixed`` device.

Part of the pennylane engine (PennyLane is imported here only when that engine runs).

Mapping (docs/engines.md, "Noise"): ``qml.DepolarizingChannel(p)`` is the Pauli
convention qbus uses, so ``p`` passes unchanged; on two or more qubits the same channel
is a ``qml.QubitChannel`` of its ``4**k`` Kraus operators (``density.depolarizing_kraus``,
symmetric in its qubits, so PennyLane's big-endian order does not matter);
``qml.AmplitudeDamping(γ)`` is the same channel as ours. The device returns the final
density matrix; counts are drawn from its diagonal with readout error applied
(``density.result_from_density``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pennylane as qml

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.density import big_endian_density, depolarizing_kraus, result_from_density
from qbus.errors import EngineError
from qbus.schemas.noise import NoiseModel

MAX_NOISY_QUBITS = 10
"""Widest noisy run on ``default.mixed`` (a 4^n density matrix, copied per channel)."""


def with_noise(ops: list[Any], noise: NoiseModel) -> list[Any]:
    """``ops`` (one PennyLane operation per IR gate) with the channels after each."""
    out: list[Any] = []
    gamma = noise.amplitude_damping
    for op in ops:
        out.append(op)
        wires = list(op.wires)
        k = len(wires)
        p = noise.depolarizing(k)
        if p > 0:
            if k == 1:
                out.append(qml.DepolarizingChannel(p, wires=wires[0]))
            else:
                out.append(qml.QubitChannel(depolarizing_kraus(p, k), wires=wires))
        if gamma > 0:
            out.extend(qml.AmplitudeDamping(gamma, wires=w) for w in wires)
    return out


def run_noisy(request: RunRequest, ops: list[Any]) -> EngineResult:
    """Run a noisy ``sample`` or an ``expectation`` request on ``default.mixed``.

    Args:
        request: The request.
        ops: Its gates as PennyLane operations (``to_pennylane``).

    Raises:
        EngineError: ``simulation_failed`` when PennyLane fails.
    """
    start = time.perf_counter()
    noise = request.noise or NoiseModel()
    n = request.circuit.num_qubits
    dev = qml.device("default.mixed", wires=n)
    tape = qml.tape.QuantumScript(with_noise(ops, noise), [qml.density_matrix(wires=range(n))])
    try:
        (out,) = qml.execute([tape], dev, diff_method=None)
    except Exception as exc:  # PennyLane raises many types; none is the caller's fault
        raise EngineError(f"pennylane failed: {exc}", code="simulation_failed") from exc
    rho = big_endian_density(np.asarray(out, dtype=np.complex128), n)
    return result_from_density(request, rho, start, noise)
