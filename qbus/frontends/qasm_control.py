"""OpenQASM classical control statements: ``if``/``else``, ``while``, ``for``.

A mixin of the OpenQASM parser (``qbus.frontends.qasm._Parser``): its methods are the
statement handlers for classical control, kept apart from the gate-level grammar. They
read the parser's tokens and registers through the attributes the parser defines
(``toks``, ``i``, ``ops``, ``version``, ``fail``, ``expect``, ``operand``,
``integer``, ``statement``), and emit IR ``if``/``while`` ops (qbus/schemas/ir.py).

What is read:

* OpenQASM 2: ``if (creg == n) qop;`` (also a single bit: ``if (c[0] == 1) qop;``), one
  quantum operation as the body, as the specification defines it.
* OpenQASM 3: ``if (cond) stmt-or-block [else stmt-or-block]`` (``else if`` chains),
  ``while (cond) stmt-or-block``, ``for type i in [a:b] / [a:s:b] / {v, ...}
  stmt-or-block``. A condition compares a bit, a bit register or a measured variable
  with an integer known when parsing (``== != < <= > >=``, either side), names a bit
  (true when 1) or a register (true when non-zero), and combines those with ``!``,
  ``&&``, ``||`` and parentheses. Parts known when parsing are folded: a condition known
  as a whole makes an ``if`` its branch taken and a ``while`` nothing (or, when true, an
  ``unsupported_feature`` error).
* ``for`` loops are **unrolled when parsed**: their ranges are known when parsing, and
  the loop variable may appear wherever an integer literal may (an index, a gate
  parameter, a folded variable's assignment).
  An unrolled loop counts toward the program's operation limit.

Blocks may hold gate calls, measurements, resets, barriers and nested control flow, not
declarations (register, gate or input declarations inside a block are refused).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qbus.errors import CircuitError
from qbus.schemas.ir import (
    COMPARISONS,
    MAX_CONDITION_DEPTH,
    MAX_CONTROL_DEPTH,
    MIRRORED,
    Condition,
    Op,
)

if TYPE_CHECKING:
    from typing import NoReturn

# Statements that declare something: not allowed inside a block (their scope would be
# the block's, which the IR's flat registers cannot express).
_DECLARATIONS = frozenset(
    {
        "OPENQASM",
        "include",
        "qreg",
        "creg",
        "qubit",
        "bit",
        "input",
        "gate",
        "def",
        "int",
        "uint",
        "bool",
        "float",
        "angle",
    }
)

_LOGIC = {"||": "or", "&&": "and"}
COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class ControlStatements:
    """The classical-control statement handlers, mixed into the OpenQASM parser."""

    # Provided by the parser this is mixed into (see the module docstring).
    toks: list[str]
    i: int
    ops: list[Op]
    version: str
    max_ops: int
    control_depth: int = 0
    nested_ops: int = 0

    if TYPE_CHECKING:

        def fail(self, message: str, index: int, code: str = "qasm_syntax") -> NoReturn: ...
        def expect(self, token: str) -> None: ...
        def operand(self, quantum: bool) -> tuple[tuple[int, ...], bool, int]: ...
        def integer(self, index: int) -> int: ...
        def statement(self) -> None: ...
        def add_measure(
            self,
            qubits: tuple[tuple[int, ...], bool, int],
            bits: tuple[tuple[int, ...], bool, int],
        ) -> None: ...

    cregs: dict[str, tuple[int, int, bool, tuple[int, ...]]]
    declared_at: dict[str, int]
    gates: dict[str, Any]
    variables: dict[str, tuple[str, int | None]]
    runtime_depth: int = 0
    loop_depth: int = 0  # how many run-time while bodies enclose the statement

    if TYPE_CHECKING:

        def static_integer(self, what: str) -> int: ...
        def snapshot(self) -> tuple[Any, ...]: ...
        def restore(self, saved: tuple[Any, ...]) -> None: ...

    # -- statements -------------------------------------------------------------------

    def if_statement(self) -> None:
        """``if (cond) body [else body]``; OpenQASM 2 allows ``if (c == n) qop;`` only."""
        start = self.i
        self.i += 1
        self.expect("(")
        condition = self.condition(0)
        self.expect(")")
        if isinstance(condition, bool):
            self.static_if(condition, start)
            return
        if self.version == "qasm2":
            self.check_qasm2_condition(condition, start)
        body = self.runtime_block(start)
        orelse: tuple[Op, ...] = ()
        if self.toks[self.i] == "else":
            if self.version == "qasm2":
                self.fail("OpenQASM 2 has no 'else'", self.i)
            self.i += 1
            orelse = self.runtime_block(start)
        self.emit("if", condition, body, orelse, start)

    def static_if(self, condition: bool, start: int) -> None:
        """An ``if`` whose condition is known when parsing: the branch taken, inlined.

        The other branch is still parsed (its errors are errors), and what it would
        change (folded variables, clbits measured into) is put back.
        """
        saved = self.nested_ops
        taken = self.block(start) if condition else self.skipped_block(start)
        if self.toks[self.i] == "else":
            self.i += 1
            other = self.skipped_block(start) if condition else self.block(start)
            if not condition:
                taken = other
        self.nested_ops = saved
        self.ops.extend(taken)

    def skipped_block(self, start: int) -> tuple[Op, ...]:
        saved = self.snapshot()
        try:
            self.block(start)
        finally:
            self.restore(saved)
        return ()

    def runtime_block(self, start: int) -> tuple[Op, ...]:
        """The body of a run-time ``if``/``while``: folded variables cannot change in it."""
        self.runtime_depth += 1
        try:
            return self.block(start)
        finally:
            self.runtime_depth -= 1

    def while_statement(self) -> None:
        """``while (cond) body`` (OpenQASM 3)."""
        start = self.i
        self.require_qasm3("'while' loops", start)
        self.i += 1
        self.expect("(")
        condition_at = self.i
        condition = self.condition(0)
        self.expect(")")
        if condition is True:
            self.fail(
                "a 'while' loop whose condition is constant (true when the program is "
                "parsed) is not supported; use a 'for' loop",
                condition_at,
                "unsupported_feature",
            )
        if condition is False:
            saved = self.nested_ops
            self.skipped_block(start)
            self.nested_ops = saved
            return
        self.loop_depth += 1
        try:
            body = self.runtime_block(start)
        finally:
            self.loop_depth -= 1
        self.emit("while", condition, body, (), start)

    def for_statement(self) -> None:
        """``for [type] name in [a:b] / [a:step:b] / {v, ...} body``, unrolled here.

        The body is parsed once per value with the loop variable's tokens replaced by
        the value's digits, so the variable works wherever an integer literal does (a
        qubit or bit index, a gate parameter). Values must be non-negative.
        """
        toks = self.toks
        start = self.i
        self.require_qasm3("'for' loops", start)
        self.i += 1
        if toks[self.i] in ("int", "uint"):
            self.i += 1
            if toks[self.i] == "[":
                self.i += 1
                self.integer(self.i)
                self.i += 1
                self.expect("]")
        var = toks[self.i]
        if not var.isidentifier() or var == "in":
            self.fail(f"expected a loop variable name but found '{var}'", self.i)
        if var in self.declared_at or var in self.gates:
            # The variable is substituted token by token: it must not hide another name.
            self.fail(
                f"the loop variable '{var}' has the name of a declared register, parameter "
                "or gate; choose another name",
                self.i,
                "unsupported_feature",
            )
        self.i += 1
        self.expect("in")
        values = self.loop_values(start)
        body_start = self.i
        saved_count = self.nested_ops
        # One trial parse finds where the body ends (its token count does not change
        # with the value); an empty loop is still checked, with value 0.
        slots = self.substitute(var, body_start, len(toks), str(values[0] if values else 0))
        # An empty loop's trial parse must not change folded variables or clbits.
        saved_state = self.snapshot() if not values else None
        try:
            first = self.block(start)
        finally:
            if saved_state is not None:
                self.restore(saved_state)
        end = self.i
        for k in slots:
            toks[k] = var
        slots = [k for k in slots if k < end]
        if not values:
            self.nested_ops = saved_count
            return
        unrolled = list(first)
        for value in values[1:]:
            if len(self.ops) + self.nested_ops + len(unrolled) > self.max_ops:
                self.fail(
                    f"the program expands to more than {self.max_ops} operations",
                    start,
                    "too_large",
                )
            for k in slots:
                toks[k] = str(value)
            self.i = body_start
            unrolled.extend(self.block(start))
        for k in slots:
            toks[k] = var
        self.i = end
        self.nested_ops = saved_count
        self.ops.extend(unrolled)
        if len(self.ops) > self.max_ops:
            self.fail(
                f"the program expands to more than {self.max_ops} operations", start, "too_large"
            )

    def substitute(self, var: str, begin: int, end: int, value: str) -> list[int]:
        """Write ``value`` over every token ``var`` in ``[begin, end)``; their positions."""
        toks = self.toks
        slots = [k for k in range(begin, end) if toks[k] == var]
        for k in slots:
            toks[k] = value
        return slots

    def loop_values(self, start: int) -> list[int]:
        """``[a:b]`` / ``[a:step:b]`` (inclusive, as OpenQASM 3 ranges are) or ``{v, ...}``."""
        toks = self.toks
        if toks[self.i] == "{":
            self.i += 1
            values = [self.loop_integer()]
            while toks[self.i] == ",":
                self.i += 1
                values.append(self.loop_integer())
            self.expect("}")
            return values
        if toks[self.i] != "[":
            self.fail(
                f"a 'for' loop runs over a range '[a:b]' or a set '{{...}}', found "
                f"'{toks[self.i]}'",
                self.i,
                "unsupported_feature",
            )
        self.i += 1
        parts = [self.loop_integer()]
        while toks[self.i] == ":" and len(parts) < 3:
            self.i += 1
            parts.append(self.loop_integer())
        self.expect("]")
        if len(parts) == 1:
            self.fail("a 'for' range needs 'start:end' or 'start:step:end'", start)
        first, step, last = (parts[0], 1, parts[1]) if len(parts) == 2 else parts
        if step == 0:
            self.fail("a 'for' range's step cannot be 0", start)
        count = max(0, (last - first) // step + 1)
        if count > self.max_ops:
            self.fail(
                f"the 'for' loop runs {count:,} times; at most {self.max_ops:,} are unrolled",
                start,
                "too_large",
            )
        return list(range(first, last + (1 if step > 0 else -1), step))

    def loop_integer(self) -> int:
        return self.static_integer("a 'for' loop's range")

    def bit_initialiser(self, name: str) -> None:
        """``bit b = measure q;`` / ``bit[2] c = measure q;`` / ``= 0`` / ``= "00"``.

        Bits start at 0 in the IR, so a zero initialiser is nothing to do; any other
        constant is refused (the IR has no classical write but ``measure``).
        """
        toks = self.toks
        self.i += 1  # "="
        if toks[self.i] == "measure":
            self.i += 1
            bits_index = self.i
            qubits = self.operand(True)
            self.expect(";")
            members = self.cregs[name][3]
            self.add_measure(qubits, (members, True, bits_index))
            return
        t = toks[self.i]
        digits = t[1:-1] if t.startswith('"') else t
        zero = bool(digits) and set(digits) <= {"0", "_"} and "0" in digits
        if not zero:
            self.fail(
                f"initialising bit register '{name}' with {t} is not supported; bits start "
                "at 0 (initialise with '= measure q;')",
                self.i,
                "unsupported_feature",
            )
        self.i += 1
        self.expect(";")

    def emit(
        self,
        name: str,
        condition: Condition,
        body: tuple[Op, ...],
        orelse: tuple[Op, ...],
        start: int,
    ) -> None:
        qubits = tuple(sorted({q for op in (*body, *orelse) for q in op.qubits}))
        try:
            op = Op(name=name, qubits=qubits, condition=condition, body=body, orelse=orelse)
        except ValueError as exc:
            self.fail(f"'{name}' cannot be represented: {exc}", start)
        self.ops.append(op)

    def require_qasm3(self, what: str, index: int) -> None:
        if self.version == "qasm2":
            self.fail(f"{what} are OpenQASM 3; this program is OpenQASM 2", index)

    # -- blocks -----------------------------------------------------------------------

    def block(self, start: int) -> tuple[Op, ...]:
        """One statement or a ``{ ... }`` block, its ops collected apart from the program's."""
        toks = self.toks
        if self.control_depth >= MAX_CONTROL_DEPTH:
            self.fail(
                f"control flow nested deeper than {MAX_CONTROL_DEPTH} levels", start, "too_large"
            )
        saved = self.ops
        self.ops = []
        self.control_depth += 1
        try:
            if toks[self.i] == "{":
                if self.version == "qasm2":
                    self.fail("an OpenQASM 2 'if' controls one operation, not a block", self.i)
                open_at = self.i
                self.i += 1
                while toks[self.i] != "}":
                    if not toks[self.i]:
                        self.fail("this '{' is never closed", open_at)
                    self.block_statement()
                self.i += 1
            else:
                self.block_statement()
            body = tuple(self.ops)
        finally:
            self.ops = saved
            self.control_depth -= 1
        # Ops inside blocks are not in the program's list yet: count them here.
        self.nested_ops += len(body)
        if len(self.ops) + self.nested_ops > self.max_ops:
            self.fail(
                f"the program expands to more than {self.max_ops} operations", start, "too_large"
            )
        return body

    def block_statement(self) -> None:
        t = self.toks[self.i]
        if t in _DECLARATIONS:
            self.fail(
                f"declarations ('{t}') inside an if/while/for block are not supported; "
                "declare registers and gates at the top level",
                self.i,
                "unsupported_feature",
            )
        if self.version == "qasm2" and t == "if":
            self.fail("an OpenQASM 2 'if' cannot hold another 'if'", self.i)
        self.statement()

    # -- conditions -------------------------------------------------------------------

    def condition(self, depth: int) -> Condition:
        """``a || b || ...`` (lowest precedence)."""
        return self.connective("||", self.conjunction, depth)

    def conjunction(self, depth: int) -> Condition:
        return self.connective("&&", self.negation, depth)

    def connective(self, token: str, operand: Any, depth: int) -> Condition | bool:
        start = self.i
        args = [operand(depth)]
        while self.toks[self.i] == token:
            self.i += 1
            args.append(operand(depth + 1))
        # Operands known when parsing decide the result or drop out.
        absorbing = token == "||"
        if absorbing in args:
            return absorbing
        runtime = [a for a in args if not isinstance(a, bool)]
        if not runtime:
            return not absorbing
        if len(runtime) == 1:
            return runtime[0]
        return self.make_condition(start, depth + 1, op=_LOGIC[token], args=tuple(runtime))

    def negation(self, depth: int) -> Condition | bool:
        toks = self.toks
        start = self.i
        if depth > MAX_CONDITION_DEPTH:
            self.fail(
                f"the condition is nested deeper than {MAX_CONDITION_DEPTH} levels",
                start,
                "too_large",
            )
        if toks[self.i] == "!":
            self.i += 1
            inner = self.negation(depth + 1)
            if isinstance(inner, bool):
                return not inner
            return self.make_condition(start, depth + 1, op="not", args=(inner,))
        if toks[self.i] == "(":
            self.i += 1
            inner = self.condition(depth + 1)
            self.expect(")")
            return inner
        return self.comparison(depth)

    def comparison(self, depth: int) -> Condition | bool:
        """``bits OP n``, ``n OP bits``, ``bits`` alone (a bit is 1, a register non-zero).

        ``n`` is any value known when parsing (a literal, a constant, a folded variable,
        an expression of those); comparing two such values, or naming one alone (true
        when non-zero), gives a constant.
        """
        toks = self.toks
        start = self.i
        left = self.condition_side()
        op = toks[self.i]
        if op not in COMPARISONS:
            if isinstance(left, int):
                return left != 0
            bits, whole, _ = left
            if whole and len(bits) > 1:
                return self.make_condition(start, depth, op="!=", clbits=bits, value=0)
            return self.make_condition(start, depth, op="==", clbits=bits, value=1)
        self.i += 1
        right = self.condition_side()
        if isinstance(left, int) and isinstance(right, int):
            return COMPARE[op](left, right)
        if not isinstance(left, int) and not isinstance(right, int):
            self.fail(
                f"comparing '{toks[left[2]]}' with '{toks[right[2]]}' compares two values "
                "measured at run time; qbus's IR compares measured bits with constants only",
                start,
                "unsupported_feature",
            )
        if isinstance(left, int):
            assert not isinstance(right, int)
            return self.bits_comparison(start, depth, MIRRORED[op], right, left)
        assert isinstance(right, int)
        return self.bits_comparison(start, depth, op, left, right)

    def condition_side(self) -> int | tuple[tuple[int, ...], bool, int]:
        """One side of a comparison: bits (bits, whole, token index) or an integer."""
        toks = self.toks
        t = toks[self.i]
        if t in self.cregs:
            index = self.i
            bits, whole, _ = self.operand(False)
            return bits, whole, index
        return self.static_integer("a comparison with measured bits")

    def bits_comparison(
        self,
        start: int,
        depth: int,
        op: str,
        side: tuple[tuple[int, ...], bool, int],
        value: int,
    ) -> Condition | bool:
        bits, whole, index = side
        name = self.toks[index]
        if whole and self.variables.get(name, ("", None))[0] == "int":
            return self.signed_comparison(start, depth, op, bits, value, name)
        if value < 0:
            self.fail(
                f"'{name}' is unsigned, so comparing it with {value} is constant; compare "
                "with a non-negative integer",
                start,
                "invalid_condition",
            )
        return self.make_condition(start, depth, op=op, clbits=bits, value=value)

    def signed_comparison(
        self, start: int, depth: int, op: str, bits: tuple[int, ...], value: int, name: str
    ) -> Condition | bool:
        """``int`` bits compared in two's complement, as unsigned comparisons."""
        n = len(bits)
        low, high = -(1 << (n - 1)), (1 << (n - 1)) - 1
        if op in ("==", "!="):
            if not low <= value <= high:
                self.fail(
                    f"{value} does not fit int[{n}] '{name}' ({low}..{high})",
                    start,
                    "invalid_condition",
                )
            return self.make_condition(start, depth, op=op, clbits=bits, value=value % (1 << n))
        lo, hi = {
            "<": (low, value - 1),
            "<=": (low, value),
            ">": (value + 1, high),
            ">=": (value, high),
        }[op]
        lo, hi = max(lo, low), min(hi, high)
        if lo > hi or (lo, hi) == (low, high):
            return lo <= hi  # every value of the type, or none
        parts: list[Condition] = []
        # The non-negative part reads the same unsigned; the negative part is 2**n higher.
        for a, b in ((max(lo, 0), hi), (lo + (1 << n), min(hi, -1) + (1 << n))):
            if a > b or (a >= 1 << n) or b < 0:
                continue
            if a == b:
                parts.append(self.make_condition(start, depth, op="==", clbits=bits, value=a))
                continue
            bounds = []
            if a > 0:
                bounds.append(self.make_condition(start, depth, op=">=", clbits=bits, value=a))
            if b < (1 << n) - 1:
                bounds.append(self.make_condition(start, depth, op="<=", clbits=bits, value=b))
            parts.append(
                bounds[0]
                if len(bounds) == 1
                else self.make_condition(start, depth + 1, op="and", args=tuple(bounds))
            )
        if len(parts) == 1:
            return parts[0]
        return self.make_condition(start, depth + 2, op="or", args=tuple(parts))

    def make_condition(self, start: int, depth: int, **fields: Any) -> Condition:
        try:
            return Condition(**fields)
        except ValueError as exc:
            self.fail(f"invalid condition: {exc}", start, "invalid_condition")

    def check_qasm2_condition(self, condition: Condition, start: int) -> None:
        if condition.op != "==" or condition.args:
            self.fail(
                "an OpenQASM 2 condition is 'creg == integer'; '!=', '<', '&&', '||' and "
                "'!' are OpenQASM 3",
                start,
            )


# -- export -------------------------------------------------------------------------------

WriteOps = Callable[[Sequence[Op], str], None]


def write_control(
    op: Op, c: str, num_clbits: int, indent: str, lines: list[str], write: WriteOps
) -> None:
    """Append the OpenQASM 3 text of an ``if``/``while`` op to ``lines``.

    Args:
        op: The control-flow op.
        c: The name of the program's one bit register.
        num_clbits: Its size.
        indent: The indentation of the statement.
        lines: Where the text goes.
        write: Writes a nested op list at a given indentation (the exporter's own).
    """
    assert op.condition is not None  # the IR guarantees it
    head = "while" if op.name == "while" else "if"
    lines.append(f"{indent}{head} ({condition_text(op.condition, c, num_clbits)}) {{")
    write(op.body, indent + "  ")
    if op.orelse:
        lines.append(f"{indent}}} else {{")
        write(op.orelse, indent + "  ")
    lines.append(f"{indent}}}")


def condition_text(cond: Condition, c: str, num_clbits: int) -> str:
    """A condition as OpenQASM 3 text over the register ``c`` of ``num_clbits`` bits.

    Raises:
        CircuitError: ``unsupported_feature`` for a comparison that is constant on a
            subset of the register's bits (OpenQASM 3 has no literal to write it with
            here).
    """
    if cond.op == "not":
        return f"!({condition_text(cond.args[0], c, num_clbits)})"
    if cond.op in ("and", "or"):
        joiner = " && " if cond.op == "and" else " || "
        return joiner.join(f"({condition_text(a, c, num_clbits)})" for a in cond.args)
    if cond.clbits == tuple(range(num_clbits)):
        return f"{c} {cond.op} {cond.value}"
    if len(cond.clbits) == 1:
        return f"{c}[{cond.clbits[0]}] {cond.op} {cond.value}"
    return _bitwise(cond, c)


def _bitwise(cond: Condition, c: str) -> str:
    # A comparison on an arbitrary bit subset, spelled out as a Boolean formula.
    bits = [f"{c}[{k}]" for k in cond.clbits]
    v = cond.value
    if cond.op in ("==", "!="):
        eq = " && ".join(f"{b} == {(v >> k) & 1}" for k, b in enumerate(bits))
        return eq if cond.op == "==" else f"!({eq})"
    bound = v + 1 if cond.op in ("<=", ">") else v
    if bound >> len(bits) or bound == 0:
        raise CircuitError(
            f"the condition '{cond.op} {v}' on {len(bits)} bits is constant; it cannot be "
            "written in OpenQASM 3 here",
            code="unsupported_feature",
        )
    # reg < bound, from the least significant bit up (None: false so far).
    less: str | None = None
    for k, b in enumerate(bits):
        if (bound >> k) & 1:
            less = f"{b} == 0" if less is None else f"({b} == 0 || ({less}))"
        elif less is not None:
            less = f"({b} == 0 && ({less}))"
    assert less is not None  # bound > 0 has a set bit
    return less if cond.op in ("<", "<=") else f"!({less})"


__all__ = ["ControlStatements", "condition_text", "write_control"]
