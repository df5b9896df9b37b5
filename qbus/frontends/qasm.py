"""OpenQASM 2.0 and OpenQASM 3 (gate-level subset) to the IR, and the IR to OpenQASM 3.

The parser is hand-written (one precompiled tokenizer regex plus recursive descent) because
it runs once per job in the ingest stage: it must be fast and its errors must say exactly
where the problem is. Every error is a :class:`~qbus.errors.QasmSyntaxError` with a 1-based
line and column of the offending token and a stable ``code``:

``qasm_syntax``
    Text that does not fit the grammar.
``unknown_gate``
    A gate that is neither built in nor defined (close names are suggested).
``unknown_register``
    A qubit or bit register that is not declared (or of the wrong kind).
``unknown_parameter``
    A name in a gate parameter that is not a declared ``input`` (or gate parameter).
``qubit_out_of_range`` / ``clbit_out_of_range``
    An index past the end of its register.
``wrong_arity``
    A gate called with the wrong number of qubits or parameters.
``duplicate_qubit``
    One qubit used twice in one gate call or barrier.
``duplicate_declaration``
    A register, input or gate declared twice, or a redefinition of an included gate.
``invalid_parameter``
    A parameter whose constant part has no finite value (``1/0``, ``ln(0)``).
``invalid_condition``
    A classical condition the IR cannot hold (``c == 9`` on a 3-bit register).
``unsupported_feature``
    Valid OpenQASM that the IR cannot hold: classical computation at run time (arithmetic
    on measured variables, a gate parameter that depends on one, assigning a folded
    variable inside an ``if``/``while`` body), ``complex``/``duration``/array variables,
    subroutines, ``let`` aliases, ``opaque``, slices, a non-integer ``pow`` of
    anything but one rotation or phase gate, a non-constant modifier argument, physical
    and declared qubits in one program, durations other than a literal, ...
``unsupported_include``
    An include other than ``qelib1.inc`` / ``stdgates.inc`` (whose gates are built in).
``empty_program``
    Nothing but whitespace and comments, or a program that declares no qubits.
``too_large``
    Text over ``max_bytes``, more than the IR's qubit limit, or more than ``max_ops`` ops
    once gate definitions are inlined and registers broadcast.

What the parser produces:

* registers are flattened in declaration order into one qubit and one clbit index space;
* user ``gate`` definitions are inlined with their parameters substituted, constant parts
  folded (:func:`qbus.frontends.expr.fold`); a parameter that still depends on an ``input``
  stays an expression string in canonical form;
* ``measure`` and ``reset`` give one op per qubit (register broadcasts are expanded, as
  OpenQASM defines them); a ``barrier`` statement gives one op with all its qubits, and
  ``barrier;`` (OpenQASM 3: every qubit) gives a barrier with no qubits;
* global phase (``gphase``) is dropped where it reaches the circuit, as the IR has none and
  no result (counts, probabilities, expectation values, a state vector compared up to
  global phase) depends on it; inside a gate definition it is kept until the gate is
  called, so that ``ctrl @`` of a gate with a global phase gets it as a phase gate on the
  control (``ctrl @ gphase(θ) q;`` is ``p(θ) q;``);
* gate modifiers ``inv @``, ``pow(k) @``, ``ctrl(n) @`` and ``negctrl(n) @`` (also inside
  gate bodies, on any gate) are expanded into IR gates exactly, global phase included:
  see :mod:`qbus.frontends.gate_modifiers` for the rules (integer powers by repetition or
  inversion, non-integer powers of one rotation or phase-family gate by scaling its
  angle, controls onto the IR's controlled gates or gate by gate through exact bodies);
  ``k`` and ``n`` must be constant;
* ``const`` declarations (``int``, ``uint``, ``float``, ``angle``, ``bool``, or untyped) are folded
  into every parameter, register size and modifier argument that names them;
* ``int``/``uint``/``bool``/``float``/``angle`` variables are folded the same way while
  their values are known when parsing, and become clbits when measured into
  (:mod:`qbus.frontends.qasm_classical`);
* physical qubits ``$n`` (what Qiskit's exporter writes after transpiling) are IR qubit
  ``n``: the circuit has as many qubits as the highest index used needs, unused ones
  included; a program cannot also declare qubits (the mapping between the two is the
  compiler's, so it is refused rather than guessed);
* ``delay[d]`` is the identity for a simulator and gives no op; ``box[d] { ... }`` is its
  body; durations must be literals (``100ns``, ``2.5us``, ``30dt``) and are not kept;
* Qiskit's ``qelib1.inc`` gates that the IR has no gate for (``rccx``, ``rc3x``, ``c3x``,
  ``c3sqrtx``, ``c4x``) are inlined with that file's definitions
  (:mod:`qbus.frontends.gate_library`), and Qiskit's legacy ``delay(t) q;`` is dropped;
* ``u0`` becomes ``id``, and qelib1's ``cu3(θ,φ,λ)`` becomes ``cu(θ,φ,λ,0)``;
* ``Circuit.parameters`` lists every declared ``input`` (sorted), used or not, so that
  declaring a parameter is what makes a job have to bind it, and exports round-trip.

Gate names are resolved leniently: a known IR gate or alias may be used without its
include, and a program may define its own gate under a name that its includes do not
define. A definition under an IR gate name is inlined like any other, except for the exact
definitions :func:`to_qasm3` writes for IR gates missing from ``stdgates.inc`` (``sxdg``,
``csx``, ``rxx``, ``ryy``, ``rzz``): those are recognised token for token and kept as the
native gate, which is what makes ``parse_qasm(to_qasm3(c))`` give back ``c``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Container, Sequence
from functools import lru_cache
from typing import Any, NoReturn

from qbus.errors import CircuitError, QasmSyntaxError
from qbus.frontends import expr as _expr
from qbus.frontends.bounds import clipped
from qbus.frontends.expr import CONSTANTS, FUNCTIONS, Expr, ExprSyntaxError, is_number_token
from qbus.frontends.gate_library import EXACT_DECOMPOSITIONS, QELIB1_EXTRAS
from qbus.frontends.gate_modifiers import GPHASE, ModifierError, SeqOp, control, inverse, power
from qbus.frontends.qasm_classical import ASSIGNING, TYPES, ClassicalVariables
from qbus.frontends.qasm_control import ControlStatements, write_control
from qbus.schemas.gates import ALIASES, GATES
from qbus.schemas.ir import CONTROL_FLOW, MAX_IR_QUBITS, Circuit, Op, walk_ops

__all__ = ["detect_format", "parse_qasm", "to_qasm3"]

# One token per match, whitespace and comments skipped possessively in front of it (so the
# engine never backtracks into a comment). The empty alternative at \Z yields a final ""
# token: the end-of-input sentinel. Every character belongs to some match (the last token
# alternative takes anything else), so the n-th match is always the n-th token and an
# error can recover a token's position by re-scanning, keeping the fast path positionless.
_TOKEN_RE = re.compile(
    r"(?:\s+|//[^\n]*|/\*.*?\*/)*+("
    # Alternatives in order of frequency (names, then brackets and separators), which
    # makes tokenizing about a quarter faster than grouping them by kind.
    r"[^\W\d]\w*"
    r"|[\[\];,(){}]"
    r"|[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
    r'|"[^"\n]*"'
    r"|\$[0-9]+"
    r"|->|\*\*|==|!=|<=|>=|<<|>>|&&|\|\||\+\+|\+=|-=|\*=|/=|/\*"
    r"|\S|\Z)",
    re.S,
)

_HEADER_RE = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*+OPENQASM\s*+([0-9]+)", re.S)

# Gates each include defines. A program may not redefine these once it includes the file.
# qelib1 here is the original OpenQASM 2 library: Qiskit-era additions (sx, rzz, cp, ...)
# are often defined by programs themselves, so they stay definable.
_QELIB1_GATES = frozenset(
    {
        "u3",
        "u2",
        "u1",
        "cx",
        "id",
        "u0",
        "x",
        "y",
        "z",
        "h",
        "s",
        "sdg",
        "t",
        "tdg",
        "rx",
        "ry",
        "rz",
        "cz",
        "cy",
        "ch",
        "ccx",
        "crz",
        "cu1",
        "cu3",
    }
)
_STDGATES = frozenset(
    {
        "p",
        "x",
        "y",
        "z",
        "h",
        "s",
        "sdg",
        "t",
        "tdg",
        "sx",
        "rx",
        "ry",
        "rz",
        "cx",
        "cy",
        "cz",
        "cp",
        "crx",
        "cry",
        "crz",
        "ch",
        "swap",
        "ccx",
        "cswap",
        "cu",
        "CX",
        "phase",
        "cphase",
        "id",
        "u1",
        "u2",
        "u3",
    }
)
_INCLUDES = {"qelib1.inc": _QELIB1_GATES, "stdgates.inc": _STDGATES}

_FUNCTION_NAMES = frozenset(FUNCTIONS)
_QASM2_RESERVED = _FUNCTION_NAMES | frozenset(
    {
        "OPENQASM",
        "include",
        "qreg",
        "creg",
        "gate",
        "opaque",
        "barrier",
        "reset",
        "measure",
        "if",
        "U",
        "CX",
        "pi",
    }
)
_QASM3_RESERVED = (
    _FUNCTION_NAMES
    | frozenset(CONSTANTS)
    | frozenset(
        {
            "OPENQASM",
            "include",
            "input",
            "output",
            "qubit",
            "qreg",
            "bit",
            "creg",
            "int",
            "uint",
            "float",
            "angle",
            "bool",
            "complex",
            "duration",
            "stretch",
            "array",
            "const",
            "mutable",
            "readonly",
            "let",
            "gate",
            "def",
            "defcal",
            "defcalgrammar",
            "cal",
            "extern",
            "opaque",
            "if",
            "else",
            "for",
            "while",
            "in",
            "break",
            "continue",
            "return",
            "end",
            "switch",
            "case",
            "default",
            "box",
            "delay",
            "barrier",
            "reset",
            "measure",
            "gphase",
            "U",
            "ctrl",
            "negctrl",
            "inv",
            "pow",
            "true",
            "false",
            "void",
            "sizeof",
            "durationof",
        }
    )
)

_UNSUPPORTED: dict[str, str] = {
    "else": "'else' without an 'if'",
    "switch": "'switch' statements",
    "break": "'break'",
    "continue": "'continue'",
    "end": "'end'",
    "return": "'return'",
    "def": "subroutine definitions ('def')",
    "let": "register aliases ('let')",
    "const": "constant declarations ('const')",
    "opaque": "opaque gate declarations ('opaque')",
    "extern": "'extern' declarations",
    "box": "'box' blocks",
    "delay": "'delay' instructions",
    "defcal": "calibrations ('defcal')",
    "defcalgrammar": "calibrations ('defcalgrammar')",
    "cal": "calibrations ('cal')",
    "output": "'output' declarations",
    # int/uint/float/angle/bool are statements of their own (qasm_classical); these
    # messages are for where they are not allowed: inside gate bodies.
    "int": "classical variables ('int') inside gate bodies",
    "uint": "classical variables ('uint') inside gate bodies",
    "float": "classical variables ('float') inside gate bodies",
    "angle": "classical variables ('angle') inside gate bodies",
    "bool": "classical variables ('bool') inside gate bodies",
    "complex": "classical variables ('complex')",
    "duration": "classical variables ('duration')",
    "stretch": "classical variables ('stretch')",
    "array": "arrays",
    "#": "pragmas",
    "@": "annotations",
    "{": "scoped blocks",
}
_MODIFIERS = frozenset({"ctrl", "negctrl", "inv", "pow"})
_CONST_TYPES = frozenset({"int", "uint", "float", "angle"})
_INDEX_ARITHMETIC = frozenset({"+", "-", "*", "/", "**", "^"})
_DURATION_UNITS = frozenset({"ns", "us", "µs", "ms", "s", "dt"})

# Names people reach for that difflib would not connect to the gate they mean.
_HINTS = {
    "hadamard": "h",
    "not": "x",
    "paulix": "x",
    "pauliy": "y",
    "pauliz": "z",
    "ccnot": "ccx",
    "sqrtx": "sx",
    "identity": "id",
    "measure_z": "measure",
}

_ZERO: Expr = ("num", 0.0)

# A resolved gate: (IR name, parameters in the source, qubits, transform of the parameter
# trees into the IR's). An IR name of "" means "drop" (Qiskit's legacy ``delay(t) q;``);
# GPHASE is kept inside gate definitions (a controlled global phase is a phase gate) and
# dropped where it reaches the circuit.
_Builtin = tuple[str, int, int, Callable[[list[Expr]], list[Expr]] | None]


def _builtin_table() -> dict[str, _Builtin]:
    table: dict[str, _Builtin] = {}
    for name, spec in GATES.items():
        table[name] = (name, spec.num_params, spec.num_qubits, None)
    for alias, name in ALIASES.items():
        spec = GATES[name]
        table[alias] = (name, spec.num_params, spec.num_qubits, None)
    table["cu3"] = ("cu", 3, 2, lambda ps: [*ps, _ZERO])
    table["u0"] = ("id", 1, 1, lambda ps: [])
    table["gphase"] = (GPHASE, 1, 0, None)
    table["delay"] = ("", 1, 1, None)
    return table


_BUILTINS = _builtin_table()

# Definitions to_qasm3 writes for IR gates that stdgates.inc lacks. Each is exact for how
# the gate is used (sxdg is exact up to a global phase, which only matters under control,
# and csx is exact). The parser recognises these token for token and keeps the native gate.
_NATIVE_DEFINITIONS: dict[str, str] = {
    "sxdg": "gate sxdg a { s a; h a; s a; }",
    "csx": "gate csx a, b { h b; cp(pi/2) a, b; h b; }",
    "rxx": "gate rxx(theta) a, b { h a; h b; cx a, b; rz(theta) b; cx a, b; h a; h b; }",
    "ryy": (
        "gate ryy(theta) a, b { rx(pi/2) a; rx(pi/2) b; cx a, b; rz(theta) b; cx a, b; "
        "rx(-pi/2) a; rx(-pi/2) b; }"
    ),
    "rzz": "gate rzz(theta) a, b { cx a, b; rz(theta) b; cx a, b; }",
}
_NATIVE_TOKENS = {name: _TOKEN_RE.findall(text)[:-1] for name, text in _NATIVE_DEFINITIONS.items()}

# Bound on a parameter expression's size after gate inlining (see expr.node_count); real
# programs stay far below it.
_MAX_EXPRESSION_NODES = 1000
# Longest integer literal read as a size or an index: far beyond any register, and far
# below the 4,300 digits where Python's int() refuses the text with a ValueError.
_MAX_INT_DIGITS = 32


class _GateDef:
    """A user gate, flattened at definition time into native ops over its arguments.

    ``flat`` holds ``(ir_name, parameter trees over the gate's parameters, argument
    positions, constant parameter values or None)``; a call only substitutes and maps.
    """

    __slots__ = ("flat", "name", "num_params", "num_qubits", "params")

    def __init__(self, name: str, params: tuple[str, ...], num_qubits: int):
        self.name = name
        self.params = params
        self.num_params = len(params)
        self.num_qubits = num_qubits
        self.flat: list[tuple[str, tuple[Expr, ...], tuple[int, ...], tuple | None]] = []


def _describe(token: str) -> str:
    return f"'{clipped(token)}'" if token else "the end of the program"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _constant_params(trees: Sequence[Expr]) -> tuple | None:
    if all(t[0] == "num" for t in trees):
        return tuple(float(t[1]) for t in trees)
    return None


class _Parser(ClassicalVariables, ControlStatements):
    def __init__(self, text: str, tokens: list[str], max_ops: int):
        self.text = text
        self.toks = tokens
        self.i = 0
        self.max_ops = max_ops
        self.flattened = 0  # entries copied while flattening gate definitions
        self.version = "qasm3"
        self.reserved = _QASM3_RESERVED
        # name -> (offset, size, single, members)
        self.qregs: dict[str, tuple[int, int, bool, tuple[int, ...]]] = {}
        self.cregs: dict[str, tuple[int, int, bool, tuple[int, ...]]] = {}
        self.declared_at: dict[str, int] = {}
        self.inputs: dict[str, int] = {}
        self.consts: dict[str, Expr] = {}  # name -> ("num", value)
        self.scope: dict[str, int] = {}  # names a top-level parameter may use: inputs, consts
        self.variables: dict[str, tuple[str, int | None]] = {}  # int/uint/bool/float/angle
        self.folded: set[str] = set()  # variables whose parse-time value is in consts
        self.physical = False  # the program addresses physical qubits ($n)
        self.num_qubits = 0
        self.num_clbits = 0
        self.gates: dict[str, _GateDef | _Builtin] = {}
        self.included: dict[str, str] = {}  # gate name -> include file that defines it
        self.ops: list[Op] = []

    # -- errors -----------------------------------------------------------------------

    def position(self, index: int) -> tuple[int, int]:
        offset = len(self.text)
        for n, match in enumerate(_TOKEN_RE.finditer(self.text)):
            if n == index:
                offset = match.start(1)
                break
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - self.text.rfind("\n", 0, offset)

    def fail(self, message: str, index: int, code: str = "qasm_syntax") -> NoReturn:
        line, column = self.position(index)
        raise QasmSyntaxError(message, line=line, column=column, code=code)

    def integer(self, index: int) -> int:
        """The value of the digits token at ``index``, refused when it is too long."""
        t = self.toks[index]
        if len(t) > _MAX_INT_DIGITS:
            self.fail(
                f"an integer of {len(t):,} digits is too long; at most {_MAX_INT_DIGITS} "
                "digits are read",
                index,
            )
        return int(t)

    def expect(self, token: str) -> None:
        t = self.toks[self.i]
        if t != token:
            self.fail(f"expected '{token}' but found {_describe(t)}", self.i)
        self.i += 1

    # -- program ----------------------------------------------------------------------

    def program(self) -> Circuit:
        toks = self.toks
        if not toks[0]:
            raise QasmSyntaxError("the program is empty", line=1, column=1, code="empty_program")
        if toks[0] == "OPENQASM":
            self.header()
        statement = self.statement
        while toks[self.i]:
            start = self.i
            try:
                statement()
            except RecursionError:
                # Only reachable through absurdly nested symbolic parameters built up by
                # gate definitions; the tree walkers are recursive.
                self.fail("the statement is too deeply nested to process", start, "too_large")
        if self.num_qubits == 0:
            self.fail(
                "the program declares no qubits (declare them with 'qubit[n] q;' or 'qreg q[n];')",
                0,
                "empty_program",
            )
        return Circuit(
            num_qubits=self.num_qubits,
            num_clbits=self.num_clbits,
            ops=tuple(self.ops),
            parameters=tuple(sorted(self.inputs)),
        )

    def header(self) -> None:
        version = self.toks[1]
        if not is_number_token(version):
            self.fail(f"expected a version number after OPENQASM but found {_describe(version)}", 1)
        major = version.split(".")[0]
        if major == "2":
            self.version = "qasm2"
            self.reserved = _QASM2_RESERVED
        elif major != "3":
            self.fail(
                f"OpenQASM version {clipped(version)} is not supported (2.0 and 3 are)",
                1,
                "unsupported_feature",
            )
        self.i = 2
        self.expect(";")

    def statement(self) -> None:
        toks = self.toks
        t = toks[self.i]
        handler = _HANDLERS.get(t)
        if handler is not None and t not in self.gates:
            handler(self)
            return
        following = toks[self.i + 1]
        if t in self.cregs and (following == "=" or following == "["):
            self.assignment()
            return
        if following in ASSIGNING and self.is_assignment(t, following) and t not in self.gates:
            self.classical_assignment()
            return
        if t in _MODIFIERS and (following == "@" or following == "(") and t not in self.gates:
            self.modified_call()
            return
        if t in _UNSUPPORTED and t not in self.gates:
            self.fail(f"{_UNSUPPORTED[t]} are not supported", self.i, "unsupported_feature")
        self.gate_call()

    def misplaced_header(self) -> NoReturn:
        self.fail("the OPENQASM header must be the first statement", self.i)

    # -- declarations -----------------------------------------------------------------

    def new_name(self, index: int, what: str) -> str:
        name = self.toks[index]
        if not name.isidentifier():
            self.fail(f"expected a {what} name but found {_describe(name)}", index)
        if name in self.reserved:
            self.fail(f"'{name}' is a reserved word and cannot name a {what}", index)
        previous = self.declared_at.get(name)
        if previous is not None:
            line, _ = self.position(previous)
            self.fail(
                f"'{name}' is already declared on line {line}", index, "duplicate_declaration"
            )
        return name

    def size(self, index: int, what: str) -> int:
        t = self.toks[index]
        constant = self.consts.get(t)
        if constant is not None and float(constant[1]).is_integer():
            value = int(constant[1])
        elif not t.isdigit() or not t.isascii():
            self.fail(f"expected the {what} size (an integer) but found {_describe(t)}", index)
        else:
            value = self.integer(index)
        if value < 1:
            self.fail(f"a {what} needs at least one element", index)
        return value

    def declare(
        self, quantum: bool, name: str, size: int, single: bool, index: int, size_index: int
    ) -> None:
        self.declared_at[name] = index
        if quantum:
            if self.physical:
                self.mixed_qubits(index)
            offset = self.num_qubits
            self.num_qubits += size
            total, table, kind = self.num_qubits, self.qregs, "qubits"
        else:
            offset = self.num_clbits
            self.num_clbits += size
            total, table, kind = self.num_clbits, self.cregs, "bits"
        if total > MAX_IR_QUBITS:
            self.fail(
                f"the program declares {total} {kind}; at most {MAX_IR_QUBITS} are supported",
                size_index,
                "too_large",
            )
        table[name] = (offset, size, single, tuple(range(offset, offset + size)))

    def old_register(self) -> None:
        """``qreg name[size];`` / ``creg name[size];``."""
        quantum = self.toks[self.i] == "qreg"
        what = "qubit register" if quantum else "bit register"
        index = self.i + 1
        name = self.new_name(index, what)
        self.i = index + 1
        self.expect("[")
        size_index = self.i
        size = self.size(size_index, what)
        self.i += 1
        self.expect("]")
        self.expect(";")
        self.declare(quantum, name, size, False, index, size_index)

    def new_register(self) -> None:
        """``qubit[size] name;`` / ``qubit name;`` / ``bit[size] name;`` / ``bit name;``."""
        toks = self.toks
        quantum = toks[self.i] == "qubit"
        what = "qubit register" if quantum else "bit register"
        self.i += 1
        single = toks[self.i] != "["
        size = 1
        size_index = self.i + 1
        if not single:
            size = self.size(size_index, what)
            self.i += 2
            self.expect("]")
        index = self.i
        name = self.new_name(index, what)
        self.i += 1
        if toks[self.i] == "=":
            if quantum:
                self.fail("a qubit declaration takes no initialiser", self.i)
            self.declare(quantum, name, size, single, index, size_index if not single else index)
            self.bit_initialiser(name)
            return
        self.expect(";")
        self.declare(quantum, name, size, single, index, size_index if not single else index)

    def input_declaration(self) -> None:
        """``input float[64] theta;`` / ``input angle theta;`` / ``input float theta;``."""
        toks = self.toks
        self.i += 1
        kind = toks[self.i]
        if kind not in ("float", "angle"):
            self.fail(
                f"'input {kind}' is not supported; parameters are 'input float name;' or "
                "'input angle name;'",
                self.i,
                "unsupported_feature",
            )
        self.i += 1
        if toks[self.i] == "[":
            self.size(self.i + 1, "type")
            self.i += 2
            self.expect("]")
        index = self.i
        name = self.new_name(index, "parameter")
        self.i += 1
        self.expect(";")
        self.declared_at[name] = index
        self.inputs[name] = index
        self.scope[name] = index

    def include(self) -> None:
        index = self.i + 1
        token = self.toks[index]
        if not token.startswith('"') or len(token) < 2:
            self.fail(f"expected a file name in double quotes but found {_describe(token)}", index)
        filename = token[1:-1]
        gates = _INCLUDES.get(filename)
        if gates is None:
            self.fail(
                f"cannot include '{filename}': only qelib1.inc and stdgates.inc are available "
                "(their gates are built in)",
                index,
                "unsupported_include",
            )
        for gate in gates:
            self.included.setdefault(gate, filename)
        self.i = index + 1
        self.expect(";")

    # -- operands ---------------------------------------------------------------------

    def index_value(self) -> int:
        """Parse ``[k]`` after a register name (``self.i`` at ``[``); negative counts back."""
        toks = self.toks
        self.i += 1
        start = self.i
        negative = toks[start] == "-"
        if negative:
            self.i += 1
        t = toks[self.i]
        following = toks[self.i + 1] if t.isdigit() and t.isascii() else t
        if following in (":", ",", "{") or t == "{":
            self.fail(
                "register slices and index sets are not supported", start, "unsupported_feature"
            )
        if t in self.consts or toks[self.i + 1] in _INDEX_ARITHMETIC:
            # An expression of constants and folded variables: its value when parsed.
            self.i = start
            value = self.static_integer("a register index")
            self.expect("]")
            return value
        if not (t.isdigit() and t.isascii()):
            if t.isidentifier():
                self.fail(
                    "indexing with a variable is not supported", self.i, "unsupported_feature"
                )
            self.fail(f"expected an integer index but found {_describe(t)}", self.i)
        value = -self.integer(self.i) if negative else self.integer(self.i)
        self.i += 1
        self.expect("]")
        return value

    def operand(self, quantum: bool) -> tuple[tuple[int, ...], bool, int]:
        """A qubit (or bit) operand: ``name`` or ``name[k]``.

        Returns:
            The indices it denotes, whether it is a whole register, and its token index.
        """
        toks = self.toks
        index = self.i
        name = toks[index]
        register = (self.qregs if quantum else self.cregs).get(name)
        if register is None:
            if quantum and name.startswith("$"):
                return self.physical_qubit(index)
            self.unknown_register(name, index, quantum)
        offset, size, single, members = register
        if toks[index + 1] == "[":
            t = toks[index + 2]
            # Fast path for the common ``q[3]``; anything else takes the careful path below.
            short = len(t) <= _MAX_INT_DIGITS
            if toks[index + 3] == "]" and t.isdigit() and t.isascii() and short and not single:
                k = int(t)
                if k < size:
                    self.i = index + 4
                    return (offset + k,), False, index
            self.i = index + 1
            if single:
                self.fail(
                    f"'{name}' is a single {'qubit' if quantum else 'bit'}, not a register; "
                    "use it without an index",
                    index + 1,
                )
            k = self.index_value()
            if not -size <= k < size:
                unit = "qubit" if quantum else "bit"
                self.fail(
                    f"{name}[{k}] is out of range: register {name} has {_plural(size, unit)}",
                    index + 2,
                    f"{'qubit' if quantum else 'clbit'}_out_of_range",
                )
            return (offset + k % size,), False, index
        self.i = index + 1
        return members, not single, index

    def unknown_register(self, name: str, index: int, quantum: bool) -> NoReturn:
        wanted = "qubit" if quantum else "bit"
        if name.startswith("$"):
            self.fail(f"'{name}' is a physical qubit, but a bit is needed here", index)
        if not name.isidentifier():
            self.fail(f"expected a {wanted} operand but found {_describe(name)}", index)
        if name in (self.cregs if quantum else self.qregs):
            other = "bit" if quantum else "qubit"
            self.fail(
                f"'{name}' is a {other} register, but a {wanted} is needed here",
                index,
                "unknown_register",
            )
        if name in self.inputs:
            self.fail(
                f"'{name}' is a parameter, but a {wanted} is needed here",
                index,
                "unknown_register",
            )
        candidates = self.qregs if quantum else self.cregs
        close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
        hint = f" (did you mean {_or_list(close)}?)" if close else ""
        self.fail(f"unknown {wanted} register '{name}'{hint}", index, "unknown_register")

    # -- expressions ------------------------------------------------------------------

    def expression(self, allowed: Container[str], gate: str | None) -> Expr:
        toks = self.toks
        start = self.i
        try:
            tree, end = _expr.parse_tokens(toks, start)
        except ExprSyntaxError as exc:
            self.fail(exc.reason, exc.index)
        for k in range(start, end):
            t = toks[k]
            if t.isidentifier() and t not in allowed and t not in CONSTANTS and t not in FUNCTIONS:
                if gate is None and t in self.cregs:
                    self.fail(
                        f"'{t}' holds measured bits, known only at run time, so it cannot be "
                        "used in an expression; qbus's IR has no classical arithmetic at run "
                        "time (conditions such as 'if (c == 1)' can read it)",
                        k,
                        "unsupported_feature",
                    )
                if gate is not None and t in self.folded:
                    message = (
                        f"'{t}' is a variable; a gate body may use only constants and its "
                        f"parameters, not '{t}'"
                    )
                elif gate is not None:
                    message = f"'{t}' is not a parameter of gate '{gate}'"
                elif self.version == "qasm2":
                    message = f"'{t}' is not defined (OpenQASM 2 has no named parameters)"
                else:
                    message = f"'{t}' is not declared; declare it with 'input float {t};'"
                self.fail(message, k, "unknown_parameter")
        self.i = end
        return tree

    def parameters(self, allowed: Container[str], gate: str | None) -> list[Expr]:
        """A parenthesised parameter list (``self.i`` at ``(``), as constant-folded trees."""
        toks = self.toks
        if toks[self.i] != "(":
            return []
        # Fast path: the same parameter lists recur (within a program and across jobs), so
        # the folded trees are cached by their tokens. Only the names need checking here.
        start = self.i + 1
        end = start
        depth = 1
        while True:
            t = toks[end]
            if t == ")":
                depth -= 1
                if depth == 0:
                    break
            elif t == "(":
                depth += 1
            elif t == ";" or t == "{" or not t:
                end = -1
                break
            end += 1
        if end >= 0:
            key = tuple(toks[start:end])
            try:
                trees = _parameter_list(key)
            except ValueError:
                pass  # the careful path below reports it with a position
            else:
                if all(
                    t in allowed or t in CONSTANTS or t in FUNCTIONS or not t.isidentifier()
                    for t in key
                ):
                    self.i = end + 1
                    return list(trees)
        self.i = start
        if toks[self.i] == ")":
            self.i += 1
            return []
        trees = []
        while True:
            trees.append(self.expression(allowed, gate))
            t = toks[self.i]
            self.i += 1
            if t == ")":
                return trees
            if t != ",":
                self.fail(f"expected ',' or ')' but found {_describe(t)}", self.i - 1)

    def param_value(self, tree: Expr, index: int) -> float | str:
        """The IR value of a folded tree: a float, or canonical text the IR can read back."""
        if tree[0] == "num":
            return float(tree[1])
        text = _expr.to_text(tree)
        try:
            # Substituting expressions into gate bodies can nest deeper than the
            # expression language accepts; catch that here rather than in Circuit.
            _expr.free_names(text)
        except ValueError:
            self.fail(
                "a parameter expression is too deeply nested once gate definitions are inlined",
                index,
                "invalid_parameter",
            )
        return text

    def substituted(self, tree: Expr, env: dict[str, Expr], index: int) -> Expr:
        """A gate-body parameter with the call's values put in, constant-folded."""
        tree = _expr.substitute(tree, env)
        if _expr.node_count(tree, _MAX_EXPRESSION_NODES) > _MAX_EXPRESSION_NODES:
            self.fail(
                f"a parameter expression grows past {_MAX_EXPRESSION_NODES} terms once gate "
                "definitions are inlined",
                index,
                "invalid_parameter",
            )
        return self.simplify(tree, index)

    def simplify(self, tree: Expr, index: int) -> Expr:
        try:
            return _expr.simplify(tree)
        except ValueError as exc:
            self.fail(str(exc), index, "invalid_parameter")
        except RecursionError:
            self.fail("a parameter expression is too deeply nested", index, "invalid_parameter")

    # -- gates ------------------------------------------------------------------------

    def resolve(self, name: str, index: int) -> _GateDef | _Builtin:
        target = self.gates.get(name) or _BUILTINS.get(name) or _LIBRARY.get(name)
        if target is not None:
            return target
        if not name.isidentifier():
            self.fail(f"expected a statement but found {_describe(name)}", index)
        if name in self.qregs or name in self.cregs or name in self.inputs:
            self.fail(
                f"'{name}' is not a gate, it is declared on line "
                f"{self.position(self.declared_at[name])[0]}",
                index,
                "unknown_gate",
            )
        candidates = [*self.gates, *_BUILTINS, *_LIBRARY]
        close: list[str] = []
        hint = _HINTS.get(name.lower())
        if hint is not None:
            close.append(hint)
        if name.lower() in candidates and name.lower() not in close:
            close.append(name.lower())
        for match in difflib.get_close_matches(name, candidates, n=3, cutoff=0.6):
            if match not in close:
                close.append(match)
        suggestion = f" (did you mean {_or_list(close[:3])}?)" if close else ""
        self.fail(f"unknown gate '{name}'{suggestion}", index, "unknown_gate")

    def check_arity(
        self, name: str, target: _GateDef | _Builtin, params: int, qubits: int, index: int
    ) -> None:
        if isinstance(target, _GateDef):
            want_params, want_qubits = target.num_params, target.num_qubits
        else:
            want_params, want_qubits = target[1], target[2]
        if params != want_params:
            self.fail(
                f"gate '{name}' takes {_plural(want_params, 'parameter')}, got {params}",
                index,
                "wrong_arity",
            )
        if qubits != want_qubits:
            self.fail(
                f"gate '{name}' acts on {_plural(want_qubits, 'qubit')}, got {qubits}",
                index,
                "wrong_arity",
            )

    def gate_call(self) -> None:
        toks = self.toks
        start = self.i
        name = toks[start]
        target = self.gates.get(name) or _BUILTINS.get(name) or self.resolve(name, start)
        self.i = start + 1
        trees = self.top_parameters() if toks[self.i] == "(" else []
        args = self.call_operands()
        self.check_arity(name, target, len(trees), len(args), start)
        calls = self.call_qubits(name, args)

        values = [self.simplify(tree, start) for tree in trees] if trees else trees
        ops = self.ops
        if type(target) is _GateDef:
            if len(ops) + len(target.flat) * len(calls) > self.max_ops:
                self.too_many_ops(start)
            for qubits in calls:
                self.expand(target, values, qubits, start)
            return
        ir_name, _, _, transform = target
        if not ir_name or ir_name == GPHASE:
            return  # a delay, or a global phase: the IR has none
        if transform is not None:
            values = transform(values)
        params = tuple([self.param_value(v, start) for v in values]) if values else ()
        for qubits in calls:
            ops.append(Op(name=ir_name, qubits=qubits, params=params))
        if len(ops) > self.max_ops:
            self.too_many_ops(start)

    def top_parameters(self) -> list[Expr]:
        """A top-level call's parameter list, with ``const`` values put in."""
        trees = self.parameters(self.scope, None)
        if self.consts:
            trees = [_expr.substitute(tree, self.consts) for tree in trees]
        return trees

    def call_operands(self) -> list[tuple[tuple[int, ...], bool, int]]:
        """A call's qubit operands up to and including the ``;``."""
        toks = self.toks
        args: list[tuple[tuple[int, ...], bool, int]] = []
        if toks[self.i] != ";":
            operand = self.operand
            while True:
                args.append(operand(True))
                if toks[self.i] != ",":
                    break
                self.i += 1
        self.expect(";")
        return args

    def call_qubits(
        self, name: str, args: list[tuple[tuple[int, ...], bool, int]]
    ) -> Sequence[tuple[int, ...]]:
        """The qubits of each call the operands broadcast to, none used twice in one call."""
        calls: Sequence[tuple[int, ...]]
        if not any([is_register for _, is_register, _ in args]):
            calls = (tuple([members[0] for members, _, _ in args]),)
        else:
            calls = self.broadcast(name, args)
        if len(args) > 1:
            for qubits in calls:
                if len(set(qubits)) != len(qubits):
                    self.duplicate_qubit(name, qubits, args)
        return calls

    def broadcast(
        self, name: str, args: list[tuple[tuple[int, ...], bool, int]]
    ) -> list[tuple[int, ...]]:
        """Expand register operands: ``cx q, r;`` pairs them up, single qubits repeat."""
        size = -1
        for members, is_register, index in args:
            if is_register:
                if size < 0:
                    size = len(members)
                elif len(members) != size:
                    self.fail(
                        f"registers of different sizes in one '{name}' call "
                        f"({size} and {len(members)} qubits)",
                        index,
                    )
        return [
            tuple([members[k] if is_register else members[0] for members, is_register, _ in args])
            for k in range(size)
        ]

    def duplicate_qubit(
        self, name: str, qubits: tuple[int, ...], args: list[tuple[tuple[int, ...], bool, int]]
    ) -> NoReturn:
        seen: set[int] = set()
        for k, qubit in enumerate(qubits):
            if qubit in seen:
                self.fail(
                    f"'{name}' uses qubit {self.qubit_label(qubit)} twice",
                    args[k][2],
                    "duplicate_qubit",
                )
            seen.add(qubit)
        raise AssertionError("no duplicate found")  # pragma: no cover

    def qubit_label(self, qubit: int) -> str:
        for name, (offset, size, single, _) in self.qregs.items():
            if offset <= qubit < offset + size:
                return name if single else f"{name}[{qubit - offset}]"
        return f"${qubit}"

    def too_many_ops(self, index: int) -> NoReturn:
        self.fail(f"the program expands to more than {self.max_ops} operations", index, "too_large")

    def expand(
        self, gate: _GateDef, values: list[Expr], qubits: tuple[int, ...], index: int
    ) -> None:
        env = dict(zip(gate.params, values, strict=True))
        ops = self.ops
        substituted = self.substituted
        for ir_name, trees, positions, constant in gate.flat:
            if ir_name == GPHASE:
                continue
            if constant is None:
                params = tuple([self.param_value(substituted(t, env, index), index) for t in trees])
            else:
                params = constant
            ops.append(
                Op(name=ir_name, qubits=tuple([qubits[k] for k in positions]), params=params)
            )

    def gate_definition(self) -> None:
        toks = self.toks
        start = self.i
        name_index = start + 1
        name = toks[name_index]
        if not name.isidentifier():
            self.fail(f"expected a gate name but found {_describe(name)}", name_index)
        if name in ("U", "CX", "gphase") and name in self.reserved:
            self.fail(
                f"'{name}' is a built-in gate and cannot be redefined",
                name_index,
                "duplicate_declaration",
            )
        if name in self.reserved:
            self.fail(f"'{name}' is a reserved word and cannot name a gate", name_index)
        if name in self.gates:
            self.fail(f"gate '{name}' is already defined", name_index, "duplicate_declaration")
        if name in self.included:
            self.fail(
                f"gate '{name}' is already defined by {self.included[name]}",
                name_index,
                "duplicate_declaration",
            )
        self.i = name_index + 1
        params: list[str] = []
        if toks[self.i] == "(":
            self.i += 1
            if toks[self.i] == ")":
                self.i += 1
            else:
                while True:
                    params.append(self.gate_local(params, "parameter", name))
                    t = toks[self.i]
                    self.i += 1
                    if t == ")":
                        break
                    if t != ",":
                        self.fail(f"expected ',' or ')' but found {_describe(t)}", self.i - 1)
        arguments: list[str] = [self.gate_local(params, "qubit argument", name)]
        while toks[self.i] == ",":
            self.i += 1
            arguments.append(self.gate_local([*params, *arguments], "qubit argument", name))
        self.expect("{")
        gate = _GateDef(name, tuple(params), len(arguments))
        positions = {arg: k for k, arg in enumerate(arguments)}
        while toks[self.i] != "}":
            if not toks[self.i]:
                self.fail(f"the body of gate '{name}' has no closing '}}'", start)
            self.gate_body_statement(gate, positions)
        self.i += 1
        native = _NATIVE_TOKENS.get(name)
        if native is not None and toks[start : self.i] == native:
            self.gates[name] = _BUILTINS[name]
        else:
            self.gates[name] = gate

    def gate_local(self, taken: list[str], what: str, gate: str) -> str:
        index = self.i
        name = self.toks[index]
        if not name.isidentifier():
            self.fail(f"expected a {what} name but found {_describe(name)}", index)
        if name in self.reserved:
            self.fail(f"'{name}' is a reserved word and cannot name a {what}", index)
        if name in taken:
            self.fail(
                f"'{name}' is declared twice in gate '{gate}'", index, "duplicate_declaration"
            )
        self.i += 1
        return name

    def gate_body_statement(self, gate: _GateDef, positions: dict[str, int]) -> None:
        toks = self.toks
        start = self.i
        t = toks[start]
        if t == "barrier" and t not in self.gates:
            self.i += 1
            qubits = self.gate_arguments(gate, positions, "barrier")
            self.expect(";")
            gate.flat.append(("barrier", (), tuple(qubits), ()))
            return
        if t in ("measure", "reset"):
            self.fail(f"'{t}' is not allowed inside a gate definition", start)
        following = toks[start + 1]
        if t in _MODIFIERS and (following == "@" or following == "(") and t not in self.gates:
            self.modified_body_call(gate, positions)
            return
        if t in _UNSUPPORTED and t not in self.gates:
            self.fail(f"{_UNSUPPORTED[t]} are not supported", start, "unsupported_feature")
        if t == gate.name:
            self.fail(f"gate '{t}' calls itself; recursive definitions are not allowed", start)
        target = self.resolve(t, start)
        self.i = start + 1
        trees = self.body_parameters(gate)
        qubits = self.gate_arguments(gate, positions, t) if toks[self.i] != ";" else []
        self.expect(";")
        self.check_arity(t, target, len(trees), len(qubits), start)
        trees = [self.simplify(tree, start) for tree in trees]
        if isinstance(target, _GateDef):
            # Definitions are flattened eagerly, so their total size is bounded as well:
            # otherwise many calls of one huge gate inside definitions would cost
            # unbounded work even if the program never calls them.
            self.flattened += len(target.flat)
            if self.flattened > self.max_ops:
                self.too_many_ops(start)
            env = dict(zip(target.params, trees, strict=True))
            for ir_name, inner, inner_positions, _ in target.flat:
                new = tuple([self.substituted(x, env, start) for x in inner])
                gate.flat.append(
                    (
                        ir_name,
                        new,
                        tuple([qubits[k] for k in inner_positions]),
                        _constant_params(new),
                    )
                )
            return
        ir_name, _, _, transform = target
        if not ir_name:
            return  # a delay
        if transform is not None:
            trees = transform(trees)
        gate.flat.append((ir_name, tuple(trees), tuple(qubits), _constant_params(trees)))

    def gate_arguments(self, gate: _GateDef, positions: dict[str, int], what: str) -> list[int]:
        toks = self.toks
        qubits: list[int] = []
        while True:
            index = self.i
            name = toks[index]
            position = positions.get(name)
            if position is None:
                if not name.isidentifier():
                    self.fail(f"expected a qubit argument but found {_describe(name)}", index)
                self.fail(
                    f"'{name}' is not a qubit argument of gate '{gate.name}'",
                    index,
                    "unknown_register",
                )
            if toks[index + 1] == "[":
                self.fail("qubit arguments cannot be indexed inside a gate body", index + 1)
            if position in qubits:
                self.fail(f"'{what}' uses qubit '{name}' twice", index, "duplicate_qubit")
            qubits.append(position)
            self.i = index + 1
            if toks[self.i] != ",":
                return qubits
            self.i += 1

    # -- non-unitary instructions -----------------------------------------------------

    def measure(self) -> None:
        """``measure q[0] -> c[0];`` / ``measure q -> c;``."""
        start = self.i
        self.i += 1
        qubits = self.operand(True)
        if self.toks[self.i] == ";":
            self.fail(
                "'measure' without a target bit is not supported; write "
                "'c[0] = measure q[0];' or 'measure q[0] -> c[0];'",
                start,
                "unsupported_feature",
            )
        self.expect("->")
        bits = self.operand(False)
        self.expect(";")
        self.add_measure(qubits, bits)

    def assignment(self) -> None:
        """``c[0] = measure q[0];`` / ``c = measure q;``; other assignments are rejected."""
        toks = self.toks
        start = self.i
        bits = self.operand(False)
        if toks[self.i] != "=" or toks[self.i + 1] != "measure":
            self.fail(
                f"classical assignment to '{toks[start]}' is not supported: its bits are "
                "written only by 'measure' ('c = measure q;'), as qbus's IR has no classical "
                "arithmetic at run time",
                start,
                "unsupported_feature",
            )
        self.i += 2
        qubits = self.operand(True)
        self.expect(";")
        self.add_measure(qubits, bits)

    def add_measure(
        self, qubits: tuple[tuple[int, ...], bool, int], bits: tuple[tuple[int, ...], bool, int]
    ) -> None:
        q_members = qubits[0]
        c_members, _, c_index = bits
        if len(q_members) != len(c_members):
            self.fail(
                f"cannot measure {_plural(len(q_members), 'qubit')} into "
                f"{_plural(len(c_members), 'bit')}",
                c_index,
            )
        ops = self.ops
        for qubit, bit in zip(q_members, c_members, strict=True):
            ops.append(Op(name="measure", qubits=(qubit,), clbits=(bit,)))

    def reset(self) -> None:
        self.i += 1
        members, _, _ = self.operand(True)
        self.expect(";")
        ops = self.ops
        for qubit in members:
            ops.append(Op(name="reset", qubits=(qubit,)))

    def barrier(self) -> None:
        toks = self.toks
        self.i += 1
        if toks[self.i] == ";":
            self.i += 1
            self.ops.append(Op(name="barrier", qubits=()))
            return
        qubits: list[int] = []
        seen: set[int] = set()
        while True:
            members, _, index = self.operand(True)
            for qubit in members:
                if qubit in seen:
                    self.fail(
                        f"'barrier' uses qubit {self.qubit_label(qubit)} twice",
                        index,
                        "duplicate_qubit",
                    )
                seen.add(qubit)
            qubits.extend(members)
            if toks[self.i] != ",":
                break
            self.i += 1
        self.expect(";")
        self.ops.append(Op(name="barrier", qubits=tuple(qubits)))

    # -- gate-level OpenQASM 3: modifiers, const, physical qubits, delay, box ----------

    def physical_qubit(self, index: int) -> tuple[tuple[int, ...], bool, int]:
        """``$k``: IR qubit ``k``; the circuit grows to the highest index used."""
        digits = self.toks[index][1:]
        if len(digits) > _MAX_INT_DIGITS or int(digits) >= MAX_IR_QUBITS:
            self.fail(
                f"physical qubit ${clipped(digits)} is past the IR's limit of "
                f"{MAX_IR_QUBITS} qubits",
                index,
                "too_large",
            )
        if self.qregs:
            self.mixed_qubits(index)
        self.physical = True
        k = int(digits)
        if k >= self.num_qubits:
            self.num_qubits = k + 1
        self.i = index + 1
        return (k,), False, index

    def mixed_qubits(self, index: int) -> NoReturn:
        self.fail(
            "a program cannot use both declared qubits and physical qubits ($n): the "
            "specification leaves the mapping between them to the compiler",
            index,
            "unsupported_feature",
        )

    def body_parameters(self, gate: _GateDef) -> list[Expr]:
        """A call's parameter list inside a gate body, with outer ``const`` values put in."""
        if not self.consts:
            return self.parameters(gate.params, gate.name)
        # Only constants: a gate body may not read variables (OpenQASM 3 scoping).
        visible = {
            k: v for k, v in self.consts.items() if k not in gate.params and k not in self.folded
        }
        trees = self.parameters((*gate.params, *visible), gate.name)
        return [_expr.substitute(tree, visible) for tree in trees]

    def modifiers(self, allowed: Container[str]) -> list[tuple[str, float, int]]:
        """``inv @``, ``pow(k) @``, ``ctrl(n) @``, ``negctrl(n) @``: (kind, k or n, index)."""
        toks = self.toks
        found: list[tuple[str, float, int]] = []
        while toks[self.i] in _MODIFIERS and toks[self.i + 1] in ("@", "("):
            index = self.i
            kind = toks[index]
            self.i += 1
            value = 1.0
            if toks[self.i] == "(":
                if kind == "inv":
                    self.fail("'inv' takes no argument", self.i)
                trees = self.parameters(allowed, None)
                if len(trees) != 1:
                    self.fail(f"'{kind}' takes one argument, got {len(trees)}", index)
                if self.consts:
                    trees = [_expr.substitute(trees[0], self.consts)]
                tree = self.simplify(trees[0], index)
                if tree[0] != "num":
                    self.fail(
                        f"the argument of '{kind}' must be a constant, not "
                        f"'{clipped(_expr.to_text(tree))}'",
                        index,
                        "unsupported_feature",
                    )
                value = float(tree[1])
            elif kind == "pow":
                self.fail("'pow' needs an exponent: 'pow(k) @'", index)
            if kind != "pow" and (not value.is_integer() or value < 1):
                self.fail(f"'{kind}' needs a positive integer count of controls", index)
            if kind != "pow" and value >= MAX_IR_QUBITS:
                self.fail(
                    f"'{kind}({value:g})' needs more qubits than the IR allows", index, "too_large"
                )
            self.expect("@")
            found.append((kind, value, index))
        return found

    def base_sequence(
        self, target: _GateDef | _Builtin, trees: list[Expr], index: int
    ) -> list[SeqOp]:
        """A gate call as a sequence over its own qubits, before any modifier."""
        if isinstance(target, _GateDef):
            env = dict(zip(target.params, trees, strict=True))
            return [
                (name, tuple([self.substituted(t, env, index) for t in inner]), positions)
                for name, inner, positions, _ in target.flat
            ]
        ir_name, _, num_qubits, transform = target
        if not ir_name:
            return []
        trees = [self.simplify(tree, index) for tree in trees]
        if transform is not None:
            trees = transform(trees)
        return [(ir_name, tuple(trees), tuple(range(num_qubits)))]

    def modified(self, allowed: Container[str], gate: _GateDef | None) -> tuple[list[SeqOp], int]:
        """A modified gate call up to its operands: its sequence and the qubits it takes."""
        toks = self.toks
        mods = self.modifiers(allowed)
        index = self.i
        name = toks[index]
        if gate is not None and name == gate.name:
            self.fail(f"gate '{name}' calls itself; recursive definitions are not allowed", index)
        target = self.resolve(name, index)
        self.i = index + 1
        trees: list[Expr] = []
        if toks[self.i] == "(":
            trees = self.body_parameters(gate) if gate is not None else self.top_parameters()
        controls = sum(int(value) for kind, value, _ in mods if kind != "inv" and kind != "pow")
        want = target.num_qubits if isinstance(target, _GateDef) else target[2]
        self.check_arity(name, target, len(trees), want, index)
        seq = self.base_sequence(target, trees, index)
        limit = self.max_ops
        for kind, value, at in reversed(mods):
            try:
                if kind == "inv":
                    seq = inverse(seq, _decompose)
                elif kind == "pow":
                    seq = power(seq, value, _decompose, limit)
                else:
                    for _ in range(int(value)):
                        seq = control(seq, kind == "negctrl", _decompose, limit)
            except ModifierError as exc:
                self.fail(f"'{kind} @ {name}': {exc.reason}", at, exc.code)
        return seq, want + controls

    def modified_arity(self, qubits: int, want: int, index: int) -> None:
        if qubits != want:
            self.fail(
                f"the modified gate acts on {_plural(want, 'qubit')} (controls first), "
                f"got {qubits}",
                index,
                "wrong_arity",
            )

    def modified_call(self) -> None:
        """A top-level gate call with modifiers (``ctrl @ h q[0], q[1];``)."""
        start = self.i
        seq, want = self.modified(self.scope, None)
        args = self.call_operands()
        self.modified_arity(len(args), want, start)
        calls = self.call_qubits(self.toks[start], args)
        seq = [op for op in seq if op[0] != GPHASE]
        if len(self.ops) + len(seq) * len(calls) > self.max_ops:
            self.too_many_ops(start)
        ops = self.ops
        param_value = self.param_value
        for qubits in calls:
            for name, trees, positions in seq:
                ops.append(
                    Op(
                        name=name,
                        qubits=tuple([qubits[k] for k in positions]),
                        params=tuple([param_value(t, start) for t in trees]),
                    )
                )

    def modified_body_call(self, gate: _GateDef, positions: dict[str, int]) -> None:
        """A gate call with modifiers inside a gate body."""
        start = self.i
        seq, want = self.modified(gate.params, gate)
        qubits = (
            self.gate_arguments(gate, positions, self.toks[start])
            if self.toks[self.i] != ";"
            else []
        )
        self.expect(";")
        self.modified_arity(len(qubits), want, start)
        self.flattened += len(seq)
        if self.flattened > self.max_ops:
            self.too_many_ops(start)
        for name, trees, places in seq:
            gate.flat.append(
                (name, trees, tuple([qubits[k] for k in places]), _constant_params(trees))
            )

    def const_declaration(self) -> None:
        """``const int n = 3;`` / ``const float theta = pi/4;``: folded where used."""
        toks = self.toks
        self.i += 1
        kind = toks[self.i]
        if kind == "bool":
            self.const_bool()
            return
        if kind in _CONST_TYPES:
            self.i += 1
            if toks[self.i] == "[":
                self.size(self.i + 1, "type")
                self.i += 2
                self.expect("]")
        elif toks[self.i + 1] != "=" or not kind.isidentifier():
            self.fail(
                f"'const {clipped(kind)}' is not supported; constants are int, uint, float, "
                "angle or bool",
                self.i,
                "unsupported_feature",
            )
        index = self.i
        name = self.new_name(index, "constant")
        self.i += 1
        self.expect("=")
        tree = self.expression(self.consts, None)
        tree = self.simplify(_expr.substitute(tree, self.consts), index)
        value = float(tree[1])
        if (kind in ("int", "uint") and not value.is_integer()) or (kind == "uint" and value < 0):
            self.fail(
                f"constant '{name}' is declared {kind} but its value is {value!r}",
                index,
                "invalid_parameter",
            )
        self.expect(";")
        self.declared_at[name] = index
        self.consts[name] = ("num", value)
        self.scope[name] = index

    def const_bool(self) -> None:
        """``const bool b = true;`` (``self.i`` at ``bool``): folded as 1 or 0."""
        self.i += 1
        index = self.i
        name = self.new_name(index, "constant")
        self.i += 1
        self.expect("=")
        start = self.i
        truth = self.condition(0)
        if not isinstance(truth, bool):
            self.fail(
                f"constant '{name}' depends on measured bits, known only at run time",
                start,
                "invalid_parameter",
            )
        self.expect(";")
        self.declared_at[name] = index
        self.consts[name] = ("num", 1.0 if truth else 0.0)
        self.scope[name] = index

    def duration(self) -> None:
        """``[100ns]`` after ``delay`` or ``box``: read and checked, then ignored."""
        self.expect("[")
        toks = self.toks
        if not is_number_token(toks[self.i]) or toks[self.i + 1] not in _DURATION_UNITS:
            self.fail(
                "a duration must be a number with a unit (ns, us, µs, ms, s or dt); duration "
                "variables and expressions are not supported",
                self.i,
                "unsupported_feature",
            )
        self.i += 2
        self.expect("]")

    def delay(self) -> None:
        """``delay[100ns] q;`` (or every qubit): the identity for a simulator, so no op."""
        if self.toks[self.i + 1] == "(":
            self.gate_call()  # Qiskit's legacy qelib1 ``delay(t) q;``, dropped the same way
            return
        self.i += 1
        self.duration()
        self.call_qubits("delay", self.call_operands())

    def box(self) -> None:
        """``box { ... }`` / ``box[d] { ... }``: its body, as if written without the box."""
        toks = self.toks
        start = self.i
        self.i += 1
        if toks[self.i] == "[":
            self.duration()
        self.expect("{")
        while toks[self.i] != "}":
            if not toks[self.i]:
                self.fail("the 'box' has no closing '}'", start)
            self.statement()
        self.i += 1


_HANDLERS: dict[str, Callable[[_Parser], Any]] = {
    "OPENQASM": _Parser.misplaced_header,
    "include": _Parser.include,
    "qreg": _Parser.old_register,
    "creg": _Parser.old_register,
    "qubit": _Parser.new_register,
    "bit": _Parser.new_register,
    "input": _Parser.input_declaration,
    "gate": _Parser.gate_definition,
    "measure": _Parser.measure,
    "reset": _Parser.reset,
    "barrier": _Parser.barrier,
    "const": _Parser.const_declaration,
    "delay": _Parser.delay,
    "box": _Parser.box,
    "if": _Parser.if_statement,
    "while": _Parser.while_statement,
    "for": _Parser.for_statement,
    **dict.fromkeys(TYPES, _Parser.classical_declaration),
}


@lru_cache(maxsize=4096)
def _parameter_list(key: tuple[str, ...]) -> tuple[Expr, ...]:
    """Parse and fold the tokens between a parameter list's parentheses.

    Raises:
        ValueError: On any problem; the caller re-parses to report it with a position.
    """
    if not key:
        return ()
    tokens = [*key, ""]
    trees = []
    index = 0
    while True:
        tree, index = _expr.parse_tokens(tokens, index)
        trees.append(_expr.simplify(tree))
        t = tokens[index]
        if not t:
            return tuple(trees)
        if t != ",":
            raise ValueError(f"unexpected {t!r}")
        index += 1


def _or_list(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _definitions(text: str) -> dict[str, _GateDef]:
    """Gate definitions from library text (:mod:`qbus.frontends.gate_library`)."""
    tokens = [*_TOKEN_RE.findall(text), "", ""]
    parser = _Parser(text, tokens, 1_000_000)
    while tokens[parser.i]:
        parser.statement()
    return {name: gate for name, gate in parser.gates.items() if isinstance(gate, _GateDef)}


# qelib1 gates without an IR gate, callable by name like builtins; a program's own
# definition under the same name takes precedence.
_LIBRARY = _definitions(QELIB1_EXTRAS)
_DECOMPOSITIONS = {**_definitions(EXACT_DECOMPOSITIONS), "c3x": _LIBRARY["c3x"]}


def _decompose(name: str, params: tuple[Expr, ...], qubits: tuple[int, ...]) -> list[SeqOp]:
    """The exact body of an IR gate on the given qubits (for the gate modifiers)."""
    gate = _DECOMPOSITIONS[name]
    env = dict(zip(gate.params, params, strict=True))
    try:
        return [
            (
                inner_name,
                tuple([_expr.simplify(_expr.substitute(t, env)) for t in trees]),
                tuple([qubits[k] for k in positions]),
            )
            for inner_name, trees, positions, _ in gate.flat
        ]
    except ValueError as exc:
        raise ModifierError(str(exc), "invalid_parameter") from None


def detect_format(text: str) -> str:
    """Guess the format of a circuit document (for ``format="auto"``).

    Args:
        text: The document.

    Returns:
        ``"json"`` when it starts with ``{`` (after whitespace), ``"qasm2"`` when its
        header says ``OPENQASM 2``, otherwise ``"qasm3"`` (with or without a header).
    """
    stripped = text.lstrip().removeprefix("\ufeff").lstrip()
    if stripped.startswith("{"):
        return "json"
    match = _HEADER_RE.match(stripped)
    if match is not None and match.group(1) == "2":
        return "qasm2"
    return "qasm3"


def parse_qasm(
    text: str, *, max_bytes: int = 1_000_000, max_ops: int = 1_000_000
) -> tuple[Circuit, str]:
    """Parse an OpenQASM 2.0 or OpenQASM 3 program into the IR.

    Args:
        text: The program. Without an ``OPENQASM`` header it is read as OpenQASM 3.
        max_bytes: Largest accepted UTF-8 size, checked before anything is parsed.
        max_ops: Most IR ops the program may expand to (inlining and broadcasting can
            turn a short text into a huge circuit).

    Returns:
        The circuit and the format that was read: ``"qasm2"`` or ``"qasm3"``.

    Raises:
        QasmSyntaxError: With line, column and one of the codes in the module docstring.
    """
    if len(text) > max_bytes or (
        len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise QasmSyntaxError(
            f"the program is larger than {max_bytes} bytes", line=1, column=1, code="too_large"
        )
    # Editors on some systems prepend a byte-order mark; it is not part of the program.
    text = text.removeprefix("\ufeff")
    tokens = _TOKEN_RE.findall(text)
    # Spare sentinels, so one token of lookahead past the end is always safe.
    tokens += ("", "")
    parser = _Parser(text, tokens, max_ops)
    # An opening "/*" or a quote that survives tokenizing was never closed.
    for unterminated, what in (("/*", "comment"), ('"', "string")):
        if unterminated in tokens:
            parser.fail(f"unterminated {what}", tokens.index(unterminated))
    circuit = parser.program()
    return circuit, parser.version


# -- export -----------------------------------------------------------------------------

_EXPORT_NAMES = {"u": "U"}


def _format_param(param: float | str) -> str:
    if isinstance(param, str):
        param = _expr.canonical(param)
        if isinstance(param, str):
            return param
    return repr(float(param) + 0.0)


def _free_register_name(preferred: Sequence[str], taken: Container[str]) -> str:
    for name in preferred:
        if name not in taken:
            return name
    raise AssertionError("no free register name")  # pragma: no cover


def to_qasm3(circuit: Circuit) -> str:
    """Write a circuit as a self-contained OpenQASM 3 program.

    The program includes ``stdgates.inc``, defines the IR gates that file lacks
    (``sxdg``, ``csx``, ``rxx``, ``ryy``, ``rzz``) when they are used, declares each
    parameter as ``input float name;``, one ``qubit[n]`` register and one ``bit[m]``
    register, and writes IR ``u`` as the builtin ``U``. Expression parameters are written
    in canonical form.

    ``parse_qasm(to_qasm3(c))`` gives back a circuit with the same hash as ``c`` when the
    ops of ``c`` are in the form the parser produces: ``measure``/``reset`` on one qubit
    each, and expression parameters in canonical form (``expr.canonical``). A measure or
    reset on several qubits is written as one statement per qubit, which reads back as
    several ops doing the same thing. ``if``/``while`` ops are written as OpenQASM 3
    ``if``/``else``/``while`` blocks; a condition on the whole bit register or on one
    bit is written as such (and reads back the same), one on another set of bits is
    spelled out bit by bit (it reads back as an equivalent condition, not the same one).

    Args:
        circuit: Any IR circuit.

    Returns:
        The program text.

    Raises:
        CircuitError: Code ``invalid_parameter`` when a parameter name cannot be written
            in OpenQASM 3 (a reserved word such as ``for``, a constant such as ``pi``).
    """
    parameters = sorted(set(circuit.parameters))
    for name in parameters:
        if not name.isidentifier() or name in _QASM3_RESERVED:
            raise CircuitError(
                f"parameter name {name!r} cannot be written in OpenQASM 3",
                code="invalid_parameter",
            )
    taken = set(parameters)
    q = _free_register_name(("q", "qubits", "q_"), taken)
    c = _free_register_name(("c", "bits", "c_"), taken)
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";']
    used = {op.name for op in walk_ops(circuit.ops)}
    lines.extend(text for name, text in _NATIVE_DEFINITIONS.items() if name in used)
    lines.extend(f"input float {name};" for name in parameters)
    lines.append(f"qubit[{circuit.num_qubits}] {q};")
    if circuit.num_clbits:
        lines.append(f"bit[{circuit.num_clbits}] {c};")

    def write(ops: Sequence[Op], indent: str) -> None:
        for op in ops:
            name = op.name
            if name == "measure":
                lines.extend(
                    f"{indent}{c}[{bit}] = measure {q}[{qubit}];"
                    for qubit, bit in zip(op.qubits, op.clbits, strict=True)
                )
            elif name == "reset":
                lines.extend(f"{indent}reset {q}[{qubit}];" for qubit in op.qubits)
            elif name in CONTROL_FLOW:
                write_control(op, c, circuit.num_clbits, indent, lines, write)
            else:
                args = ", ".join(f"{q}[{qubit}]" for qubit in op.qubits)
                if name == "barrier":
                    lines.append(f"{indent}barrier {args};" if args else f"{indent}barrier;")
                    continue
                gate = _EXPORT_NAMES.get(name, name)
                if op.params:
                    gate += "(" + ", ".join(_format_param(p) for p in op.params) + ")"
                lines.append(f"{indent}{gate} {args};")

    write(circuit.ops, "")
    return "\n".join(lines) + "\n"
