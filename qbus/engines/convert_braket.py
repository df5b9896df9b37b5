"""Conversion from the qbus IR to Amazon Braket's ``braket.circuits.Circuit``.

Part of the braket engine: the Braket SDK is imported here and in ``braket_engine.py``
only, so the rest of qbus runs without it.

Braket is big-endian: the first target of a gate is the most significant bit of its
matrix index, and qubit 0 is the most significant bit of a state-vector index. The IR
is the other way round (see ``qbus.engines.reference``). Native Braket gates are used
where their matrix equals the IR gate's exactly, global phase included (checked for
every gate by the engine tests); the rest (``u2``, ``ch``, ``crx``, ``cry``, ``crz``,
``cu``) become ``Unitary`` gates built from ``reference.gate_matrix`` with the bit order
reversed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qbus.engines.checks import check_bound
from qbus.engines.params import numeric_params
from qbus.engines.reference import gate_matrix
from qbus.errors import MissingOptionalLibraryError
from qbus.schemas.ir import Circuit

try:
    from braket.circuits import Circuit as BraketCircuit
    from braket.circuits import Instruction
    from braket.circuits import gates as _g
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("amazon-braket-sdk", "braket", "the braket engine") from exc

# IR name -> Braket gate class whose matrix (in Braket's big-endian order) is the IR
# gate's exactly, with the IR's parameters in the same order. ``rxx``/``ryy``/``rzz``
# are Braket's ``XX``/``YY``/``ZZ`` (exp(-i theta/2 P(x)P)); ``sx``/``sxdg`` are ``V``/``Vi``;
# ``csx`` is ``CV``; ``u`` is Braket's ``U(theta, phi, lambda)``.
NATIVE: dict[str, type] = {
    "id": _g.I,
    "x": _g.X,
    "y": _g.Y,
    "z": _g.Z,
    "h": _g.H,
    "s": _g.S,
    "sdg": _g.Si,
    "t": _g.T,
    "tdg": _g.Ti,
    "sx": _g.V,
    "sxdg": _g.Vi,
    "rx": _g.Rx,
    "ry": _g.Ry,
    "rz": _g.Rz,
    "p": _g.PhaseShift,
    "u1": _g.PhaseShift,
    "u": _g.U,
    "cx": _g.CNot,
    "cy": _g.CY,
    "cz": _g.CZ,
    "csx": _g.CV,
    "swap": _g.Swap,
    "cp": _g.CPhaseShift,
    "rxx": _g.XX,
    "ryy": _g.YY,
    "rzz": _g.ZZ,
    "ccx": _g.CCNot,
    "cswap": _g.CSwap,
}

_FIXED = {name: cls() for name, cls in NATIVE.items() if not issubclass(cls, _g.Parameterizable)}


def big_endian(m: np.ndarray) -> np.ndarray:
    """``m`` with the bit order of its index reversed (IR little-endian <-> big-endian).

    Args:
        m: A ``2**k x 2**k`` matrix whose first qubit is the least significant bit.

    Returns:
        The same operator with the first qubit as the most significant bit.
    """
    k = int(math.log2(m.shape[0]))
    if k == 1:
        return np.asarray(m)
    # As a [2]*2k tensor, reversing the k output axes and the k input axes reverses
    # the bit order of row and column index.
    axes = [*reversed(range(k)), *reversed(range(k, 2 * k))]
    return np.asarray(m).reshape((2,) * (2 * k)).transpose(axes).reshape(m.shape)


def to_braket(circuit: Circuit, values: Mapping[str, float] | None = None) -> BraketCircuit:
    """Build the Braket circuit of ``circuit``'s gates, with named parameters bound.

    Measurements, resets and barriers are left out: Braket measures every qubit at the
    end, and the engine only accepts terminal measurements (and resets of fresh qubits,
    which are no-ops). Every qubit gets an identity first, because Braket sizes a
    circuit by the qubits it uses and would otherwise drop idle ones from the result.

    Args:
        circuit: The IR circuit.
        values: Values of the circuit's named parameters.

    Returns:
        A Braket circuit on qubits ``0..num_qubits-1`` (same indices as the IR).

    Raises:
        CircuitError: ``unbound_parameter`` when a named parameter has no value.
    """
    values = values or {}
    check_bound(circuit, values)
    bc = BraketCircuit()
    ident = _FIXED["id"]
    add = bc.add_instruction
    for q in range(circuit.num_qubits):
        add(Instruction(ident, q))
    for op in circuit.ops:
        name = op.name
        if name in ("measure", "reset", "barrier"):
            continue
        gate = _FIXED.get(name)
        if gate is None:
            params = numeric_params(op.params, values)
            cls = NATIVE.get(name)
            if cls is not None:
                gate = cls(*params)
            else:
                gate = _g.Unitary(big_endian(gate_matrix(name, params)))
        add(Instruction(gate, list(op.qubits)))
    return bc


__all__ = ["NATIVE", "big_endian", "to_braket"]
