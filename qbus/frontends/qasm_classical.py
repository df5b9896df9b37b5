"""OpenQASM 3 classical variables: ``int``, ``uint``, ``bool``, ``float``, ``angle``.

A mixin of the OpenQASM parser (``qbus.frontends.qasm._Parser``), beside
:mod:`qbus.frontends.qasm_control`. The IR has classical bits, written only by
``measure`` and read only by ``if``/``while`` conditions: it has no classical arithmetic
at run time. So a classical variable is one of two things:

* **folded**: while it holds a value known when the program is parsed (a constant
  initialiser, or none, meaning 0 / false; assignments of such values in program order,
  ``for`` loops included, as they are unrolled), the parser keeps that value and puts it
  wherever the name is used (gate parameters, register sizes, loop ranges, conditions,
  modifier arguments), exactly like a ``const``;
* **measured**: declared or assigned from ``measure``, it becomes classical bits in the
  circuit (allocated like a ``bit`` register, in declaration order, so they appear in the
  counts), and conditions on it become IR conditions on those bits. A signed ``int``
  compared with a constant is mapped to the unsigned comparisons the IR has (two's
  complement).

Everything that needs computing on run-time values is refused with
``unsupported_feature``: arithmetic on measured variables, a gate parameter that
depends on one, assigning a folded variable inside an ``if``/``while`` body (whether the
body runs is known only at run time), and measuring into ``float``/``angle``.

Widths: ``int``/``uint`` without a width are 32 bits while folded (values wrap modulo
2**32, signed values in two's complement, as for ``int[32]``); measured into, they take
the width of what is measured. ``float``/``angle`` values are kept as reals (an
``angle[n]`` is not rounded to n bits, as for ``const``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qbus.frontends import expr as _expr
from qbus.frontends.bounds import clipped
from qbus.schemas.ir import Condition, Op

if TYPE_CHECKING:
    from typing import NoReturn

    from qbus.frontends.expr import Expr

TYPES = frozenset({"int", "uint", "bool", "float", "angle"})
ASSIGNMENTS = {"=": "", "+=": "+", "-=": "-", "*=": "*", "/=": "/"}
# Compound assignments the tokenizer splits in two ("&" then "="): named in the refusal.
_OTHER_COMPOUND = frozenset({"&", "|", "^", "%", "<<", ">>", "**", "~"})
# Tokens after a name that may make a statement an assignment (a cheap first test).
ASSIGNING = frozenset({*ASSIGNMENTS, *_OTHER_COMPOUND, "[", "++"})
DEFAULT_WIDTH = 32
_BOOLS: dict[str, Expr] = {"true": ("num", 1.0), "false": ("num", 0.0)}
_ARITHMETIC = frozenset({"+", "-", "*", "/", "**", "^", "("})
_NO_ARITHMETIC = "qbus's IR has no classical arithmetic at run time"


class ClassicalVariables:
    """Declarations and assignments of classical variables, mixed into the parser."""

    toks: list[str]
    i: int
    ops: list[Op]
    consts: dict[str, Expr]
    scope: dict[str, int]
    declared_at: dict[str, int]
    cregs: dict[str, tuple[int, int, bool, tuple[int, ...]]]
    num_clbits: int
    # name -> (type, declared width or None); folded and measured variables alike.
    variables: dict[str, tuple[str, int | None]]
    folded: set[str]  # variables whose value is in ``consts``
    runtime_depth: int = 0  # how many run-time if/while bodies enclose the statement
    loop_depth: int = 0  # how many of those are while bodies

    if TYPE_CHECKING:

        def fail(self, message: str, index: int, code: str = "qasm_syntax") -> NoReturn: ...
        def expect(self, token: str) -> None: ...
        def integer(self, index: int) -> int: ...
        def operand(self, quantum: bool) -> tuple[tuple[int, ...], bool, int]: ...
        def size(self, index: int, what: str) -> int: ...
        def new_name(self, index: int, what: str) -> str: ...
        def expression(self, allowed: Any, gate: str | None) -> Expr: ...
        def simplify(self, tree: Expr, index: int) -> Expr: ...
        def condition(self, depth: int) -> Condition | bool: ...
        def declare(
            self, quantum: bool, name: str, size: int, single: bool, index: int, size_index: int
        ) -> None: ...
        def add_measure(
            self,
            qubits: tuple[tuple[int, ...], bool, int],
            bits: tuple[tuple[int, ...], bool, int],
        ) -> None: ...

    # -- declarations -----------------------------------------------------------------

    def classical_declaration(self) -> None:
        """``uint[4] n = 3;`` / ``bool b;`` / ``float f = pi/2;`` / ``int[2] m = measure q;``."""
        toks = self.toks
        kind = toks[self.i]
        self.i += 1
        width: int | None = None
        size_index = self.i
        if toks[self.i] == "[":
            size_index = self.i + 1
            width = self.size(size_index, "type")
            self.i += 2
            self.expect("]")
        if kind == "bool" and width is not None:
            self.fail("'bool' takes no width", size_index)
        index = self.i
        name = self.new_name(index, "variable")
        self.i += 1
        if toks[self.i] == "=" and toks[self.i + 1] == "measure":
            self.i += 2
            self.measured(name, kind, width, index, size_index)
            return
        value: Expr = ("num", 0.0)
        if toks[self.i] == "=":
            self.i += 1
            value = self.compile_time_value(name, kind, width, index)
        self.expect(";")
        self.declared_at[name] = index
        self.variables[name] = (kind, width)
        self.folded.add(name)
        self.consts[name] = value
        self.scope[name] = index

    def measured(
        self, name: str, kind: str, width: int | None, index: int, size_index: int
    ) -> None:
        """The variable becomes clbits written by ``measure`` (``self.i`` past ``measure``)."""
        if kind in ("float", "angle"):
            self.fail(
                f"measuring into '{kind}' variable '{name}' is not supported; measure into "
                "'bit', 'bool', 'int' or 'uint'",
                index,
                "unsupported_feature",
            )
        bits_index = self.i
        qubits = self.operand(True)
        self.expect(";")
        single = kind == "bool"
        size = 1 if single else width if width is not None else len(qubits[0])
        self.declare(False, name, size, single, index, size_index)
        self.variables[name] = (kind, width)
        self.add_measure(qubits, (self.cregs[name][3], True, bits_index))

    def compile_time_value(self, name: str, kind: str, width: int | None, index: int) -> Expr:
        """The value of an initialiser or right-hand side, known when parsing."""
        start = self.i
        toks = self.toks
        if any(toks[k] == "measure" for k in range(start, self.end_of_statement())):
            self.fail(
                f"a measurement inside an expression needs classical computation; {_NO_ARITHMETIC}"
                " (assign it alone: 'x = measure q;')",
                start,
                "unsupported_feature",
            )
        if kind == "bool":
            truth = self.condition(0)
            if not isinstance(truth, bool):
                self.runtime_value(name, start)
            return ("num", 1.0 if truth else 0.0)
        tree = self.value_expression(start)
        return self.coerce(name, kind, width, tree, start)

    def value_expression(self, start: int) -> Expr:
        """An arithmetic expression over constants, folded variables and inputs, folded."""
        tree = self.expression(_Scope(self.scope), None)
        return self.simplify(_expr.substitute(tree, {**_BOOLS, **self.consts}), start)

    def end_of_statement(self) -> int:
        toks = self.toks
        k = self.i
        while toks[k] and toks[k] != ";":
            k += 1
        return k

    def coerce(self, name: str, kind: str, width: int | None, tree: Expr, index: int) -> Expr:
        """Check a folded value against the variable's type; wrap integers to the width."""
        if tree[0] != "num":
            if kind in ("float", "angle"):
                return tree  # depends on an input: bound when the job runs, like a parameter
            self.fail(
                f"'{name}' is {kind}, but its value '{clipped(_expr.to_text(tree))}' depends "
                "on an input parameter; only float and angle variables may",
                index,
                "unsupported_feature",
            )
        value = float(tree[1])
        if kind in ("float", "angle"):
            return tree
        if not value.is_integer():
            self.fail(
                f"'{name}' is {kind}, but the value assigned is {value!r}; write an integer",
                index,
                "invalid_parameter",
            )
        bits = width if width is not None else DEFAULT_WIDTH
        number = int(value) % (1 << bits)
        if kind == "int" and number >> (bits - 1):
            number -= 1 << bits
        return ("num", float(number))

    def runtime_value(self, name: str, index: int) -> NoReturn:
        self.fail(
            f"the value assigned to '{name}' depends on measured bits, known only at run "
            f"time; {_NO_ARITHMETIC}",
            index,
            "unsupported_feature",
        )

    def static_integer(self, what: str) -> int:
        """An integer known when parsing at ``self.i`` (consumed): a literal, ``true``/
        ``false``, a constant or folded variable, or an expression of those."""
        toks = self.toks
        start = self.i
        t = toks[start]
        if t.isdigit() and t.isascii() and toks[start + 1] not in _ARITHMETIC:
            self.i += 1
            return self.integer(start)
        tree = self.value_expression(start)
        if tree[0] != "num":
            self.fail(
                f"{what} needs a value known when the program is parsed; "
                f"'{clipped(_expr.to_text(tree))}' depends on an input parameter",
                start,
                "unsupported_feature",
            )
        value = float(tree[1])
        if not value.is_integer():
            self.fail(f"{what} takes integers; {value!r} is not one", start)
        return int(value)

    def snapshot(self) -> tuple[Any, ...]:
        """What parsing a statement may change in the classical state (see :meth:`restore`)."""
        return (
            dict(self.consts),
            dict(self.scope),
            set(self.folded),
            dict(self.cregs),
            self.num_clbits,
            dict(self.declared_at),
        )

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Undo a statement parsed only for its errors (a branch not taken, an empty loop)."""
        consts, scope, folded, cregs, num_clbits, declared_at = saved
        self.consts.clear()
        self.consts.update(consts)
        self.scope.clear()
        self.scope.update(scope)
        self.folded.clear()
        self.folded.update(folded)
        self.cregs.clear()
        self.cregs.update(cregs)
        self.num_clbits = num_clbits
        self.declared_at.clear()
        self.declared_at.update(declared_at)

    # -- assignments ------------------------------------------------------------------

    def is_assignment(self, name: str, following: str) -> bool:
        """Whether the statement at ``self.i`` assigns a classical variable."""
        if following in ASSIGNMENTS:
            return name in self.variables or name in self.consts or name in self.cregs
        return (name in self.variables or name in self.cregs) and (
            following in _OTHER_COMPOUND or following == "[" or following == "++"
        )

    def classical_assignment(self) -> None:
        """``x = 3;`` / ``x += i;`` / ``x = measure q;`` on a declared variable."""
        toks = self.toks
        start = self.i
        name = toks[start]
        op = toks[start + 1]
        if name in self.cregs:
            self.fail(
                f"'{name}' holds measured bits: '{clipped(op)}' on it needs classical "
                f"computation at run time; {_NO_ARITHMETIC}",
                start,
                "unsupported_feature",
            )
        if name not in self.variables:
            self.fail(f"'{name}' is a constant and cannot be assigned", start)
        kind, width = self.variables[name]
        if op not in ASSIGNMENTS:
            what = "indexing" if op == "[" else f"'{clipped(op)}'"
            self.fail(
                f"{what} on classical variable '{name}' is not supported (assignments are "
                "'=', '+=', '-=', '*=' and '/=')",
                start + 1,
                "unsupported_feature",
            )
        self.i = start + 2
        if op == "=" and toks[self.i] == "measure":
            self.i += 1
            self.measure_into_folded(name, kind, width, start)
            return
        if self.runtime_depth:
            self.fail(
                f"assigning '{name}' inside an 'if' or 'while' body is not supported: whether "
                "the body runs is known only at run time, so the value of "
                f"'{name}' after it is not known when the program is parsed; {_NO_ARITHMETIC}",
                start,
                "unsupported_feature",
            )
        value = self.compile_time_value(name, kind, width, start)
        if op != "=":
            if kind == "bool":
                self.fail(f"'{op}' does not apply to bool '{name}'", start + 1)
            value = self.coerce(
                name,
                kind,
                width,
                self.simplify(("bin", ASSIGNMENTS[op], self.consts[name], value), start),
                start,
            )
        self.expect(";")
        self.consts[name] = value

    def measure_into_folded(self, name: str, kind: str, width: int | None, start: int) -> None:
        """``x = measure q;`` on a folded variable: it becomes clbits from here on."""
        if self.loop_depth:
            # The body was read once, with the folded value before this point; from the
            # second iteration on, those reads would have to see the measured bits.
            self.fail(
                f"'{name}' holds a value known when parsing and is first measured into "
                "inside a 'while' body, where its earlier reads in the body would need "
                f"the measured value from the second iteration on; measure into '{name}' "
                "before the loop, or declare it with a measurement",
                start,
                "unsupported_feature",
            )
        if self.runtime_depth and self.consts[name] != ("num", 0.0):
            self.fail(
                f"'{name}' holds {clipped(_expr.to_text(self.consts[name]))} and is measured "
                "into inside an 'if' or 'while' body: after the body it holds one or the "
                f"other, which needs a classical write at run time; {_NO_ARITHMETIC}",
                start,
                "unsupported_feature",
            )
        self.folded.discard(name)
        del self.consts[name]
        del self.scope[name]
        del self.declared_at[name]
        self.measured(name, kind, width, start, start)


class _Scope:
    """The names an initialiser may use: the parser's scope plus ``true``/``false``."""

    __slots__ = ("names",)

    def __init__(self, names: dict[str, int]):
        self.names = names

    def __contains__(self, name: object) -> bool:
        return name in self.names or name in _BOOLS


__all__ = ["ASSIGNING", "ASSIGNMENTS", "DEFAULT_WIDTH", "TYPES", "ClassicalVariables"]
