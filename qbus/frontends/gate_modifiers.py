"""OpenQASM 3 gate modifiers (``inv @``, ``pow(k) @``, ``ctrl @``, ``negctrl @``) on IR ops.

A modified gate is first expanded into a *sequence*: a list of ``(IR gate name, parameter
trees, qubit positions)`` over the call's local qubits, where the pseudo-gate ``gphase``
carries a global phase (the IR has none, but a controlled global phase is a real phase
gate, so sequences keep it until they are emitted). Each modifier maps a sequence to a new
one, exactly (global phase included):

* ``inv``: the ops reversed, each inverted (``s``↔``sdg``, rotations negated,
  ``u(θ,φ,λ)`` → ``u(-θ,-λ,-φ)``, ...).
* ``pow(k)``: an integer ``k`` repeats the sequence (its inverse for ``k < 0``; ``k = 0``
  is the identity). A fractional ``k`` is defined for a sequence of one gate (plus global
  phases) from the rotation and phase families, by scaling the angle:
  ``pow(k) @ rx(θ)`` is ``rx(kθ)``, ``pow(k) @ p(λ)`` is ``p(kλ)``, ``z``/``s``/``t``
  (and their inverses) are ``p`` of π, π/2, π/4, and ``x``/``y``/``sx``/``cx``/``cz``
  follow from those with the exact phases. That is Qiskit's ``Gate.power`` for every
  angle in the principal range (and its own rule for rotation gates at any angle).
* ``ctrl``/``negctrl``: one more control, placed before the gate's own qubits. Gates with
  a controlled IR gate map onto it (``x``→``cx``→``ccx``, ``rz``→``crz``, ``gphase``→``p``
  on the control, ...); others are first replaced by an exact body
  (:mod:`qbus.frontends.gate_library`) whose ops are controlled one by one. ``negctrl``
  is ``ctrl`` between two ``x`` on the control.

Anything else raises :class:`ModifierError` with a stable code, which the parser turns
into a :class:`~qbus.errors.QasmSyntaxError` at the modifier's position.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from qbus.frontends import expr as _expr
from qbus.frontends.expr import Expr
from qbus.schemas.gates import GATES

__all__ = ["GPHASE", "Decompose", "ModifierError", "SeqOp", "control", "inverse", "power"]

GPHASE = "gphase"

SeqOp = tuple[str, tuple[Expr, ...], tuple[int, ...]]
"""One op of a sequence: IR gate name (or ``gphase``), parameter trees, qubit positions."""

Decompose = Callable[[str, tuple[Expr, ...], tuple[int, ...]], list[SeqOp]]
"""Exact body of an IR gate (or of qelib1's ``c3x``) as a sequence on the given qubits."""

_SELF_INVERSE = frozenset(n for n, spec in GATES.items() if spec.self_inverse) | {"barrier"}
_NAMED_INVERSE = {n: spec.inverse for n, spec in GATES.items() if spec.inverse is not None}
_ROTATIONS = frozenset(n for n, spec in GATES.items() if spec.rotation)
# Gates that are a phase gate p(angle) (c-prefixed: cp(angle)).
_PHASES = {"z": math.pi, "s": math.pi / 2, "sdg": -math.pi / 2, "t": math.pi / 4}
_PHASES["tdg"] = -math.pi / 4
_CONTROLLED = {
    "x": "cx",
    "y": "cy",
    "z": "cz",
    "h": "ch",
    "sx": "csx",
    "p": "cp",
    "u1": "cp",
    "rx": "crx",
    "ry": "cry",
    "rz": "crz",
    "swap": "cswap",
    "cx": "ccx",
}


class ModifierError(ValueError):
    """A modifier the IR cannot express exactly.

    Attributes:
        reason: What is not supported, without position.
        code: The stable error code (``unsupported_feature`` or ``too_large``).
    """

    def __init__(self, reason: str, code: str = "unsupported_feature"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _num(value: float) -> Expr:
    return ("num", value)


def _scaled(tree: Expr, factor: float) -> Expr:
    try:
        if factor == -1.0:
            return _expr.simplify(("neg", tree))
        return _expr.simplify(("bin", "*", _num(factor), tree))
    except ValueError as exc:
        raise ModifierError(str(exc), "invalid_parameter") from None


def _inverse_op(op: SeqOp, decompose: Decompose) -> list[SeqOp]:
    name, params, qubits = op
    if name in _SELF_INVERSE:
        return [op]
    other = _NAMED_INVERSE.get(name)
    if other is not None:
        return [(other, params, qubits)]
    if name in _ROTATIONS or name == GPHASE:
        return [(name, (_scaled(params[0], -1.0),), qubits)]
    if name == "u":
        theta, phi, lam = params
        return [("u", (_scaled(theta, -1.0), _scaled(lam, -1.0), _scaled(phi, -1.0)), qubits)]
    if name == "u2":
        phi, lam = params
        return [("u", (_num(-math.pi / 2), _scaled(lam, -1.0), _scaled(phi, -1.0)), qubits)]
    if name == "cu":
        theta, phi, lam, gamma = params
        negated = (_scaled(theta, -1.0), _scaled(lam, -1.0), _scaled(phi, -1.0))
        return [("cu", (*negated, _scaled(gamma, -1.0)), qubits)]
    return inverse(decompose(name, params, qubits), decompose)


def inverse(seq: list[SeqOp], decompose: Decompose) -> list[SeqOp]:
    """The exact inverse of a sequence (``inv @``)."""
    out: list[SeqOp] = []
    for op in reversed(seq):
        out.extend(_inverse_op(op, decompose))
    return out


def _fractional(op: SeqOp, k: float) -> list[SeqOp] | None:
    name, params, qubits = op
    if name in _ROTATIONS or name == GPHASE:
        return [(name, (_scaled(params[0], k),), qubits)]
    if name == "id":
        return [op]
    if name in _PHASES:
        return [("p", (_num(k * _PHASES[name]),), qubits)]
    if name == "cz":
        return [("cp", (_num(k * math.pi),), qubits)]
    if name == "cx":
        target = (qubits[1],)
        return [("h", (), target), ("cp", (_num(k * math.pi),), qubits), ("h", (), target)]
    # X = e^{iπ/2}·rx(π), and likewise for y and for sx = X^(1/2), sxdg = X^(-1/2).
    rotation = {"x": ("rx", 1.0), "y": ("ry", 1.0), "sx": ("rx", 0.5), "sxdg": ("rx", -0.5)}
    if name in rotation:
        gate, share = rotation[name]
        angle = k * share * math.pi
        return [(GPHASE, (_num(angle / 2),), ()), (gate, (_num(angle),), qubits)]
    return None


def power(seq: list[SeqOp], k: float, decompose: Decompose, limit: int) -> list[SeqOp]:
    """``pow(k) @`` of a sequence (see the module docstring for the rules).

    Raises:
        ModifierError: ``too_large`` past ``limit`` ops; ``unsupported_feature`` for a
            fractional power of anything but one rotation or phase-family gate.
    """
    if float(k).is_integer():
        count = abs(int(k))
        base = seq if k >= 0 else inverse(seq, decompose)
        if len(base) * count > limit:
            raise ModifierError(f"the power expands to more than {limit} operations", "too_large")
        return base * count
    phases = [op for op in seq if op[0] == GPHASE]
    gates = [op for op in seq if op[0] != GPHASE and op[0] != "barrier"]
    out = [(GPHASE, (_scaled(params[0], k),), ()) for _, params, _ in phases]
    if not gates:
        return out
    powered = _fractional(gates[0], k) if len(gates) == 1 else None
    if powered is None:
        raise ModifierError(
            "non-integer powers are supported for one rotation or phase gate (rx, ry, rz, p, "
            "cp, crx, cry, crz, rxx, ryy, rzz, x, y, z, s, sdg, t, tdg, sx, sxdg, cx, cz)"
        )
    return out + powered


def _control_op(op: SeqOp, decompose: Decompose) -> list[SeqOp]:
    """One op with a control on position 0 (its own positions are already shifted)."""
    name, params, qubits = op
    if name == "barrier" or name == "id":
        return [op]
    if name == GPHASE:
        return [("p", params, (0,))]
    controlled = _CONTROLLED.get(name)
    if controlled is not None:
        return [(controlled, params, (0, *qubits))]
    if name in _PHASES:
        return [("cp", (_num(_PHASES[name]),), (0, *qubits))]
    if name == "u":
        return [("cu", (*params, _num(0.0)), (0, *qubits))]
    if name == "u2":
        return [("cu", (_num(math.pi / 2), *params, _num(0.0)), (0, *qubits))]
    if name == "ccx":
        return decompose("c3x", (), (0, *qubits))
    out: list[SeqOp] = []
    for inner in decompose(name, params, qubits):
        out.extend(_control_op(inner, decompose))
    return out


def control(seq: list[SeqOp], negative: bool, decompose: Decompose, limit: int) -> list[SeqOp]:
    """``ctrl @`` (or ``negctrl @``) of a sequence: the new control is position 0.

    Raises:
        ModifierError: ``too_large`` when the controlled sequence passes ``limit`` ops.
    """
    flip: list[SeqOp] = [("x", (), (0,))] if negative else []
    out = list(flip)
    for name, params, qubits in seq:
        out.extend(_control_op((name, params, tuple([q + 1 for q in qubits])), decompose))
        if len(out) > limit:
            raise ModifierError(
                f"the controlled gate expands to more than {limit} operations", "too_large"
            )
    out.extend(flip)
    return out
