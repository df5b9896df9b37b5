"""The qbus noise model on qiskit-aer: an Aer ``NoiseModel`` and the noisy runs.

Part of the qiskit-aer engine (Qiskit is imported here only when that engine runs).

Mapping (docs/engines.md, "Noise"): Aer's ``depolarizing_error(λ, k)`` is
``ρ ↦ (1-λ)ρ + λ Tr(ρ) I/2**k``, so the job's Pauli-convention probability ``p`` becomes
``λ = p · 4**k / (4**k - 1)``; ``amplitude_damping_error(γ)`` is the same channel as
ours, tensored over the gate's qubits and composed after the depolarising error; a
``ReadoutError`` with rows ``[[1-p01, p01], [p10, 1-p10]]`` is attached to each qubit's
measurements. Gate errors attach to every gate by its arity. Gates Aer's
``density_matrix`` method does not run (``ch``, ``crx``, ``cu``, ``cswap`` …) would be
transpiled into several gates, each then getting noise, so a noisy run gives them to Aer
as one ``unitary`` (labelled, so its noise is that of its arity) instead.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import msgspec
import numpy as np
from qiskit.circuit import CircuitInstruction
from qiskit.circuit.library import UnitaryGate
from qiskit.quantum_info import Operator
from qiskit_aer.library import SaveDensityMatrix
from qiskit_aer.noise import NoiseModel as AerNoiseModel
from qiskit_aer.noise import ReadoutError as AerReadoutError
from qiskit_aer.noise import amplitude_damping_error, depolarizing_error

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.convert_qiskit import GATE_CLASSES, to_qiskit
from qbus.engines.density import density_expectations, depolarizing_lambda
from qbus.errors import EngineError
from qbus.schemas.gates import GATES
from qbus.schemas.noise import NoiseModel


def _gate_error(noise: NoiseModel, arity: int) -> Any:
    error = None
    p = noise.depolarizing(arity)
    if p > 0:
        error = depolarizing_error(depolarizing_lambda(p, arity), arity)
    if noise.amplitude_damping > 0:
        damp = amplitude_damping_error(noise.amplitude_damping)
        damp_k = damp
        for _ in range(arity - 1):
            damp_k = damp_k.tensor(damp)
        # compose: this error first, then the damping.
        error = damp_k if error is None else error.compose(damp_k)
    return error


_PARALLEL_QUBITS = 14

_models: dict[tuple[bytes, tuple], AerNoiseModel] = {}


def aer_noise_model(noise: NoiseModel, names: tuple[tuple[str, int], ...]) -> AerNoiseModel:
    """The Aer ``NoiseModel`` of ``noise``, cached by the model's JSON form.

    Args:
        noise: The job's noise model.
        names: (Qiskit instruction name, arity) of every gate that gets gate noise.
    """
    key = (msgspec.json.encode(noise), names)
    model = _models.get(key)
    if model is not None:
        return model
    model = AerNoiseModel()
    by_arity: dict[int, list[str]] = {}
    for name, arity in names:
        by_arity.setdefault(arity, []).append(name)
    for arity, gate_names in sorted(by_arity.items()):
        error = _gate_error(noise, arity)
        if error is not None:
            model.add_all_qubit_quantum_error(error, gate_names, warnings=False)
    for qubit, r in sorted(noise.readout_errors().items()):
        model.add_readout_error(AerReadoutError(r.confusion()), [qubit], warnings=False)
    if len(_models) >= 64:
        _models.pop(next(iter(_models)))
    _models[key] = model
    return model


def noise_names(native: dict[str, str], foreign: frozenset[str]) -> tuple[tuple[str, int], ...]:
    """(Qiskit name or label, arity) of every IR gate as a noisy run hands it to Aer."""
    names = {(native[n], spec.num_qubits) for n, spec in GATES.items() if n not in foreign}
    names |= {(_label(n), GATES[n].num_qubits) for n in foreign}
    return tuple(sorted(names))


def _label(ir_name: str) -> str:
    # Aer's noise model matches an instruction by its label before its name, so each
    # foreign gate's unitary gets the noise of its own arity.
    return f"qbus_{ir_name}"


def run_noisy(
    sim: Any, lock: Any, request: RunRequest, foreign: frozenset[str], names: tuple
) -> EngineResult:
    """Run a noisy ``sample`` or an ``expectation`` request on Aer.

    ``expectation`` saves the final density matrix (Aer's ``density_matrix`` method)
    and evaluates the observables on it; ``sample`` runs the circuit with the noise
    model, ``shots`` and ``seed_simulator=seed`` (Aer picks density matrix or
    trajectories).

    Raises:
        EngineError: ``simulation_failed`` (retryable) when Aer reports a failure.
    """
    start = time.perf_counter()
    circuit = request.circuit
    noise = request.noise or NoiseModel()
    expectation = request.method == "expectation"
    qc = to_qiskit(circuit, request.parameters, measurements=not expectation)
    if foreign:
        by_qiskit_name = foreign_qiskit_names(foreign)
        for i, inst in enumerate(qc.data):
            ir_name = by_qiskit_name.get(inst.operation.name)
            if ir_name is not None:
                matrix = Operator(inst.operation).data
                gate = UnitaryGate(matrix, check_input=False, label=_label(ir_name))
                qc.data[i] = CircuitInstruction(gate, inst.qubits, inst.clbits)
    options: dict[str, Any] = {"noise_model": aer_noise_model(noise, names)}
    if expectation:
        qc._append(CircuitInstruction(SaveDensityMatrix(qc.num_qubits), tuple(qc.qubits), ()))
        options.update(shots=1, method="density_matrix")
    else:
        options.update(shots=request.shots)
    # A density matrix of n qubits costs what a 2n-qubit state does: below Aer's own
    # threshold one thread does the work, and an idle OpenMP pool only spins on a busy
    # machine (as in the noiseless path of the engine).
    width = 2 * circuit.num_qubits if expectation else circuit.num_qubits
    options["max_parallel_threads"] = 1 if width < _PARALLEL_QUBITS else 0
    with lock:
        result = sim.run(qc, seed_simulator=request.seed, **options).result()
    if not result.success:
        raise EngineError(
            f"qiskit-aer failed: {result.status}", code="simulation_failed", retryable=True
        )
    data = result.results[0].data
    if expectation:
        rho = np.asarray(data.density_matrix, dtype=np.complex128)
        return EngineResult(
            counts=None,
            statevector=None,
            seed=request.seed,
            run_seconds=time.perf_counter() - start,
            expectations=density_expectations(rho, request.observables),
        )
    fmt = f"0{circuit.num_clbits}b"
    counts = {format(int(key, 16), fmt): int(n) for key, n in data.counts.items()}
    return EngineResult(
        counts=counts, statevector=None, seed=request.seed, run_seconds=time.perf_counter() - start
    )


@lru_cache(maxsize=4)
def foreign_qiskit_names(foreign: frozenset[str]) -> dict[str, str]:
    """Qiskit name -> IR name of the IR gates Aer does not run natively."""

    return {GATE_CLASSES[n](*([0.0] * GATES[n].num_params)).name: n for n in foreign}
