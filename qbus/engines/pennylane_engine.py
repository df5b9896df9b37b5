"""The pennylane engine: IR -> PennyLane operations -> ``default.qubit``.

PennyLane is imported here only; without it, importing this module raises
``MissingOptionalLibraryError`` with the ``pip install 'qbus[pennylane]'`` hint, which
the registry passes on.

The IR becomes a ``QuantumScript`` (a tape) of native PennyLane operations, run with
``qml.execute`` on a ``default.qubit`` device built per run with the request's seed, so
a seed reproduces its counts. Wires are the IR's qubit indices. PennyLane is big-endian
(the first wire is the most significant bit of a state or matrix index), the IR
little-endian; the state is reordered on the way out, and ``QubitUnitary`` gets the
reference matrix with its bit order reversed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.engines.checks import check_bound
from qbus.engines.kernels import big_endian_matrix, little_endian
from qbus.engines.params import numeric_params
from qbus.engines.reference import clbit_sources, counts_from_bits, gate_matrix
from qbus.errors import EngineError, MissingOptionalLibraryError
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import is_noisy

try:
    import pennylane as qml
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("pennylane", "pennylane", "the pennylane engine") from exc

_MAX_QUBITS = 24

from qbus.engines.noise_pennylane import (  # noqa: E402 - after the optional import
    MAX_NOISY_QUBITS,
    run_noisy,
)


def _adjoint(cls: type) -> Callable[..., Any]:
    return lambda wires: qml.adjoint(cls(wires))


# IR name -> builder of the PennyLane operation with exactly the IR gate's matrix
# (global phase included): called as ``builder(*params, wires=qubits)``. Every IR gate
# but ``cu`` has one; ``cu`` becomes a ``QubitUnitary``.
NATIVE: dict[str, Callable[..., Any]] = {
    "id": qml.Identity,
    "x": qml.PauliX,
    "y": qml.PauliY,
    "z": qml.PauliZ,
    "h": qml.Hadamard,
    "s": qml.S,
    "sdg": _adjoint(qml.S),
    "t": qml.T,
    "tdg": _adjoint(qml.T),
    "sx": qml.SX,
    "sxdg": _adjoint(qml.SX),
    "rx": qml.RX,
    "ry": qml.RY,
    "rz": qml.RZ,
    "p": qml.PhaseShift,
    "u1": qml.U1,
    "u2": qml.U2,
    "u": qml.U3,
    "cx": qml.CNOT,
    "cy": qml.CY,
    "cz": qml.CZ,
    "ch": qml.CH,
    "swap": qml.SWAP,
    "csx": lambda wires: qml.ctrl(qml.SX(wires[1]), control=wires[0]),
    "cp": qml.ControlledPhaseShift,
    "crx": qml.CRX,
    "cry": qml.CRY,
    "crz": qml.CRZ,
    "rxx": qml.IsingXX,
    "ryy": qml.IsingYY,
    "rzz": qml.IsingZZ,
    "ccx": qml.Toffoli,
    "cswap": qml.CSWAP,
}


def to_pennylane(circuit: Circuit, values: Mapping[str, float] | None = None) -> list[Any]:
    """The PennyLane operations of ``circuit``'s gates, on wires equal to IR qubits.

    Measurements, resets and barriers are left out (the engine accepts only terminal
    measurements, and resets of fresh qubits, which are no-ops).

    Args:
        circuit: The IR circuit.
        values: Values of the circuit's named parameters.

    Raises:
        CircuitError: ``unbound_parameter`` when a named parameter has no value.
    """
    values = values or {}
    check_bound(circuit, values)
    ops: list[Any] = []
    for op in circuit.ops:
        name = op.name
        if name in ("measure", "reset", "barrier"):
            continue
        params = numeric_params(op.params, values) if op.params else ()
        wires = list(op.qubits)
        build = NATIVE.get(name)
        if build is not None:
            ops.append(build(*params, wires=wires if len(wires) > 1 else wires[0]))
        else:
            m = big_endian_matrix(gate_matrix(name, params))
            ops.append(qml.QubitUnitary(m, wires=wires))
    return ops


class PennylaneEngine(Engine):
    """PennyLane's ``default.qubit`` device as a qbus engine.

    ``sample`` ends the tape with ``qml.sample`` over the measured qubits and runs it
    with ``shots`` on a device seeded with the request's seed; ``statevector`` ends it
    with ``qml.state()``. Only terminal measurements are accepted.
    """

    name = "pennylane"
    # Only noisy jobs send 'expectation': a density matrix on default.mixed.
    capabilities = Capabilities.state_vector(
        _MAX_QUBITS, {"expectation": MAX_NOISY_QUBITS}, noise=True
    )

    @property
    def version(self) -> str:
        """The installed PennyLane version."""
        return str(qml.__version__)

    def _run(self, request: RunRequest) -> EngineResult:
        """Convert and run ``request`` on a fresh seeded ``default.qubit``.

        Raises:
            EngineError: ``simulation_failed`` when PennyLane fails.
        """
        if request.method == "expectation" or is_noisy(request.noise):
            return run_noisy(request, to_pennylane(request.circuit, request.parameters))
        start = time.perf_counter()
        circuit = request.circuit
        n = circuit.num_qubits
        ops = to_pennylane(circuit, request.parameters)
        sv = request.method == "statevector"
        # A device per run: it is cheap, and its seed is what makes counts reproducible.
        dev = qml.device("default.qubit", wires=n, seed=request.seed)
        if sv:
            tape = qml.tape.QuantumScript(ops, [qml.state()])
        else:
            qubits = sorted(set(clbit_sources(circuit).values()))
            tape = qml.tape.QuantumScript(ops, [qml.sample(wires=qubits)], shots=request.shots)
        try:
            (out,) = qml.execute([tape], dev, diff_method=None)
        except Exception as exc:  # PennyLane raises many types; none is the caller's fault
            raise EngineError(f"pennylane failed: {exc}", code="simulation_failed") from exc
        if sv:
            # Wire 0 is the MSB of PennyLane's state.
            return EngineResult.timed(request, start, statevector=little_endian(out, n))
        bits = np.asarray(out).reshape(request.shots, len(qubits))
        return EngineResult.timed(request, start, counts=counts_from_bits(bits, qubits, circuit))
