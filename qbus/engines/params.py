"""Gate parameters as numbers: the one evaluation of an op's angles every engine uses."""

from __future__ import annotations

from collections.abc import Mapping

from qbus.frontends.expr import evaluate
from qbus.schemas.ir import Param


def numeric_params(
    params: tuple[Param, ...], values: Mapping[str, float] | None = None
) -> tuple[float, ...]:
    """An op's angles as floats, evaluating expression strings against ``values``.

    Args:
        params: The op's parameters: numbers or expressions over named parameters.
        values: Values of the named parameters.

    Raises:
        CircuitError: From the expression evaluator, for an unknown name or bad syntax.
    """
    if not any(isinstance(p, str) for p in params):
        return tuple(float(p) for p in params)
    vals = dict(values or {})
    return tuple(evaluate(p, vals) if isinstance(p, str) else float(p) for p in params)


__all__ = ["numeric_params"]
