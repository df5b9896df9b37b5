"""Conversion from the qbus IR to ``cirq.Circuit``.

Part of the cirq and qsim engines: Cirq is imported here and in ``cirq_engine.py`` only,
so the rest of qbus runs without it.

Qubit ``i`` of the IR is ``cirq.LineQubit(i)``. Every IR gate maps to a Cirq gate with
exactly the IR's matrix, global phase included, so a state vector agrees with the
reference amplitude by amplitude (not only up to phase):

* where a native Cirq gate has the identical matrix it is used (``cirq.rx`` is
  ``exp(-i x X/2)``, ``ZPowGate(exponent=l/pi)`` is ``p(l)``, ``X**0.5`` is ``sx``,
  ``XXPowGate(exponent=t/pi, global_shift=-0.5)`` is ``rxx(t)``, ``ControlledGate(rx)``
  is ``crx`` …): native gates keep Cirq's fast ``_apply_unitary_`` paths and qsim's own
  gate kernels;
* ``u``, ``u2`` and ``cu`` have no phase-identical native gate and become
  ``cirq.MatrixGate`` of ``reference.gate_matrix``.

Matrix order: ``gate_matrix`` uses Qiskit's convention (the first listed qubit is the
*least* significant bit of the matrix index) while Cirq's ``MatrixGate`` is big-endian
(the first qubit is the *most* significant). Rather than permute the matrix, a
``MatrixGate`` is applied to the op's qubits in reverse order, which is the same thing.

Measurements use one key per clbit (``c0``, ``c1`` …); a clbit written twice repeats its
key, and the last write is what the clbit holds (``counts_from_records``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qbus.engines.checks import check_bound
from qbus.engines.params import numeric_params
from qbus.engines.reference import gate_matrix
from qbus.errors import MissingOptionalLibraryError
from qbus.schemas.ir import Circuit

try:
    import cirq
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("cirq-core", "cirq", "the cirq engine") from exc

_PI = math.pi

# Parameterless gates: built once; Cirq gates are immutable values.
FIXED_GATES: dict[str, Any] = {
    "id": cirq.I,
    "x": cirq.X,
    "y": cirq.Y,
    "z": cirq.Z,
    "h": cirq.H,
    "s": cirq.S,  # Z**0.5 = diag(1, i)
    "sdg": cirq.ZPowGate(exponent=-0.5),
    "t": cirq.T,
    "tdg": cirq.ZPowGate(exponent=-0.25),
    "sx": cirq.XPowGate(exponent=0.5),  # (1+i)/2 [[1, -i], [-i, 1]] = Qiskit's SX
    "sxdg": cirq.XPowGate(exponent=-0.5),
    "cx": cirq.CNOT,
    "cy": cirq.ControlledGate(cirq.Y),
    "cz": cirq.CZ,
    "ch": cirq.ControlledGate(cirq.H),
    "swap": cirq.SWAP,
    "csx": cirq.ControlledGate(cirq.XPowGate(exponent=0.5)),
    "ccx": cirq.CCX,
    "cswap": cirq.CSWAP,
}


def _matrix(name: str) -> Callable[..., Any]:
    # The reference matrix itself, built without Cirq's unitarity check (it is exact).
    def build(*params: float) -> Any:
        return cirq.MatrixGate(gate_matrix(name, params), unitary_check=False)

    return build


# Parametrised gates: angle(s) -> Cirq gate with the IR's exact matrix.
PARAM_GATES: dict[str, Callable[..., Any]] = {
    "rx": cirq.rx,
    "ry": cirq.ry,
    "rz": cirq.rz,
    "p": lambda lam: cirq.ZPowGate(exponent=lam / _PI),
    "u1": lambda lam: cirq.ZPowGate(exponent=lam / _PI),
    "u2": _matrix("u2"),
    "u": _matrix("u"),
    "cp": lambda lam: cirq.CZPowGate(exponent=lam / _PI),
    "crx": lambda t: cirq.ControlledGate(cirq.rx(t)),
    "cry": lambda t: cirq.ControlledGate(cirq.ry(t)),
    "crz": lambda t: cirq.ControlledGate(cirq.rz(t)),
    "cu": _matrix("cu"),
    "rxx": lambda t: cirq.XXPowGate(exponent=t / _PI, global_shift=-0.5),
    "ryy": lambda t: cirq.YYPowGate(exponent=t / _PI, global_shift=-0.5),
    "rzz": lambda t: cirq.ZZPowGate(exponent=t / _PI, global_shift=-0.5),
}

# Gates applied through a little-endian reference matrix: their qubits go in reversed.
_REVERSED = frozenset({"cu"})

_RESET = cirq.ResetChannel()
_qubits: tuple[Any, ...] = tuple(cirq.LineQubit.range(32))
_measure_gates: dict[int, Any] = {}


def line_qubits(n: int) -> Sequence[Any]:
    """``cirq.LineQubit(0) .. cirq.LineQubit(n - 1)``, from a process-wide cache."""
    global _qubits
    if len(_qubits) < n:
        # A new tuple, swapped in whole: engines run in worker threads, and a list
        # extended by two threads at once could end up with qubits out of place.
        _qubits = tuple(cirq.LineQubit.range(n))
    return _qubits[:n]


def clbit_key(clbit: int) -> str:
    """The measurement key of clbit ``clbit``."""
    return f"c{clbit}"


def _measure_gate(clbit: int) -> Any:
    gate = _measure_gates.get(clbit)
    if gate is None:
        gate = _measure_gates[clbit] = cirq.MeasurementGate(1, key=clbit_key(clbit))
    return gate


def to_cirq(
    circuit: Circuit,
    values: Mapping[str, float] | None = None,
    *,
    measurements: bool = True,
) -> cirq.Circuit:
    """Build the ``cirq.Circuit`` of ``circuit``, with named parameters bound.

    Args:
        circuit: The IR circuit.
        values: Values of the circuit's named parameters.
        measurements: Keep measurements and resets; False leaves them out (for a
            state-vector run, where measurements are terminal and resets act on fresh
            qubits, so both are no-ops on the state).

    Returns:
        A circuit on ``cirq.LineQubit(0..num_qubits-1)``; barriers are dropped.

    Raises:
        CircuitError: ``unbound_parameter`` when a named parameter has no value.
    """
    values = values or {}
    check_bound(circuit, values)
    qubits = line_qubits(circuit.num_qubits)
    fixed = FIXED_GATES
    ops: list[Any] = []
    append = ops.append
    for op in circuit.ops:
        name = op.name
        gate = fixed.get(name)
        if gate is not None:
            append(gate.on(*[qubits[q] for q in op.qubits]))
        elif name == "measure":
            if measurements:
                for q, c in zip(op.qubits, op.clbits, strict=True):
                    append(_measure_gate(c).on(qubits[q]))
        elif name == "reset":
            if measurements:
                for q in op.qubits:
                    append(_RESET.on(qubits[q]))
        elif name == "barrier":
            continue
        else:
            gate = PARAM_GATES[name](*numeric_params(op.params, values))
            qs = op.qubits[::-1] if name in _REVERSED else op.qubits
            append(gate.on(*[qubits[q] for q in qs]))
    return cirq.Circuit(ops)


def counts_from_records(records: Mapping[str, np.ndarray], num_clbits: int) -> dict[str, int]:
    """IR counts from Cirq measurement records keyed by ``clbit_key``.

    Args:
        records: Key -> array of shape ``(repetitions, instances, 1)``, as
            ``cirq.Result.records``; the last instance of a repeated key wins.
        num_clbits: Width of the bitstrings; clbits with no key read ``0``.

    Returns:
        Bitstring (clbit 0 rightmost) -> count.
    """
    shots = next(iter(records.values())).shape[0] if records else 0
    # One byte per character: '0' everywhere, then add each clbit's bit in its column,
    # and view every row as one fixed-width byte string for np.unique.
    chars = np.full((shots, num_clbits), ord("0"), dtype=np.uint8)
    for c in range(num_clbits):
        rec = records.get(clbit_key(c))
        if rec is not None:
            chars[:, num_clbits - 1 - c] += rec[:, -1, 0].astype(np.uint8)
    rows = chars.view(f"S{num_clbits}").reshape(-1)
    keys, counts = np.unique(rows, return_counts=True)
    return {k.decode(): int(n) for k, n in zip(keys, counts, strict=True)}


__all__ = [
    "FIXED_GATES",
    "PARAM_GATES",
    "clbit_key",
    "counts_from_records",
    "line_qubits",
    "to_cirq",
]
