"""Named circuit parameters: that they are declared, and binding values to them.

These need the expression parser (``qbus.frontends.expr``), which the IR types in
``qbus.schemas.ir`` do not import: the IR holds a parameter expression as text, and
this module reads it.
"""

from __future__ import annotations

import msgspec

from qbus.errors import CircuitError
from qbus.frontends.expr import evaluate, free_names
from qbus.schemas.ir import Circuit

__all__ = ["bind", "check_parameters"]


def check_parameters(circuit: Circuit) -> None:
    """Raise unless every name a gate parameter uses is in ``circuit.parameters``.

    Raises:
        CircuitError: ``undeclared_parameter``, naming the op and the names;
            ``invalid_parameter`` for text that is no expression (or nests too deep).
    """
    declared = set(circuit.parameters)
    for i, op in enumerate(circuit.ops):
        for p in op.params:
            if isinstance(p, str):
                try:
                    names = free_names(p)
                except ValueError as exc:  # too deep, or not an expression at all
                    raise CircuitError(
                        f"ops[{i}] ('{op.name}') has a bad expression {p[:80]!r}: {exc}",
                        code="invalid_parameter",
                        where=f"$.ops[{i}].params",
                    ) from exc
                unknown = names - declared
                if unknown:
                    raise CircuitError(
                        f"ops[{i}] ('{op.name}') uses undeclared parameter(s) "
                        f"{sorted(unknown)}; declare them in 'parameters'",
                        code="undeclared_parameter",
                        where=f"$.ops[{i}].params",
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
    ops = tuple(
        msgspec.structs.replace(
            op, params=tuple(evaluate(p, values) if isinstance(p, str) else p for p in op.params)
        )
        if any(isinstance(p, str) for p in op.params)
        else op
        for op in circuit.ops
    )
    return msgspec.structs.replace(circuit, ops=ops, parameters=())
