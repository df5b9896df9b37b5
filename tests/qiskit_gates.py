"""Each IR gate as the Qiskit gate class that defines it: the one table the cross-checks use.

Written out here rather than taken from ``qbus.engines.convert_qiskit``, so the tests do
not trust the code they check: the IR's gate definitions are those of these classes.
"""

from __future__ import annotations

import math

from qiskit.circuit import library as lib

QISKIT_GATES = {
    "id": lib.IGate,
    "x": lib.XGate,
    "y": lib.YGate,
    "z": lib.ZGate,
    "h": lib.HGate,
    "s": lib.SGate,
    "sdg": lib.SdgGate,
    "t": lib.TGate,
    "tdg": lib.TdgGate,
    "sx": lib.SXGate,
    "sxdg": lib.SXdgGate,
    "rx": lib.RXGate,
    "ry": lib.RYGate,
    "rz": lib.RZGate,
    "p": lib.PhaseGate,
    "u1": lib.PhaseGate,  # same matrix as U1Gate
    "u2": lambda phi, lam: lib.UGate(math.pi / 2, phi, lam),  # same matrix as U2Gate
    "u": lib.UGate,
    "cx": lib.CXGate,
    "cy": lib.CYGate,
    "cz": lib.CZGate,
    "ch": lib.CHGate,
    "swap": lib.SwapGate,
    "csx": lib.CSXGate,
    "cp": lib.CPhaseGate,
    "crx": lib.CRXGate,
    "cry": lib.CRYGate,
    "crz": lib.CRZGate,
    "cu": lib.CUGate,
    "rxx": lib.RXXGate,
    "ryy": lib.RYYGate,
    "rzz": lib.RZZGate,
    "ccx": lib.CCXGate,
    "cswap": lib.CSwapGate,
}
