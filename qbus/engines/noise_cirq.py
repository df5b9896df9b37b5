"""The qbus noise model on Cirq: channels inserted after each gate, density-matrix runs.

Part of the cirq engine (Cirq is imported here only when that engine runs).

Mapping (docs/engines.md, "Noise"): ``cirq.depolarize(p, n_qubits=k)`` is the Pauli
convention qbus uses, so ``p`` passes unchanged; ``cirq.amplitude_damp(γ)`` is the same
channel as ours. Every IR gate becomes exactly one Cirq operation (``to_cirq``), and
each is followed by the depolarising channel on its qubits and then damping on each of
them. ``cirq.DensityMatrixSimulator`` computes the final ρ; counts are drawn from its
diagonal with readout error applied (``density.result_from_density``), so only terminal
measurements are accepted.
"""

from __future__ import annotations

import time
from typing import Any

import cirq
import numpy as np

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.convert_cirq import line_qubits, to_cirq
from qbus.engines.density import result_from_density
from qbus.schemas.noise import NoiseModel

MAX_NOISY_QUBITS = 12
"""Widest noisy run: a 12-qubit density matrix is 256 MiB in complex128."""


def with_noise(program: cirq.Circuit, noise: NoiseModel) -> cirq.Circuit:
    """``program`` with the noise model's channels after every gate.

    Args:
        program: A measurement-free circuit from ``to_cirq``.
        noise: The job's noise model.
    """
    ops: list[Any] = []
    gamma = noise.amplitude_damping
    damp = cirq.amplitude_damp(gamma) if gamma > 0 else None
    for op in program.all_operations():
        ops.append(op)
        k = len(op.qubits)
        p = noise.depolarizing(k)
        if p > 0:
            ops.append(cirq.depolarize(p, n_qubits=k).on(*op.qubits))
        if damp is not None:
            ops.extend(damp.on(q) for q in op.qubits)
    # EARLIEST would let a channel slide before a gate on another qubit, which is the
    # same channel; keeping the order as written makes the circuit readable as is.
    return cirq.Circuit(ops, strategy=cirq.InsertStrategy.NEW)


def density_matrix(request: RunRequest) -> np.ndarray:
    """The final noisy density matrix of the request's circuit, in the IR's qubit order."""
    circuit = request.circuit
    n = circuit.num_qubits
    program = to_cirq(circuit, request.parameters, measurements=False)
    program = with_noise(program, request.noise or NoiseModel())
    sim = cirq.DensityMatrixSimulator(dtype=np.complex128, split_untangled_states=False)
    # Most significant first, so qubit 0 is the least significant bit as in the IR.
    order = list(reversed(line_qubits(n)))
    result = sim.simulate(program, qubit_order=order)
    return np.asarray(result.final_density_matrix, dtype=np.complex128)


def run_noisy(request: RunRequest) -> EngineResult:
    """Run a noisy ``sample`` or an ``expectation`` request on Cirq's density-matrix simulator."""
    start = time.perf_counter()
    return result_from_density(request, density_matrix(request), start, request.noise)
