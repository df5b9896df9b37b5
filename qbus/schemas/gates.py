"""The IR's gate library: OpenQASM 3 ``stdgates.inc`` plus qelib1 extras, as data.

Names here are canonical: parsers map aliases (``CX``, ``U``, ``phase``, ``cu1``, ``u3``)
onto them, so one gate has one spelling in the IR and one content hash.
"""

from __future__ import annotations

from typing import NamedTuple


class GateSpec(NamedTuple):
    """Shape of one gate.

    Attributes:
        num_qubits: Qubits it acts on.
        num_params: Angle parameters it takes.
        self_inverse: Applying it twice is the identity.
        inverse: Name of the inverse gate when that is a different parameterless gate.
        rotation: Parameters add when two of these act on the same qubits back to back.
    """

    num_qubits: int
    num_params: int
    self_inverse: bool = False
    inverse: str | None = None
    rotation: bool = False


GATES: dict[str, GateSpec] = {
    # one qubit, no parameters
    "id": GateSpec(1, 0, self_inverse=True),
    "x": GateSpec(1, 0, self_inverse=True),
    "y": GateSpec(1, 0, self_inverse=True),
    "z": GateSpec(1, 0, self_inverse=True),
    "h": GateSpec(1, 0, self_inverse=True),
    "s": GateSpec(1, 0, inverse="sdg"),
    "sdg": GateSpec(1, 0, inverse="s"),
    "t": GateSpec(1, 0, inverse="tdg"),
    "tdg": GateSpec(1, 0, inverse="t"),
    "sx": GateSpec(1, 0, inverse="sxdg"),
    "sxdg": GateSpec(1, 0, inverse="sx"),
    # one qubit, parametrised
    "rx": GateSpec(1, 1, rotation=True),
    "ry": GateSpec(1, 1, rotation=True),
    "rz": GateSpec(1, 1, rotation=True),
    "p": GateSpec(1, 1, rotation=True),
    "u1": GateSpec(1, 1, rotation=True),
    "u2": GateSpec(1, 2),
    "u": GateSpec(1, 3),
    # two qubits
    "cx": GateSpec(2, 0, self_inverse=True),
    "cy": GateSpec(2, 0, self_inverse=True),
    "cz": GateSpec(2, 0, self_inverse=True),
    "ch": GateSpec(2, 0, self_inverse=True),
    "swap": GateSpec(2, 0, self_inverse=True),
    "csx": GateSpec(2, 0),
    "cp": GateSpec(2, 1, rotation=True),
    "crx": GateSpec(2, 1, rotation=True),
    "cry": GateSpec(2, 1, rotation=True),
    "crz": GateSpec(2, 1, rotation=True),
    "cu": GateSpec(2, 4),
    "rxx": GateSpec(2, 1, rotation=True),
    "ryy": GateSpec(2, 1, rotation=True),
    "rzz": GateSpec(2, 1, rotation=True),
    # three qubits
    "ccx": GateSpec(3, 0, self_inverse=True),
    "cswap": GateSpec(3, 0, self_inverse=True),
}

# Non-unitary instructions the IR also carries.
DIRECTIVES = frozenset({"measure", "reset", "barrier"})

# Spellings from OpenQASM 2 (qelib1.inc) and 3 (stdgates.inc / builtins) that mean a
# canonical gate above. ``u3`` is ``u``; ``cu1`` is ``cp``; ``phase``/``cphase`` are 3.0 names.
ALIASES: dict[str, str] = {
    "CX": "cx",
    "U": "u",
    "u3": "u",
    "phase": "p",
    "cphase": "cp",
    "cu1": "cp",
    "cnot": "cx",
    "toffoli": "ccx",
    "fredkin": "cswap",
    "i": "id",
}


def canonical_gate_name(name: str) -> str | None:
    """Return the canonical IR name for ``name``, or None when it is no known gate."""
    if name in GATES:
        return name
    return ALIASES.get(name)
