"""Named circuit parameters: that they are declared, and binding values to them.

These need the expression parser (``qbus.frontends.expr``), which the IR types in
``qbus.schemas.ir`` do not import: the IR holds a parameter expression as text, and
this module reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import msgspec

from qbus.errors import CircuitError
from qbus.frontends.expr import evaluate, free_names
from qbus.schemas.ir import Circuit, Op, map_ops, walk_paths

__all__ = ["MAX_ANGLE", "bind", "check_angles", "check_parameters"]

MAX_ANGLE = 1e12
"""The largest gate angle (in magnitude) a job may give or bind. A double still resolves
an angle of 1e12 rad to about 1e-4 rad, sums of a few such angles (``u3``'s
``(phi + lambda) / 2``) stay far from overflow, and no real circuit turns further;
at 1e308 the engines' arithmetic overflows to NaN, so such a job fails at execution."""


def check_parameters(circuit: Circuit) -> None:
    """Raise unless every name a gate parameter uses is in ``circuit.parameters``.

    Raises:
        CircuitError: ``undeclared_parameter``, naming the op and the names;
            ``invalid_parameter`` for text that is no expression (or nests too deep).
    """
    declared = set(circuit.parameters)
    for path, op in walk_paths(circuit.ops):
        for p in op.params:
            if isinstance(p, str):
                try:
                    names = free_names(p)
                except ValueError as exc:  # too deep, or not an expression at all
                    raise CircuitError(
                        f"{path} ('{op.name}') has a bad expression {p[:80]!r}: {exc}",
                        code="invalid_parameter",
                        where=f"$.{path}.params",
                    ) from exc
                unknown = names - declared
                if unknown:
                    raise CircuitError(
                        f"{path} ('{op.name}') uses undeclared parameter(s) "
                        f"{sorted(unknown)}; declare them in 'parameters'",
                        code="undeclared_parameter",
                        where=f"$.{path}.params",
                    )


def check_angles(
    circuit: Circuit, values: Mapping[str, float], points: Sequence[Mapping[str, float]] = ()
) -> None:
    """Raise unless every gate angle, every value bound to a parameter and every sweep
    point's value is a finite number of magnitude at most ``MAX_ANGLE``. An expression
    whose names all have values in ``values`` is evaluated and its value checked.

    Raises:
        CircuitError: ``invalid_parameter``, naming the value, the bound and where.
    """
    for name, value in values.items():
        _check_angle(value, f"parameter {name!r}", f"$.parameters.{name}")
    for n, point in enumerate(points):
        for name, value in point.items():
            _check_angle(value, f"sweep point {n}: {name!r}", f"$.sweep[{n}].{name}")
    for path, op in walk_paths(circuit.ops):
        for p in op.params:
            if isinstance(p, str):
                if not free_names(p) <= values.keys():
                    continue  # bound per sweep point, checked above
                value = evaluate(p, dict(values))
            else:
                value = p
            _check_angle(value, f"{path} ('{op.name}') angle", f"$.{path}.params")


def _check_angle(value: float, what: str, where: str) -> None:
    if not math.isfinite(value) or abs(value) > MAX_ANGLE:
        raise CircuitError(
            f"{what} is {value:g}: angles must be finite and within ±{MAX_ANGLE:g}",
            code="invalid_parameter",
            where=where,
        )


def bind(circuit: Circuit, values: dict[str, float]) -> Circuit:
    """Replace every named parameter by its value.

    Raises:
        CircuitError: When a parameter the circuit uses has no value.
    """
    if not circuit.parameters:
        return circuit
    missing = sorted(set(circuit.parameters) - set(values))
    if missing:
        raise CircuitError(
            f"parameter(s) {missing} have no value; pass them in the job's 'parameters'",
            code="unbound_parameter",
        )

    def bound(op: Op) -> Op:
        if not any(isinstance(p, str) for p in op.params):
            return op
        params = tuple(evaluate(p, values) if isinstance(p, str) else p for p in op.params)
        return msgspec.structs.replace(op, params=params)

    return msgspec.structs.replace(circuit, ops=map_ops(circuit.ops, bound), parameters=())
