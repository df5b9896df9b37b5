"""The qbus noise model on Braket: noise instructions on ``LocalSimulator("braket_dm")``.

Part of the braket engine (the Braket SDK is imported here only when that engine runs).

Mapping (docs/engines.md, "Noise"): Braket's ``Depolarizing(p)`` and
``TwoQubitDepolarizing(p)`` are the Pauli convention qbus uses, so ``p`` passes
unchanged (past their ranges, 3/4 and 15/16, the same channel goes as a ``Kraus``
instruction); ``AmplitudeDamping(γ)`` is the same channel as ours. Braket's noise
instructions act on at most two qubits, so depolarising noise after a three-qubit gate
(``ccx``, ``cswap``) is refused with ``noise_unsupported``. The density matrix comes
back as a ``DensityMatrix`` result type; counts are drawn from its diagonal with readout
error applied (``density.result_from_density``).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from braket.circuits import Circuit as BraketCircuit
from braket.circuits import Instruction, noises
from braket.devices import LocalSimulator

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.convert_braket import to_braket
from qbus.engines.density import big_endian_density, depolarizing_kraus, result_from_density
from qbus.errors import EngineError
from qbus.schemas.gates import DIRECTIVES
from qbus.schemas.noise import NoiseModel

_SKIP = frozenset({"measure", "reset", "barrier"})


def check_braket_noise(request: RunRequest) -> None:
    """Refuse what Braket's noise instructions cannot express.

    Raises:
        EngineError: ``noise_unsupported`` for depolarising noise after a gate on three
            or more qubits.
    """
    noise = request.noise
    if noise is None or noise.depolarizing_2q == 0:
        return
    for i, op in enumerate(request.circuit.ops):
        if op.name not in DIRECTIVES and len(op.qubits) > 2:
            raise EngineError(
                f"engine 'braket' applies noise channels on at most two qubits; "
                f"depolarizing_2q after the {len(op.qubits)}-qubit gate '{op.name}' "
                f"cannot be expressed (at $.ops[{i}]; use qiskit-aer, cirq, qutip or pennylane)",
                code="noise_unsupported",
            )


def _depolarizing(p: float, k: int) -> Any:
    if k == 1 and p <= 0.75:
        return noises.Depolarizing(p)
    if k == 2 and p <= 15 / 16:
        return noises.TwoQubitDepolarizing(p)
    return noises.Kraus(depolarizing_kraus(p, k), display_name="DEPO")


def with_noise(request: RunRequest, noise: NoiseModel) -> BraketCircuit:
    """The Braket circuit of the request with noise instructions after every gate."""
    plain = to_braket(request.circuit, request.parameters)
    n = request.circuit.num_qubits
    # to_braket starts with one identity per qubit (so idle qubits stay in the
    # result), then one instruction per IR gate, in order: the gates are what follows.
    gates = [op for op in request.circuit.ops if op.name not in _SKIP]
    instructions = list(plain.instructions)
    assert len(instructions) == n + len(gates)
    bc = BraketCircuit()
    for inst in instructions[:n]:
        bc.add_instruction(inst)
    damp = noises.AmplitudeDamping(noise.amplitude_damping) if noise.amplitude_damping else None
    for inst, op in zip(instructions[n:], gates, strict=True):
        bc.add_instruction(inst)
        k = len(op.qubits)
        p = noise.depolarizing(k)
        if p > 0:
            bc.add_instruction(Instruction(_depolarizing(p, k), list(op.qubits)))
        if damp is not None:
            for q in op.qubits:
                bc.add_instruction(Instruction(damp, q))
    return bc


def run_noisy(sim: LocalSimulator, lock: Any, request: RunRequest) -> EngineResult:
    """Run a noisy ``sample`` or an ``expectation`` request on ``braket_dm``.

    Raises:
        EngineError: ``simulation_failed`` when Braket fails.
    """
    start = time.perf_counter()
    noise = request.noise or NoiseModel()
    n = request.circuit.num_qubits
    bc = with_noise(request, noise)
    bc.density_matrix()
    try:
        with lock, warnings.catch_warnings():
            # Readout-only noise leaves the circuit noise-free, which Braket warns about;
            # the density matrix is still what the readout is drawn from.
            warnings.filterwarnings("ignore", message="You are running a noise-free circuit")
            result = sim.run(bc, shots=0).result()
    except Exception as exc:  # Braket raises plain ValueError/RuntimeError
        raise EngineError(f"braket failed: {exc}", code="simulation_failed") from exc
    rho = big_endian_density(np.asarray(result.values[0], dtype=np.complex128), n)
    return result_from_density(request, rho, start, noise)
