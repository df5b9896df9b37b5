"""A tiny, safe expression language for gate parameters.

A parameter of an IR op is a number or a string such as ``"2*theta + pi/4"``. This module
parses those strings without ``eval``: numbers, names, the constants ``pi``/``π``,
``tau``/``τ``, ``euler``/``ℇ``, the operators ``+ - * /`` and ``**`` (``^`` is a synonym,
as in OpenQASM 2), unary ``-``/``+``, parentheses and the one-argument functions ``sin``,
``cos``, ``tan``, ``exp``, ``ln``, ``sqrt``, ``arcsin``, ``arccos`` and ``arctan``.

A parsed expression (:data:`Expr`) is a tree of plain tuples, chosen over dataclasses
because they are cheap to build, hashable (so trees can key caches) and compare by value:

* ``("num", value)`` — a finite float (constants are parsed straight to their value);
* ``("name", name)`` — a free parameter;
* ``("neg", operand)``;
* ``("bin", op, left, right)`` with ``op`` one of ``+ - * / **``;
* ``("call", function, argument)``.

The OpenQASM parser (:mod:`qbus.frontends.qasm`) shares the grammar through
:func:`parse_tokens`, so both read ``-2**2`` the same way (as ``-(2**2)``, like Python).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeAlias

from qbus.errors import CircuitError
from qbus.frontends.bounds import clipped

Expr: TypeAlias = tuple[Any, ...]

CONSTANTS: dict[str, float] = {
    "pi": math.pi,
    "π": math.pi,
    "tau": math.tau,
    "τ": math.tau,
    "euler": math.e,
    "ℇ": math.e,
}

FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "exp": math.exp,
    "ln": math.log,
    "sqrt": math.sqrt,
    "arcsin": math.asin,
    "arccos": math.acos,
    "arctan": math.atan,
}

# Nesting bound (parentheses, unary signs, and links of a + or * chain all count): recursive
# descent and the tree walkers use a few Python frames per level, and a hostile
# "((((...))))" must end in a ValueError, never a RecursionError.
MAX_DEPTH = 64

# One token per match; the empty alternative at \Z yields a final "" that serves as the
# end-of-input sentinel, so the parser never checks bounds. Matches are contiguous (the
# last alternative takes any other character), which keeps positions recoverable.
_TOKEN_RE = re.compile(
    r"\s*+("
    r"[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
    r"|[^\W\d]\w*"
    r"|\*\*|\S|\Z)"
)

_DIGITS = frozenset("0123456789")


class ExprSyntaxError(ValueError):
    """An expression that does not parse.

    Attributes:
        index: Index of the offending token in the token sequence that was parsed.
        reason: The message without position information.
    """

    def __init__(self, reason: str, index: int):
        super().__init__(reason)
        self.reason = reason
        self.index = index


def is_number_token(token: str) -> bool:
    """Whether a token produced by this module's (or the QASM) tokenizer is a number."""
    return bool(token) and (token[0] in _DIGITS or (token[0] == "." and len(token) > 1))


class _Parser:
    __slots__ = ("depth", "i", "toks")

    def __init__(self, tokens: Sequence[str], index: int):
        self.toks = tokens
        self.i = index
        self.depth = 0

    def expr(self) -> Expr:
        left = self.term()
        toks = self.toks
        depth = self.depth
        while True:
            t = toks[self.i]
            if t == "+" or t == "-":
                # A chain a+b+c builds a left-deep tree: each link counts as a level.
                self.deeper()
                self.i += 1
                left = ("bin", t, left, self.term())
            else:
                self.depth = depth
                return left

    def term(self) -> Expr:
        left = self.unary()
        toks = self.toks
        depth = self.depth
        while True:
            t = toks[self.i]
            if t == "*" or t == "/":
                self.deeper()
                self.i += 1
                left = ("bin", t, left, self.unary())
            else:
                self.depth = depth
                return left

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprSyntaxError(f"expression is nested more than {MAX_DEPTH} deep", self.i)

    def unary(self) -> Expr:
        # Every recursive path passes through here, so this is where nesting is bounded.
        self.deeper()
        t = self.toks[self.i]
        if t == "-":
            self.i += 1
            result: Expr = ("neg", self.unary())
        elif t == "+":
            self.i += 1
            result = self.unary()
        else:
            result = self.power()
        self.depth -= 1
        return result

    def power(self) -> Expr:
        base = self.atom()
        t = self.toks[self.i]
        if t == "**" or t == "^":
            self.i += 1
            # Right-associative, and the exponent may carry a sign: 2**-1, 2**3**2.
            return ("bin", "**", base, self.unary())
        return base

    def atom(self) -> Expr:
        toks = self.toks
        t = toks[self.i]
        if not t:
            raise ExprSyntaxError("expression ends too early", self.i)
        if is_number_token(t):
            value = float(t)
            if not math.isfinite(value):
                raise ExprSyntaxError(f"number {clipped(t)} is too large", self.i)
            self.i += 1
            return ("num", value)
        if t == "(":
            self.i += 1
            inner = self.expr()
            self.expect(")")
            return inner
        if t.isidentifier():
            start = self.i
            self.i += 1
            constant = CONSTANTS.get(t)
            if constant is not None:
                return ("num", constant)
            if t in FUNCTIONS:
                if toks[self.i] != "(":
                    raise ExprSyntaxError(
                        f"function '{t}' needs an argument in parentheses", self.i
                    )
                self.i += 1
                arg = self.expr()
                if toks[self.i] == ",":
                    raise ExprSyntaxError(f"function '{t}' takes one argument", self.i)
                self.expect(")")
                return ("call", t, arg)
            if toks[self.i] == "(":
                known = ", ".join(FUNCTIONS)
                raise ExprSyntaxError(f"unknown function '{t}' (known: {known})", start)
            return ("name", t)
        raise ExprSyntaxError(f"unexpected '{t}' in expression", self.i)

    def expect(self, token: str) -> None:
        t = self.toks[self.i]
        if t != token:
            found = f"'{t}'" if t else "the end"
            raise ExprSyntaxError(f"expected '{token}' but found {found}", self.i)
        self.i += 1


def parse_tokens(tokens: Sequence[str], index: int = 0) -> tuple[Expr, int]:
    """Parse one expression from a token sequence, stopping at the first token that ends it.

    The sequence must end with an empty-string sentinel. This is how the OpenQASM parser
    reuses the grammar: it hands over its own token list and continues where this stops.

    Args:
        tokens: Token strings as produced by this module's or the QASM tokenizer.
        index: Where the expression starts.

    Returns:
        The tree and the index of the first token after the expression.

    Raises:
        ExprSyntaxError: With the index of the offending token.
    """
    parser = _Parser(tokens, index)
    tree = parser.expr()
    return tree, parser.i


def _tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _offset(text: str, index: int) -> int:
    for n, match in enumerate(_TOKEN_RE.finditer(text)):
        if n == index:
            return match.start(1)
    return len(text)


def _shorten(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def parse(text: str) -> Expr:
    """Parse an expression string into a tree.

    Args:
        text: For example ``"2*theta + pi/4"``.

    Returns:
        The expression tree (see the module docstring for its shape).

    Raises:
        ValueError: (an :class:`ExprSyntaxError`) saying what is wrong and at which character.
    """
    tokens = _tokenize(text)
    try:
        if not tokens[0]:
            raise ExprSyntaxError("empty expression", 0)
        tree, end = parse_tokens(tokens, 0)
        if tokens[end]:
            raise ExprSyntaxError(f"unexpected '{tokens[end]}' after the expression", end)
    except ExprSyntaxError as exc:
        column = _offset(text, exc.index) + 1
        raise ExprSyntaxError(
            f"bad expression {_shorten(text)}: {exc.reason} (at character {column})", exc.index
        ) from None
    return tree


# Parsing is pure, so a tree per distinct text is cached: the same few expression strings
# are seen again and again when a circuit is validated, hashed and bound.
_parse_cached = lru_cache(maxsize=4096)(parse)


def _collect_names(tree: Expr, out: set[str]) -> None:
    kind = tree[0]
    if kind == "name":
        out.add(tree[1])
    elif kind == "neg":
        _collect_names(tree[1], out)
    elif kind == "bin":
        _collect_names(tree[2], out)
        _collect_names(tree[3], out)
    elif kind == "call":
        _collect_names(tree[2], out)


def names_of(tree: Expr) -> frozenset[str]:
    """The free parameter names in a parsed expression."""
    out: set[str] = set()
    _collect_names(tree, out)
    return frozenset(out)


@lru_cache(maxsize=4096)
def free_names(text: str) -> frozenset[str]:
    """The free parameter names in an expression string (constants and functions excluded).

    Args:
        text: An expression string.

    Returns:
        The names a value must be bound for, e.g. ``{"theta"}`` for ``"2*theta + pi"``.

    Raises:
        ValueError: When the text is not a valid expression.
    """
    return names_of(_parse_cached(text))


def _apply(op: str, a: float, b: float) -> float:
    # Raises ZeroDivisionError, OverflowError or ValueError (math domain); callers map them.
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    # math.pow, not **: a negative base with a fractional exponent must fail, not turn
    # into a complex number.
    return math.pow(a, b)


def _compute(tree: Expr, values: Mapping[str, float]) -> float:
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "name":
        try:
            return values[tree[1]]
        except KeyError:
            raise CircuitError(
                f"parameter '{tree[1]}' has no value; pass it in the job's 'parameters'",
                code="unbound_parameter",
            ) from None
    if kind == "neg":
        return -_compute(tree[1], values)
    if kind == "bin":
        return _apply(tree[1], _compute(tree[2], values), _compute(tree[3], values))
    return FUNCTIONS[tree[1]](_compute(tree[2], values))


def _describe_math_error(exc: Exception) -> str:
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, OverflowError):
        return "result is too large"
    return "undefined result (math domain error)"


def evaluate(text: str, values: Mapping[str, float]) -> float:
    """Evaluate an expression string with the given parameter values.

    Args:
        text: An expression string.
        values: A value for every free name in it.

    Returns:
        The value, a finite float.

    Raises:
        ValueError: When the text is not a valid expression.
        CircuitError: Code ``unbound_parameter`` when a name has no value;
            code ``invalid_parameter`` when the value is undefined or not finite
            (division by zero, ``ln(0)``, overflow).
    """
    tree = _parse_cached(text)
    try:
        result = float(_compute(tree, values))
    except (ZeroDivisionError, OverflowError, ValueError) as exc:
        raise CircuitError(
            f"parameter expression {text!r} cannot be evaluated: {_describe_math_error(exc)}",
            code="invalid_parameter",
        ) from None
    if not math.isfinite(result):
        raise CircuitError(
            f"parameter expression {text!r} is not finite ({result})", code="invalid_parameter"
        )
    return result


class _FoldError(ValueError):
    """A constant part of an expression has no finite value (raised once, not re-wrapped)."""


def substitute(tree: Expr, mapping: Mapping[str, Expr]) -> Expr:
    """Replace names by expressions (used when a QASM gate definition is inlined).

    Args:
        tree: The expression.
        mapping: Replacement tree per name; names not in it are kept.

    Returns:
        The new tree (shared subtrees are reused, nothing is mutated).
    """
    kind = tree[0]
    if kind == "num":
        return tree
    if kind == "name":
        return mapping.get(tree[1], tree)
    if kind == "neg":
        return ("neg", substitute(tree[1], mapping))
    if kind == "bin":
        return ("bin", tree[1], substitute(tree[2], mapping), substitute(tree[3], mapping))
    return ("call", tree[1], substitute(tree[2], mapping))


def node_count(tree: Expr, limit: int) -> int:
    """Count the nodes of a tree, stopping once the count passes ``limit``.

    Shared subtrees count once per use: that is the size every tree walker sees. Repeated
    substitution can make that size exponential in the size of the (shared) structure,
    so callers check it, at a cost of at most ``limit`` steps, before walking the tree.
    """
    count = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            break
        kind = node[0]
        if kind == "bin":
            stack.append(node[2])
            stack.append(node[3])
        elif kind == "neg":
            stack.append(node[1])
        elif kind == "call":
            stack.append(node[2])
    return count


def simplify(tree: Expr) -> Expr:
    """Fold every constant subtree into a number; nothing else is rewritten.

    Only exact identities are used (``-(-x)`` is ``x``), so folding never changes a value
    beyond the rounding of the constant arithmetic itself.

    Raises:
        ValueError: When a constant part is undefined or not finite (``1/0``, ``ln(0)``).
    """
    kind = tree[0]
    if kind == "num" or kind == "name":
        return tree
    if kind == "neg":
        inner = simplify(tree[1])
        if inner[0] == "num":
            return ("num", -inner[1])
        if inner[0] == "neg":
            return inner[1]
        return ("neg", inner)
    try:
        if kind == "bin":
            left = simplify(tree[2])
            right = simplify(tree[3])
            if left[0] != "num" or right[0] != "num":
                return ("bin", tree[1], left, right)
            value = _apply(tree[1], left[1], right[1])
        else:
            arg = simplify(tree[2])
            if arg[0] != "num":
                return ("call", tree[1], arg)
            value = FUNCTIONS[tree[1]](arg[1])
    except _FoldError:
        raise
    except (ZeroDivisionError, OverflowError, ValueError) as exc:
        raise _FoldError(f"{_describe_math_error(exc)} in a parameter expression") from None
    if not math.isfinite(value):
        raise _FoldError(f"a parameter expression evaluates to {value}")
    return ("num", value)


# Binding strength for printing: sums < products < unary minus < powers < atoms.
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "**": 4}


def _format(tree: Expr) -> tuple[str, int]:
    kind = tree[0]
    if kind == "num":
        text = repr(float(tree[1]))
        # A negative literal reads back as unary minus applied to a number.
        return (text, 3) if text[0] == "-" else (text, 5)
    if kind == "name":
        return tree[1], 5
    if kind == "call":
        return f"{tree[1]}({_format(tree[2])[0]})", 5
    if kind == "neg":
        text, prec = _format(tree[1])
        return ("-" + (text if prec >= 3 else f"({text})")), 3
    op = tree[1]
    prec = _PRECEDENCE[op]
    left, left_prec = _format(tree[2])
    right, right_prec = _format(tree[3])
    if op == "**":
        # The base must be an atom (``(-x) ** 2``, ``(a ** b) ** c``); the exponent may be
        # anything from unary minus up, since ``**`` is right-associative.
        if left_prec <= 4:
            left = f"({left})"
        if right_prec < 3:
            right = f"({right})"
        return f"{left} ** {right}", 4
    # Parentheses on an equal-precedence right operand are kept: ``a - (b - c)`` needs
    # them, and ``a + (b + c)`` keeps them so a reparse gives the same tree, hence the
    # same floating-point result.
    if left_prec < prec:
        left = f"({left})"
    if right_prec <= prec:
        right = f"({right})"
    return f"{left} {op} {right}", prec


def to_text(tree: Expr) -> str:
    """Format a tree with minimal parentheses; floats via ``repr`` so they read back exactly."""
    return _format(tree)[0]


def fold(expr: Expr) -> float | str:
    """Constant-fold an expression.

    Args:
        expr: A parsed expression.

    Returns:
        A float when the expression has no free names; otherwise its canonical text
        (constant parts folded, minimal parentheses, floats via ``repr``), which
        satisfies ``fold(parse(text)) == text``.

    Raises:
        ValueError: When a constant part is undefined or not finite.
    """
    tree = simplify(expr)
    if tree[0] == "num":
        return float(tree[1])
    return to_text(tree)


@lru_cache(maxsize=4096)
def canonical(text: str) -> float | str:
    """``fold(parse(text))``, cached: the normal form of a parameter string.

    Two spellings of one expression (``"2*theta"``, ``"2.0 * theta"``) give the same
    result, so a caller can normalise parameters before hashing a circuit.

    Raises:
        ValueError: When the text is not a valid expression or a constant part is undefined.
    """
    return fold(_parse_cached(text))
