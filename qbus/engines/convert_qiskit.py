"""Conversion between the qbus IR and Qiskit's ``QuantumCircuit``.

Part of the qiskit-aer engine: Qiskit is imported here and in ``aer.py`` only, so the
rest of qbus runs without it. The gate mapping is one table both ways; every IR gate
maps to the ``qiskit.circuit.library`` class with the same matrix and the same name
(``u1``/``u2`` stay ``U1Gate``/``U2Gate`` so a round trip keeps the circuit's hash).

Qubit ``i`` of the IR is ``qc.qubits[i]`` of a circuit with one quantum register ``q``
and one classical register ``c``; a single classical register keeps Qiskit's counts
keys free of spaces and in the IR's bit order (clbit 0 rightmost).

The IR's ``if``/``while`` ops become ``IfElseOp``/``WhileLoopOp`` (built with Qiskit's
control-flow builders). Their conditions become classical expressions over single
clbits (``qiskit.circuit.classical.expr``): a register comparison is spelled out bit by
bit, because a register made for a condition would alias ``c``'s bits and change the
shape of Aer's counts.

With ``loop_budget`` each ``while`` is bounded: a counter register (classical stores of
bit logic, the only arithmetic Aer 0.18 evaluates) ends the loop after ``loop_budget``
iterations, and a flag clbit records a loop that would still run. Counters and flags are
clbits after the IR's (``LoopFlags``); the engine strips them from the counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from qbus.engines.params import numeric_params
from qbus.errors import CircuitError, MissingOptionalLibraryError
from qbus.schemas.gates import GATES, canonical_gate_name
from qbus.schemas.ir import MIRRORED, Circuit, Condition, Op, walk_paths

try:
    import qiskit.circuit.library as _lib
    from qiskit.circuit import (
        Barrier,
        CircuitInstruction,
        ClassicalRegister,
        Measure,
        ParameterExpression,
        QuantumCircuit,
        Reset,
    )
    from qiskit.circuit.classical import expr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("qiskit", "qiskit", "the qiskit-aer engine") from exc

# IR name -> Qiskit gate class. Kept as classes (not instances) so parametrised gates
# can be built per op; parameterless ones are instantiated once below.
GATE_CLASSES: dict[str, type] = {
    "id": _lib.IGate,
    "x": _lib.XGate,
    "y": _lib.YGate,
    "z": _lib.ZGate,
    "h": _lib.HGate,
    "s": _lib.SGate,
    "sdg": _lib.SdgGate,
    "t": _lib.TGate,
    "tdg": _lib.TdgGate,
    "sx": _lib.SXGate,
    "sxdg": _lib.SXdgGate,
    "rx": _lib.RXGate,
    "ry": _lib.RYGate,
    "rz": _lib.RZGate,
    "p": _lib.PhaseGate,
    "u1": _lib.U1Gate,
    "u2": _lib.U2Gate,
    "u": _lib.UGate,
    "cx": _lib.CXGate,
    "cy": _lib.CYGate,
    "cz": _lib.CZGate,
    "ch": _lib.CHGate,
    "swap": _lib.SwapGate,
    "csx": _lib.CSXGate,
    "cp": _lib.CPhaseGate,
    "crx": _lib.CRXGate,
    "cry": _lib.CRYGate,
    "crz": _lib.CRZGate,
    "cu": _lib.CUGate,
    "rxx": _lib.RXXGate,
    "ryy": _lib.RYYGate,
    "rzz": _lib.RZZGate,
    "ccx": _lib.CCXGate,
    "cswap": _lib.CSwapGate,
}

# Parameterless gates are immutable singletons in Qiskit 2; building each once also
# skips the constructor call per op.
_FIXED: dict[str, Any] = {
    name: cls() for name, cls in GATE_CLASSES.items() if GATES[name].num_params == 0
}
_MEASURE = Measure()
_RESET = Reset()

# Qiskit names without an IR alias that still map onto an IR gate.
_EXTRA_FROM_QISKIT = {"cu3": "cu"}

# A definition nested deeper than this is a cycle or a hostile circuit, not a gate.
_MAX_DEFINITION_DEPTH = 32


def loop_paths(circuit: Circuit) -> list[str]:
    """Paths of the circuit's ``while`` ops, in the order their flag clbits follow the IR's."""
    return [path for path, op in walk_paths(circuit.ops) if op.name == "while"]


class _LoopBudget:
    """The clbits that bound each ``while`` of a circuit: flags first, then the counters.

    Flag ``i`` (clbit ``num_clbits + i``) belongs to the ``i``-th ``while`` of
    ``loop_paths``; it is set when that loop's condition still holds after ``limit``
    iterations.
    """

    def __init__(self, qc: QuantumCircuit, loops: int, limit: int) -> None:
        width = limit.bit_length()
        flags = ClassicalRegister(loops, "loop_flags")
        counters = ClassicalRegister(loops * width, "loop_counters")
        qc.add_register(flags)
        qc.add_register(counters)
        self.limit = limit
        self._slots = iter(
            (list(counters)[i * width : (i + 1) * width], flags[i]) for i in range(loops)
        )

    def emit_loop(self, qc: QuantumCircuit, condition: Any, emit_body: Any) -> None:
        """``while (condition && counter != limit) { body; counter++ }``, then the flag.

        The counter starts at 0 on every entry (the reference's budget is per entry);
        after the loop the flag ORs in the condition, which holds only if the loop
        stopped on its budget.
        """
        counter, flag = next(self._slots)
        for bit in counter:
            qc.store(expr.lift(bit), expr.lift(False))
        spent = _equals(counter, self.limit)
        with qc.while_loop(expr.logic_and(condition, expr.logic_not(spent))):
            emit_body()
            _increment(qc, counter)
        qc.store(expr.lift(flag), expr.logic_or(flag, condition))


def _increment(qc: QuantumCircuit, counter: Sequence[Any]) -> None:
    """``counter += 1`` (least significant bit first), highest bit first so that each
    store reads the lower bits' old values: bit k flips when every bit below it is 1."""
    for k in reversed(range(len(counter))):
        carry: Any = None
        for bit in counter[:k]:
            carry = expr.lift(bit) if carry is None else expr.logic_and(carry, bit)
        flipped = expr.logic_not(counter[k]) if carry is None else expr.bit_xor(counter[k], carry)
        qc.store(expr.lift(counter[k]), flipped)


def to_qiskit(
    circuit: Circuit,
    values: Mapping[str, float] | None = None,
    *,
    measurements: bool = True,
    slots: Sequence[Any] | None = None,
    loop_budget: int | None = None,
) -> QuantumCircuit:
    """Build the ``QuantumCircuit`` of ``circuit``, with named parameters bound.

    Args:
        circuit: The IR circuit.
        values: Values of the circuit's named parameters.
        measurements: Keep the measurements; False leaves them out (for a state-vector
            run of a circuit whose measurements are terminal).
        slots: Instead of ``values``: one object (a Qiskit ``Parameter``) per gate
            parameter of the circuit, in op order, used as the gate's parameter. Lets a
            sweep build the circuit once and bind every point's values in one Aer call.
        loop_budget: Bound every ``while`` to this many iterations per entry, with a flag
            clbit per loop (``_LoopBudget``); None runs loops unbounded.

    Returns:
        A circuit with registers ``q`` (``num_qubits``) and ``c`` (``num_clbits``), and
        with ``loop_budget`` and ``while`` ops ``loop_flags`` (one clbit per
        ``loop_paths`` entry) and ``loop_counters`` after them.

    Raises:
        CircuitError: ``unbound_parameter`` when a named parameter has no value.
    """
    values = values or {}
    missing = sorted(set(circuit.parameters) - set(values))
    slot_iter = iter(slots) if slots is not None else None
    if missing and slot_iter is None:
        raise CircuitError(
            f"parameter(s) {missing} have no value; pass them in the job's 'parameters'",
            code="unbound_parameter",
        )
    qc = QuantumCircuit(circuit.num_qubits, circuit.num_clbits)
    budget = None
    if loop_budget is not None:
        loops = len(loop_paths(circuit))
        budget = _LoopBudget(qc, loops, loop_budget) if loops else None
    _emit(qc, circuit.ops, values, measurements, slot_iter, budget=budget)
    return qc


def _emit(
    qc: QuantumCircuit,
    ops: Sequence[Op],
    values: Mapping[str, float],
    measurements: bool,
    slot_iter: Any,
    nested: object = None,
    budget: _LoopBudget | None = None,
) -> None:
    """Append ``ops`` to ``qc`` (or, ``nested`` set, to the control-flow block being built)."""
    qubits = qc.qubits
    clbits = qc.clbits
    # ``_append`` with a ready CircuitInstruction skips QuantumCircuit.append's argument
    # broadcasting and checks; the IR was validated when it was decoded. Inside a
    # control-flow builder block only ``append`` reaches the block being built.
    append = qc._append if nested is None else partial(qc.append, copy=False)
    fixed = _FIXED
    for op in ops:
        name = op.name
        qargs = tuple(qubits[q] for q in op.qubits)
        gate = fixed.get(name)
        if gate is not None:
            append(CircuitInstruction(gate, qargs, ()))
        elif name == "measure":
            if not measurements:
                continue
            for q, c in zip(qargs, op.clbits, strict=True):
                append(CircuitInstruction(_MEASURE, (q,), (clbits[c],)))
        elif name == "reset":
            for q in qargs:
                append(CircuitInstruction(_RESET, (q,), ()))
        elif name == "barrier":
            qargs = qargs or tuple(qubits)  # an empty barrier spans every qubit
            append(CircuitInstruction(Barrier(len(qargs)), qargs, ()))
        elif name == "if":
            assert op.condition is not None  # the IR guarantees it
            with qc.if_test(_condition(op.condition, clbits)) as orelse:
                _emit(qc, op.body, values, measurements, slot_iter, op, budget)
            if op.orelse:
                with orelse:
                    _emit(qc, op.orelse, values, measurements, slot_iter, op, budget)
        elif name == "while":
            assert op.condition is not None  # the IR guarantees it
            condition = _condition(op.condition, clbits)
            body = partial(_emit, qc, op.body, values, measurements, slot_iter, op, budget)
            if budget is None:
                with qc.while_loop(condition):
                    body()
            else:
                budget.emit_loop(qc, condition, body)
        elif slot_iter is not None:
            params = [next(slot_iter) for _ in op.params]
            qc.append(GATE_CLASSES[name](*params), qargs, copy=False)
        else:
            params = numeric_params(op.params, values)
            append(CircuitInstruction(GATE_CLASSES[name](*params), qargs, ()))


def _condition(cond: Condition, clbits: Sequence[Any]) -> Any:
    """The IR condition as a Qiskit Boolean expression over single clbits."""
    if cond.op == "not":
        return expr.logic_not(_condition(cond.args[0], clbits))
    if cond.op in ("and", "or"):
        join = expr.logic_and if cond.op == "and" else expr.logic_or
        result = _condition(cond.args[0], clbits)
        for arg in cond.args[1:]:
            result = join(result, _condition(arg, clbits))
        return result
    bits = [clbits[c] for c in cond.clbits]  # least significant first
    v = cond.value
    if cond.op in ("==", "!="):
        equal = _equals(bits, v)
        return equal if cond.op == "==" else expr.logic_not(equal)
    # reg < v, reg <= v (reg < v+1), reg > v (not reg <= v), reg >= v (not reg < v)
    bound = v + 1 if cond.op in ("<=", ">") else v
    less = _less(bits, bound)
    return less if cond.op in ("<", "<=") else expr.logic_not(less)


def _equals(bits: Sequence[Any], v: int) -> Any:
    if v >> len(bits):
        return expr.lift(False)
    result = None
    for k, bit in enumerate(bits):
        term = expr.lift(bit) if (v >> k) & 1 else expr.logic_not(bit)
        result = term if result is None else expr.logic_and(result, term)
    return result


def _less(bits: Sequence[Any], v: int) -> Any:
    """``reg < v`` for the register ``bits`` (least significant first) and a constant ``v``."""
    if v >> len(bits):
        return expr.lift(True)
    # From the least significant bit up: lt_k says bits[:k+1] < v's low k+1 bits.
    result: Any = expr.lift(False)
    for k, bit in enumerate(bits):
        if (v >> k) & 1:
            # v has 1 here: smaller if this bit is 0, or equal (1) and the rest smaller.
            result = expr.logic_or(expr.logic_not(bit), result)
        else:
            # v has 0 here: smaller only if this bit is 0 and the rest smaller.
            result = expr.logic_and(expr.logic_not(bit), result)
    return result


def _param(p: Any, names: set[str]) -> float | str:
    if isinstance(p, ParameterExpression):
        if not p.parameters:
            return float(p)
        names.update(par.name for par in p.parameters)
        return str(p)
    return float(p)


def from_qiskit(qc: QuantumCircuit) -> Circuit:
    """Convert a ``QuantumCircuit`` to IR.

    Gates outside the IR's library are replaced by their Qiskit definitions,
    recursively; such a definition's global phase is dropped (the IR has none), as is
    the circuit's own global phase. Unbound Qiskit parameters become expression
    strings and declared parameter names.

    Args:
        qc: The circuit. All registers are flattened in ``qc.qubits``/``qc.clbits`` order.

    Returns:
        The IR circuit.

    ``IfElseOp`` and ``WhileLoopOp`` become IR ``if``/``while`` ops (conditions on a
    clbit, a register or a classical expression of comparisons and logic); a
    ``ForLoopOp`` is unrolled, its loop parameter bound to each value.

    Raises:
        CircuitError: ``unsupported_gate`` for an instruction with no IR equivalent and
            no definition (``switch_case``, ``break_loop``, ``delay`` …) or a condition
            the IR cannot hold, with ``where`` naming the instruction index.
    """
    qindex = {bit: i for i, bit in enumerate(qc.qubits)}
    cindex = {bit: i for i, bit in enumerate(qc.clbits)}
    ops: list[Op] = []
    names: set[str] = set()

    def walk(
        data: Any,
        qmap: Mapping[Any, int],
        cmap: Mapping[Any, int],
        where: str,
        depth: int,
        ops: list[Op],
    ) -> None:
        for k, inst in enumerate(data):
            here = f"{where}[{k}]"
            operation = inst.operation
            name = operation.name
            qs = tuple(qmap[i] for i in inst.qubits)
            cs = tuple(cmap[i] for i in inst.clbits)
            if name in _CONTROL_FLOW_NAMES:
                if depth >= _MAX_DEFINITION_DEPTH:
                    raise CircuitError(
                        "control flow nested too deep", code="unsupported_gate", where=here
                    )
                convert = partial(block, qs, cs, here, depth)
                ops.extend(_control_from_qiskit(operation, cmap, convert, here))
                continue
            try:
                if name in ("measure", "reset", "barrier"):
                    ops.append(Op(name=name, qubits=qs, clbits=cs))
                    continue
                ir_name = canonical_gate_name(name) or _EXTRA_FROM_QISKIT.get(name)
                if ir_name is not None and not cs:
                    params = tuple(_param(p, names) for p in operation.params)
                    if name == "cu3":
                        params = (*params, 0.0)  # cu3 is cu with no phase
                    ops.append(Op(name=ir_name, qubits=qs, params=params))
                    continue
            except ValueError as exc:
                raise CircuitError(
                    f"instruction '{name}' does not fit the IR: {exc}",
                    code="unsupported_gate",
                    where=here,
                ) from exc
            definition = getattr(operation, "definition", None)
            if definition is None or depth >= _MAX_DEFINITION_DEPTH:
                raise CircuitError(
                    f"instruction '{name}' has no IR equivalent and no definition",
                    code="unsupported_gate",
                    where=here,
                )
            inner_q = {bit: qs[i] for i, bit in enumerate(definition.qubits)}
            inner_c = {bit: cs[i] for i, bit in enumerate(definition.clbits)}
            walk(definition.data, inner_q, inner_c, f"{here}.definition", depth + 1, ops)

    def block(
        qs: tuple[int, ...], cs: tuple[int, ...], here: str, depth: int, body: Any, label: str
    ) -> tuple[Op, ...]:
        # A control-flow block's bits map positionally onto its instruction's.
        inner: list[Op] = []
        inner_q = {bit: qs[i] for i, bit in enumerate(body.qubits)}
        inner_c = {bit: cs[i] for i, bit in enumerate(body.clbits)}
        walk(body.data, inner_q, inner_c, f"{here}.{label}", depth + 1, inner)
        return tuple(inner)

    walk(qc.data, qindex, cindex, "instruction", 0, ops)
    try:
        return Circuit(
            num_qubits=qc.num_qubits,
            num_clbits=qc.num_clbits,
            ops=tuple(ops),
            parameters=tuple(sorted(names)),
        )
    except ValueError as exc:
        raise CircuitError(f"the circuit does not fit the IR: {exc}") from exc


_CONTROL_FLOW_NAMES = frozenset({"if_else", "while_loop", "for_loop", "switch_case"})

_COMPARISON_OPS = {
    "EQUAL": "==",
    "NOT_EQUAL": "!=",
    "LESS": "<",
    "LESS_EQUAL": "<=",
    "GREATER": ">",
    "GREATER_EQUAL": ">=",
}


def _control_from_qiskit(
    operation: Any, cmap: Mapping[Any, int], block: Any, where: str
) -> list[Op]:
    """The IR ops of one Qiskit control-flow instruction (see ``from_qiskit``)."""
    name = operation.name
    try:
        if name == "for_loop":
            indexset, parameter, body = operation.params
            out: list[Op] = []
            for value in indexset:
                bound = body if parameter is None else body.assign_parameters({parameter: value})
                out.extend(block(bound, "body"))
            return out
        if name in ("if_else", "while_loop"):
            condition = _condition_from_qiskit(operation.condition, cmap)
            body = block(operation.blocks[0], "body")
            orelse = ()
            if name == "if_else" and len(operation.blocks) > 1 and operation.blocks[1] is not None:
                orelse = block(operation.blocks[1], "orelse")
            qubits = tuple(sorted({q for op in (*body, *orelse) for q in op.qubits}))
            ir_name = "if" if name == "if_else" else "while"
            return [Op(name=ir_name, qubits=qubits, condition=condition, body=body, orelse=orelse)]
    except (ValueError, TypeError, KeyError) as exc:
        raise CircuitError(
            f"'{name}' does not fit the IR: {exc}", code="unsupported_gate", where=where
        ) from exc
    raise CircuitError(
        f"instruction '{name}' has no IR equivalent", code="unsupported_gate", where=where
    )


def _bits_of(target: Any, cmap: Mapping[Any, int]) -> tuple[int, ...]:
    """IR clbits of a Qiskit clbit or classical register (least significant first)."""
    if isinstance(target, ClassicalRegister):
        return tuple(cmap[bit] for bit in target)
    return (cmap[target],)


def _condition_from_qiskit(condition: Any, cmap: Mapping[Any, int]) -> Condition:
    """An IR condition from Qiskit's ``(clbit | register, value)`` or ``expr.Expr``."""
    if isinstance(condition, tuple):
        target, value = condition
        return Condition(clbits=_bits_of(target, cmap), value=int(value))
    return _expr_condition(condition, cmap)


def _expr_condition(node: Any, cmap: Mapping[Any, int]) -> Condition:
    if isinstance(node, expr.Cast):
        inner = node.operand
        if isinstance(inner, expr.Var):  # a register (or bit) used as a Boolean
            return Condition(op="!=", clbits=_bits_of(inner.var, cmap), value=0)
        return _expr_condition(inner, cmap)
    if isinstance(node, expr.Var):  # a single clbit: true when 1
        return Condition(clbits=_bits_of(node.var, cmap), value=1)
    if isinstance(node, expr.Unary) and node.op is expr.Unary.Op.LOGIC_NOT:
        return Condition(op="not", args=(_expr_condition(node.operand, cmap),))
    if isinstance(node, expr.Binary):
        op = node.op.name
        if op in ("LOGIC_AND", "LOGIC_OR"):
            args = (_expr_condition(node.left, cmap), _expr_condition(node.right, cmap))
            return Condition(op="and" if op == "LOGIC_AND" else "or", args=args)
        if op in _COMPARISON_OPS:
            left, right = _strip_cast(node.left), _strip_cast(node.right)
            symbol = _COMPARISON_OPS[op]
            if isinstance(left, expr.Value) and isinstance(right, expr.Var):
                left, right, symbol = right, left, MIRRORED[symbol]
            if isinstance(left, expr.Var) and isinstance(right, expr.Value):
                bits = _bits_of(left.var, cmap)
                return Condition(op=symbol, clbits=bits, value=int(right.value))
    raise ValueError(f"the condition {node} is not a comparison of bits with a constant")


def _strip_cast(node: Any) -> Any:
    return node.operand if isinstance(node, expr.Cast) else node
