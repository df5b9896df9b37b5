"""Quil (Rigetti's Quantum Instruction Language) to the IR, through pyQuil.

pyQuil (``pip install 'qbus[quil]'``) parses the text; this module maps what it parsed onto
the IR. There is no Quil simulator here (QVM and quilc are not on any package registry this
project can use), so Quil programs run on the IR's engines like any other submission.

What is converted:

* the Quil standard gates ``I X Y Z H S T PHASE RX RY RZ U CZ CNOT CCNOT SWAP CSWAP
  CPHASE RZZ RXX RYY`` one to one, and ``CPHASE00/01/10 ISWAP PSWAP XY SQISW FSIM
  PHASEDFSIM`` as exact sequences of IR gates (the same matrix, global phase included);
* the modifiers ``DAGGER`` (any gate) and ``CONTROLLED`` (on gates whose result is one IR
  gate with a controlled form: ``CONTROLLED X`` is ``cx``, ``CONTROLLED CNOT`` is ``ccx``…);
* ``DEFGATE`` with a constant matrix or ``AS PERMUTATION`` of up to 3 qubits: the matrix is
  synthesised into IR gates with Qiskit (``pip install 'qbus[qiskit]'``); its global
  phase is dropped, which no measurement can see;
* ``DECLARE name BIT[n]`` (or ``OCTET``, 8 bits each): classical bits; ``ro[i]`` is clbit
  ``i`` (the ``i``-th character from the right of a counts key), and further bit regions
  follow ``ro`` in name order (pyQuil does not keep the order of declarations);
  ``MEASURE q ro[i]``: a measurement; ``RESET`` / ``RESET q``: resets;
* ``DECLARE name REAL[n]``: named IR parameters, bound from the job's ``parameters`` —
  ``name`` when ``n`` is 1, ``name_0`` … ``name_{n-1}`` otherwise — with parameter
  arithmetic (``+ - * / ^``, ``sin cos sqrt exp``, ``pi``) kept as IR expressions;
* ``NOP``, a final ``HALT`` and the compiler hints ``PRAGMA INITIAL_REWIRING``,
  ``PRESERVE_BLOCK``/``END_PRESERVE_BLOCK``, ``COMMUTING_BLOCKS``/``BLOCK``/``END_BLOCK``/
  ``END_COMMUTING_BLOCKS`` are skipped: they do not change what the program computes.

Qubit indices are kept (Quil qubits name physical qubits): a program on qubits 0 and 5 is
a 6-qubit circuit.

Everything else is rejected with a ``CircuitError`` whose ``code`` is stable:

``quil_syntax``
    Text pyQuil cannot parse (``where`` is ``line L, column C``).
``quil_unsupported``
    Valid Quil the IR cannot hold: classical control other than the jump patterns
    pyQuil's ``if_then``/``while_do`` write (those become IR ``if``/``while`` ops on one
    bit, see ``_Converter.structure``),
    classical arithmetic (``MOVE``, ``ADD`` …), ``DEFCIRCUIT``, parametric ``DEFGATE`` and
    ``AS PAULI-SUM`` gates, ``FORKED``, Quil-T (pulses, frames, ``DELAY``, ``FENCE``…),
    ``WAIT``, pragmas that change semantics (``ADD-KRAUS``, ``READOUT-POVM``) or that this
    converter does not know, ``MEASURE`` without a target, complex-valued parameters.
``unknown_gate``, ``wrong_arity``, ``duplicate_qubit``, ``unknown_register``,
``clbit_out_of_range``, ``invalid_parameter``, ``empty_program``, ``too_large``
    As for OpenQASM (see :mod:`qbus.frontends.qasm`).
``too_deep``
    Parentheses nested more than ``MAX_QUIL_NESTING`` (64) deep, refused before pyQuil
    sees the text: its native parser crashes the whole process (SIGSEGV) on about 20,000
    levels, and no program needs more than a few.

For an instruction-level problem ``where`` is ``line L`` when the instruction's text can be
found in the source, else ``instruction N`` (1-based, in pyQuil's order: declarations first).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qbus.errors import CircuitError, MissingOptionalLibraryError
from qbus.frontends.bounds import TooDeep, clipped, nested_deeper_than
from qbus.frontends.expr import CONSTANTS, FUNCTIONS, MAX_DEPTH, Expr, fold
from qbus.frontends.parameters import check_parameters
from qbus.schemas.ir import MAX_CONTROL_DEPTH, MAX_IR_QUBITS, Circuit, Condition, Op

# -- format detection (no pyQuil needed) -------------------------------------------------

# A Quil statement line: a keyword, or an upper-case gate (with optional modifiers and a
# parenthesised parameter list) applied to bare qubit indices. OpenQASM gate calls end in
# ";" and index registers (``q[0]``), so neither form matches them.
_QUIL_LINE_RE = re.compile(
    r"^(?:DECLARE|DEFGATE|DEFCIRCUIT|PRAGMA|MEASURE|RESET|HALT|NOP|WAIT|LABEL|JUMP\S*)\b"
    r"|^(?:(?:DAGGER|CONTROLLED|FORKED)\s+)*[A-Z][A-Z0-9_-]*(?:\([^;]*\))?(?:\s+\d+)+\s*$"
)


def looks_like_quil(text: str) -> bool:
    """Whether ``text`` reads as Quil rather than OpenQASM (for ``format="auto"``).

    Decided on the first line that is not blank or a ``#`` comment (OpenQASM 3's
    ``#pragma``/``#dim`` lines count as OpenQASM); cheap, and it never imports pyQuil.
    """
    for raw in text.removeprefix("\ufeff").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith(("#pragma", "#dim")):
                return False
            continue
        return _QUIL_LINE_RE.match(line) is not None
    return False


# -- conversion --------------------------------------------------------------------------

# Longest pyQuil error text passed on (its found-token part quotes the input).
_MAX_MESSAGE = 300


def _pyquil() -> Any:
    try:
        import pyquil  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingOptionalLibraryError("pyquil", "quil", "reading Quil programs") from exc
    return pyquil


def _syntax_error(text: str, exc: Exception) -> CircuitError:
    # pyQuil quotes the text it stopped at, however long: a person needs its start.
    message = clipped(str(exc).removeprefix("error while parsing: "), _MAX_MESSAGE)
    match = re.search(r"at line (\d+), column (\d+)", message)
    if match is None:
        return CircuitError(f"Quil syntax error: {message}", code="quil_syntax")
    # pyQuil parses text.strip(): map its position back onto the text as submitted.
    skipped = text[: len(text) - len(text.lstrip())]
    line = int(match.group(1)) + skipped.count("\n")
    column = int(match.group(2))
    if int(match.group(1)) == 1:
        column += len(skipped) - (skipped.rfind("\n") + 1)
    reason = message[match.end() :].lstrip(" :")
    token = re.match(r"\(([^)]*)\):\s*", reason)  # "(LPAREN): expected …"
    if token is not None:
        reason = f"{reason[token.end() :]} (found {token.group(1)})"
    return CircuitError(
        f"Quil syntax error: {reason or message}",
        code="quil_syntax",
        where=f"line {line}, column {column}",
    )


# Deepest parenthesis nesting handed to pyQuil: that of an OpenQASM expression.
MAX_QUIL_NESTING = MAX_DEPTH


def parse_quil(text: str, *, max_ops: int = 1_000_000, max_bytes: int = 1_000_000) -> Circuit:
    """Parse a Quil program into the IR.

    Args:
        text: The program.
        max_ops: Most IR ops the program may expand to.
        max_bytes: Largest accepted program text (it is bounded before pyQuil's native
            parser reads it).

    Returns:
        The circuit.

    Raises:
        CircuitError: ``quil_syntax`` with line and column, or another code from the module
            docstring.
        MissingOptionalLibraryError: pyQuil is not installed.
    """
    pyquil = _pyquil()
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise CircuitError("the Quil program is empty", code="empty_program")
    data = text.encode()
    if len(data) > max_bytes:
        raise CircuitError(
            f"the program is {len(data):,} bytes; the limit is {max_bytes:,}", code="too_large"
        )
    if nested_deeper_than(data, MAX_QUIL_NESTING, opens=b"(", closes=b")"):
        raise TooDeep(
            f"parentheses are nested more than {MAX_QUIL_NESTING} deep; the limit is "
            f"{MAX_QUIL_NESTING} (deeper nesting would crash the Quil parser)"
        )
    try:
        program = pyquil.Program(text)
    except Exception as exc:  # quil.PyProgramError (a ValueError) and any other refusal
        raise _syntax_error(text, exc) from exc
    return _Converter(pyquil, max_ops, source=text).convert(program)


def from_pyquil(program: Any, *, max_ops: int = 1_000_000) -> Circuit:
    """Convert a ``pyquil.Program`` into the IR.

    Args:
        program: The program, built in Python or parsed from text.
        max_ops: Most IR ops the program may expand to.

    Raises:
        CircuitError: With a code from the module docstring.
        MissingOptionalLibraryError: pyQuil is not installed, or a ``DEFGATE`` needs Qiskit.
    """
    return _Converter(_pyquil(), max_ops).convert(program)


# Widest DEFGATE matrix synthesised into IR gates.
_MAX_DEFGATE_QUBITS = 3

# The compiler hints Quil tools use; they leave the program's meaning unchanged.
_HARMLESS_PRAGMAS = frozenset(
    {
        "INITIAL_REWIRING",
        "PRESERVE_BLOCK",
        "END_PRESERVE_BLOCK",
        "COMMUTING_BLOCKS",
        "END_COMMUTING_BLOCKS",
        "BLOCK",
        "END_BLOCK",
    }
)


def _num(value: float) -> Expr:
    return ("num", float(value))


def _neg(a: Expr) -> Expr:
    return ("neg", a)


def _add(*terms: Expr) -> Expr:
    out = terms[0]
    for t in terms[1:]:
        out = ("bin", "+", out, t)
    return out


def _mul(a: Expr, b: Expr) -> Expr:
    return ("bin", "*", a, b)


def _half(a: Expr) -> Expr:
    return ("bin", "/", a, _num(2.0))


_PI: Expr = ("num", float(np.pi))

# A gate expansion: (IR name, qubit positions in the Quil call, parameter trees).
_Step = tuple[str, tuple[int, ...], tuple[Expr, ...]]


def _xy(theta: Expr) -> list[_Step]:
    # XY(θ) = exp(iθ/4 (XX + YY)); XX and YY commute, so it is rxx(-θ/2)·ryy(-θ/2).
    angle = _neg(_half(theta))
    return [("rxx", (0, 1), (angle,)), ("ryy", (0, 1), (angle,))]


def _phased_fsim(t: Expr, zeta: Expr, chi: Expr, gamma: Expr, phi: Expr) -> list[_Step]:
    # PHASEDFSIM's middle block is diag(e^ia, e^ib)·XY(θ)·diag(1, e^id) on |01>,|10> with
    # a=-(γ+ζ), b=-(γ+χ), d=χ+ζ; the |11> phase then needs only cp(φ) (a+b+d = -2γ).
    return [
        ("p", (0,), (_add(chi, zeta),)),
        *_xy(t),
        ("p", (1,), (_neg(_add(gamma, zeta)),)),
        ("p", (0,), (_neg(_add(gamma, chi)),)),
        ("cp", (0, 1), (phi,)),
    ]


# Quil gate -> (qubits, parameters, expansion). Quil lists a gate's qubits most
# significant first (``CNOT c t``), the same order the IR uses for its gate arguments.
_STANDARD: dict[str, tuple[int, int, Callable[..., list[_Step]]]] = {
    "I": (1, 0, lambda: [("id", (0,), ())]),
    "X": (1, 0, lambda: [("x", (0,), ())]),
    "Y": (1, 0, lambda: [("y", (0,), ())]),
    "Z": (1, 0, lambda: [("z", (0,), ())]),
    "H": (1, 0, lambda: [("h", (0,), ())]),
    "S": (1, 0, lambda: [("s", (0,), ())]),
    "T": (1, 0, lambda: [("t", (0,), ())]),
    "PHASE": (1, 1, lambda a: [("p", (0,), (a,))]),
    "RX": (1, 1, lambda a: [("rx", (0,), (a,))]),
    "RY": (1, 1, lambda a: [("ry", (0,), (a,))]),
    "RZ": (1, 1, lambda a: [("rz", (0,), (a,))]),
    "U": (1, 3, lambda a, b, c: [("u", (0,), (a, b, c))]),
    "CZ": (2, 0, lambda: [("cz", (0, 1), ())]),
    "CNOT": (2, 0, lambda: [("cx", (0, 1), ())]),
    "SWAP": (2, 0, lambda: [("swap", (0, 1), ())]),
    "CPHASE": (2, 1, lambda a: [("cp", (0, 1), (a,))]),
    "RZZ": (2, 1, lambda a: [("rzz", (0, 1), (a,))]),
    "RXX": (2, 1, lambda a: [("rxx", (0, 1), (a,))]),
    "RYY": (2, 1, lambda a: [("ryy", (0, 1), (a,))]),
    "CCNOT": (3, 0, lambda: [("ccx", (0, 1, 2), ())]),
    "CSWAP": (3, 0, lambda: [("cswap", (0, 1, 2), ())]),
    # diag(e^iθ,1,1,1) etc.: flip the qubits that must read 0, apply cp, flip back.
    "CPHASE00": (
        2,
        1,
        lambda a: [
            ("x", (0,), ()),
            ("x", (1,), ()),
            ("cp", (0, 1), (a,)),
            ("x", (0,), ()),
            ("x", (1,), ()),
        ],
    ),
    "CPHASE01": (
        2,
        1,
        lambda a: [("x", (0,), ()), ("cp", (0, 1), (a,)), ("x", (0,), ())],
    ),
    "CPHASE10": (
        2,
        1,
        lambda a: [("x", (1,), ()), ("cp", (0, 1), (a,)), ("x", (1,), ())],
    ),
    "ISWAP": (2, 0, lambda: _xy(_PI)),
    "SQISW": (2, 0, lambda: _xy(_num(np.pi / 2))),
    "XY": (2, 1, _xy),
    # PSWAP(θ) = SWAP · diag(1, e^iθ, e^iθ, 1), and that diagonal is p(θ)⊗p(θ)·cp(-2θ).
    "PSWAP": (
        2,
        1,
        lambda a: [
            ("swap", (0, 1), ()),
            ("p", (0,), (a,)),
            ("p", (1,), (a,)),
            ("cp", (0, 1), (_mul(_num(-2.0), a),)),
        ],
    ),
    "FSIM": (2, 2, lambda t, p: [*_xy(t), ("cp", (0, 1), (p,))]),
    "PHASEDFSIM": (2, 5, _phased_fsim),
}

# IR gate -> its inverse: (name, parameter transform).
_SELF_INVERSE = frozenset(
    {"id", "x", "y", "z", "h", "cx", "cy", "cz", "ch", "swap", "ccx", "cswap"}
)
_INVERSE_NAMES = {"s": "sdg", "sdg": "s", "t": "tdg", "tdg": "t", "sx": "sxdg", "sxdg": "sx"}
_NEGATED = frozenset({"rx", "ry", "rz", "p", "cp", "crx", "cry", "crz", "rxx", "ryy", "rzz"})

# IR gate -> the IR gate that adds one control qubit in front.
_CONTROLLED = {
    "x": "cx",
    "y": "cy",
    "z": "cz",
    "h": "ch",
    "p": "cp",
    "rx": "crx",
    "ry": "cry",
    "rz": "crz",
    "u": "cu",
    "cx": "ccx",
    "swap": "cswap",
}


def _inverse(step: _Step) -> _Step:
    name, qubits, params = step
    if name in _SELF_INVERSE:
        return step
    if name in _INVERSE_NAMES:
        return (_INVERSE_NAMES[name], qubits, params)
    if name in _NEGATED:
        return (name, qubits, (_neg(params[0]),))
    if name == "u":  # U(θ,φ,λ)† = U(-θ,-λ,-φ)
        theta, phi, lam = params
        return ("u", qubits, (_neg(theta), _neg(lam), _neg(phi)))
    if name == "cu":
        theta, phi, lam, gamma = params
        return ("cu", qubits, (_neg(theta), _neg(lam), _neg(phi), _neg(gamma)))
    raise AssertionError(f"no inverse rule for {name}")  # every emitted gate has one


@dataclass(frozen=True, slots=True)
class _Block:
    """A jump pattern folded into a block: ``kind`` is ``if`` or ``while`` on one bit."""

    kind: str
    bit: int
    value: int
    body: list[Any]
    orelse: list[Any]


class _Converter:
    """One conversion: declarations, gate definitions and the ops built so far."""

    def __init__(self, pyquil: Any, max_ops: int, source: str | None = None) -> None:
        from pyquil import quilatom, quilbase  # type: ignore[import-untyped]

        # Source lines, whitespace-normalised and without comments, to point at the line
        # of a rejected instruction (pyQuil lists declarations first and keeps no lines).
        self.lines = [
            " ".join(line.split("#", 1)[0].split()) for line in (source or "").splitlines()
        ]
        self.current: Any = None

        self.atom = quilatom
        self.base = quilbase
        self.max_ops = max_ops
        self.ops: list[Op | None] = []  # None: RESET of every qubit
        self.num_qubits = 0
        self.clbit_offset: dict[str, tuple[int, int]] = {}  # BIT region -> (offset, size)
        self.num_clbits = 0
        self.real_regions: dict[str, int] = {}
        self.used_parameters: set[str] = set()
        self.defgates: dict[str, Any] = {}
        self.defgate_steps: dict[str, tuple[int, list[_Step]]] = {}
        self.where = ""

    def fail(self, message: str, code: str = "quil_unsupported") -> CircuitError:
        return CircuitError(message, code=code, where=self.locate() or self.where or None)

    def locate(self) -> str | None:
        """``line L`` of the current instruction when its text appears once in the source."""
        if self.current is None or not self.lines:
            return None
        text = " ".join(_quil(self.current).splitlines()[0].split())
        hits = [i for i, line in enumerate(self.lines, start=1) if line == text]
        return f"line {hits[0]}" if len(hits) == 1 else None

    def convert(self, program: Any) -> Circuit:
        base = self.base
        try:
            # pyQuil builds its Python instructions from the parsed program only here,
            # and refuses some that parsed (quil.GateError: a gate on no qubits …).
            for gate in program.defined_gates:
                self.defgates[gate.name] = gate
            instructions = list(program.instructions)
        except Exception as exc:  # quil's errors are native; none of them is ours
            raise CircuitError(
                f"Quil program refused: {str(exc)[:300]}", code="quil_syntax"
            ) from exc
        # Declarations first, wherever they stand: Quil memory is program-wide. pyQuil
        # keeps them in a hash map (their order changes from run to run), so the clbit
        # layout follows a fixed rule instead: ``ro`` first, then by name.
        declarations = [inst for inst in instructions if isinstance(inst, base.Declare)]
        for inst in sorted(declarations, key=lambda d: (d.name != "ro", d.name)):
            self.declare(inst)
        items = self.structure(instructions, 0, len(instructions), 0)
        for n, inst in enumerate(items, start=1):
            self.where = f"instruction {n}"
            self.current = inst if not isinstance(inst, _Block) else None
            try:
                self.instruction(inst, last=n == len(items))
            except RecursionError as exc:
                raise self.fail(
                    "a parameter expression is nested too deeply", code="invalid_parameter"
                ) from exc
            except (ArithmeticError, ValueError, TypeError) as exc:
                # pyQuil evaluates constant expressions itself (``RX(1/0)``).
                raise self.fail(f"{_quil(inst)}: {exc}", code="invalid_parameter") from exc
            if len(self.ops) > self.max_ops:
                raise self.fail(
                    f"the program expands to more than {self.max_ops:,} operations",
                    code="too_large",
                )
        self.where, self.current = "", None
        if self.num_qubits == 0:
            raise CircuitError("the Quil program uses no qubits", code="empty_program")
        every = Op(name="reset", qubits=tuple(range(self.num_qubits)))
        ops = tuple(every if op is None else op for op in self.ops)
        try:
            circuit = Circuit(
                num_qubits=self.num_qubits,
                num_clbits=self.num_clbits,
                ops=ops,
                parameters=tuple(sorted(self.used_parameters)),
            )
        except ValueError as exc:
            raise CircuitError(f"the Quil program does not fit the IR: {exc}") from exc
        # An expression pyQuil accepted can still break the IR's own limits (nesting
        # depth): whether pyQuil's recursive parser or ours stops it first depends on the
        # stack left, so both report it as invalid_parameter.
        check_parameters(circuit)
        return circuit

    # -- instructions ---------------------------------------------------------------------

    # -- classical control: the jump patterns pyQuil writes, as if/while blocks -----------

    def structure(self, insts: list[Any], start: int, end: int, depth: int) -> list[Any]:
        """``insts[start:end]`` with the jump patterns below folded into ``_Block`` items.

        * ``JUMP-UNLESS @E b; body; LABEL @E`` → ``if (b == 1) body`` (``JUMP-WHEN``:
          ``b == 0``);
        * ``JUMP-WHEN @T b; else; JUMP @E; LABEL @T; then; LABEL @E`` → if/else
          (``Program.if_then``);
        * ``LABEL @S; JUMP-UNLESS @E b; body; JUMP @S; LABEL @E`` → ``while (b == 1)
          body`` (``Program.while_do``; ``JUMP-WHEN``: ``b == 0``).

        Anything else with labels or jumps is left as is and refused as before.
        """
        if depth > MAX_CONTROL_DEPTH:
            raise self.fail(
                f"JUMP blocks nested deeper than {MAX_CONTROL_DEPTH} levels", code="too_large"
            )
        base = self.base
        labels = {
            inst.label: k
            for k, inst in enumerate(insts[start:end], start=start)
            if isinstance(inst, base.JumpTarget)
        }
        out: list[Any] = []
        k = start
        while k < end:
            inst = insts[k]
            block = None
            if isinstance(inst, base.JumpTarget) and k + 1 < end:
                block = self.loop(insts, k, labels, depth)
            elif isinstance(inst, base.JumpWhen | base.JumpUnless):
                block = self.branch(insts, k, labels, depth)
            if block is None:
                out.append(inst)
                k += 1
            else:
                out.append(block[0])
                k = block[1]
        return out

    def loop(
        self, insts: list[Any], k: int, labels: dict[Any, int], depth: int
    ) -> tuple[_Block, int] | None:
        base = self.base
        test = insts[k + 1]
        if not isinstance(test, base.JumpWhen | base.JumpUnless):
            return None
        e = labels.get(test.target)
        if e is None or e <= k + 2:
            return None
        back = insts[e - 1]
        if not (isinstance(back, base.Jump) and back.target == insts[k].label):
            return None
        want = 0 if isinstance(test, base.JumpWhen) else 1
        body = self.structure(insts, k + 2, e - 1, depth + 1)
        return _Block("while", self.condition_bit(test), want, body, []), e + 1

    def branch(
        self, insts: list[Any], k: int, labels: dict[Any, int], depth: int
    ) -> tuple[_Block, int] | None:
        base = self.base
        inst = insts[k]
        t = labels.get(inst.target)
        if t is None or t <= k:
            return None
        bit = self.condition_bit(inst)
        jumps_when = isinstance(inst, base.JumpWhen)
        before = insts[t - 1] if t - 1 > k else None
        if isinstance(before, base.Jump):
            e = labels.get(before.target)
            if e is not None and e > t:
                # Falling through runs ``first``; the jump runs ``second``.
                first = self.structure(insts, k + 1, t - 1, depth + 1)
                second = self.structure(insts, t + 1, e, depth + 1)
                then, orelse = (second, first) if jumps_when else (first, second)
                return _Block("if", bit, 1, then, orelse), e + 1
        # The jump skips the body when the bit reads the jump's value.
        body = self.structure(insts, k + 1, t, depth + 1)
        return _Block("if", bit, 0 if jumps_when else 1, body, []), t + 1

    def condition_bit(self, inst: Any) -> int:
        ref = inst.condition
        region = self.clbit_offset.get(getattr(ref, "name", ""))
        if region is None or not 0 <= ref.offset < region[1]:
            raise self.fail(f"{_quil(inst)}: the condition must be a bit of a declared BIT region")
        return region[0] + ref.offset

    def block(self, item: _Block) -> None:
        saved = self.ops
        try:
            self.ops = []
            for inst in item.body:
                self.instruction(inst, last=False)
            body = self.ops
            self.ops = []
            for inst in item.orelse:
                self.instruction(inst, last=False)
            orelse = self.ops
        finally:
            self.ops = saved
        if None in body or None in orelse:
            raise self.fail("RESET of every qubit inside a JUMP block is not supported")
        ops = (*body, *orelse)
        try:
            op = Op(
                name=item.kind,
                qubits=tuple(sorted({q for o in ops if o is not None for q in o.qubits})),
                condition=Condition(clbits=(item.bit,), value=item.value),
                body=tuple(o for o in body if o is not None),
                orelse=tuple(o for o in orelse if o is not None),
            )
        except ValueError as exc:
            raise self.fail(f"the JUMP block does not fit the IR: {exc}") from exc
        self.ops.append(op)

    def instruction(self, inst: Any, *, last: bool) -> None:
        base = self.base
        if isinstance(inst, _Block):
            self.block(inst)
            return
        if isinstance(inst, base.Declare | base.DefGate | base.Nop):
            return
        if isinstance(inst, base.Gate):
            self.gate(inst)
        elif isinstance(inst, base.Measurement):
            self.measure(inst)
        elif isinstance(inst, base.ResetQubit):
            self.append(Op(name="reset", qubits=(self.qubit(inst.qubit),)))
        elif isinstance(inst, base.Reset):
            # RESET with no qubit resets every qubit the program uses, including those
            # first named after it, so it is resolved once the width is known.
            self.ops.append(None)
        elif isinstance(inst, base.Halt) and last:
            return
        elif isinstance(inst, base.Pragma):
            self.pragma(inst)
        else:
            self.unsupported(inst)

    def declare(self, inst: Any) -> None:
        kind = str(inst.memory_type).upper()
        if inst.shared_region:
            self.where = ""
            raise self.fail(f"DECLARE {inst.name} … SHARING is not supported")
        if kind in ("BIT", "OCTET"):
            size = inst.memory_size * (8 if kind == "OCTET" else 1)
            self.clbit_offset[inst.name] = (self.num_clbits, size)
            self.num_clbits += size
        elif kind == "REAL":
            self.real_regions[inst.name] = inst.memory_size
        # INTEGER regions are only read by classical instructions, which are rejected.

    def unsupported(self, inst: Any) -> None:
        base = self.base
        kind = type(inst).__name__
        what = {
            "DefCircuit": "DEFCIRCUIT (circuit macros)",
            "Wait": "WAIT",
            "Halt": "HALT before the end of the program",
        }.get(kind)
        if what is None and isinstance(inst, base.JumpTarget | base.Jump):
            what = "classical control flow (LABEL/JUMP)"
        if what is None and isinstance(inst, base.JumpWhen | base.JumpUnless):
            what = "classical control flow (JUMP-WHEN/JUMP-UNLESS)"
        if what is None and kind.startswith("Classical"):
            what = "classical memory instructions (MOVE, ADD, LOAD …)"
        if what is None:
            what = f"the {kind} instruction"
        first_line = _quil(inst).splitlines()[0]
        raise self.fail(f"{what} cannot be expressed in the circuit IR: {first_line}")

    def pragma(self, inst: Any) -> None:
        if inst.command in _HARMLESS_PRAGMAS:
            return
        if inst.command in ("ADD-KRAUS", "READOUT-POVM"):
            raise self.fail(
                f"PRAGMA {inst.command} adds noise, which changes what the program computes; "
                "give noise on the job instead"
            )
        raise self.fail(
            f"PRAGMA {inst.command} is not known to this converter, so it cannot promise to "
            f"keep its meaning; remove it (ignorable hints: {', '.join(sorted(_HARMLESS_PRAGMAS))})"
        )

    def qubit(self, q: Any) -> int:
        index = getattr(q, "index", q)
        if not isinstance(index, int):
            raise self.fail(f"qubit {q!r} is not a fixed index (placeholders are not supported)")
        if not 0 <= index < MAX_IR_QUBITS:
            raise self.fail(
                f"qubit {index} is past the IR's limit of {MAX_IR_QUBITS} qubits", code="too_large"
            )
        self.num_qubits = max(self.num_qubits, index + 1)
        return index

    def append(self, op: Op) -> None:
        self.ops.append(op)

    def measure(self, inst: Any) -> None:
        qubit = self.qubit(inst.qubit)
        target = inst.classical_reg
        if target is None:
            raise self.fail(
                f"MEASURE {qubit} has no classical target; write MEASURE {qubit} ro[i] "
                "after DECLARE ro BIT[n]"
            )
        region = self.clbit_offset.get(target.name)
        if region is None:
            known = sorted(self.clbit_offset)
            raise self.fail(
                f"MEASURE writes to '{target.name}', which is not a declared BIT region"
                + (f" (declared: {', '.join(known)})" if known else " (add DECLARE ro BIT[n])"),
                code="unknown_register",
            )
        offset, size = region
        if not 0 <= target.offset < size:
            raise self.fail(
                f"{target.name}[{target.offset}] is out of range: {target.name} has {size} bit(s)",
                code="clbit_out_of_range",
            )
        self.append(Op(name="measure", qubits=(qubit,), clbits=(offset + target.offset,)))

    def gate(self, inst: Any) -> None:
        try:
            # Not ``inst.qubits``: pyQuil 4 implements it with a deprecated call.
            indices = inst.get_qubit_indices()
        except ValueError as exc:
            raise self.fail(
                f"{inst.name} acts on a qubit placeholder; give fixed qubit indices"
            ) from exc
        qubits = tuple(self.qubit(q) for q in indices)
        if len(set(qubits)) != len(qubits):
            raise self.fail(
                f"{inst.name} uses a qubit twice: {list(qubits)}", code="duplicate_qubit"
            )
        params = tuple(self.param(p) for p in inst.params)
        steps = self.expand(inst.name, params, [str(m) for m in inst.modifiers], len(qubits))
        for name, positions, trees in steps:
            values = []
            for tree in trees:
                try:
                    values.append(fold(tree))
                except ValueError as exc:
                    raise self.fail(
                        f"a parameter of {inst.name} has no finite value: {exc}",
                        code="invalid_parameter",
                    ) from exc
            self.append(
                Op(name=name, qubits=tuple(qubits[i] for i in positions), params=tuple(values))
            )

    def expand(
        self, name: str, params: tuple[Expr, ...], modifiers: Sequence[str], nqubits: int
    ) -> list[_Step]:
        """The IR steps of ``modifiers… name(params)`` on ``nqubits`` qubits (positions)."""
        if modifiers:
            outer, inner = modifiers[0].upper(), modifiers[1:]
            if outer == "DAGGER":
                return [_inverse(s) for s in reversed(self.expand(name, params, inner, nqubits))]
            if outer == "CONTROLLED":
                if nqubits < 2:
                    raise self.fail(f"CONTROLLED {name} needs a control qubit", "wrong_arity")
                steps = self.expand(name, params, inner, nqubits - 1)
                if len(steps) == 1 and steps[0][0] in _CONTROLLED:
                    base, positions, trees = steps[0]
                    controlled = _CONTROLLED[base]
                    if controlled == "cu":
                        trees = (*trees, _num(0.0))
                    return [(controlled, (0, *(p + 1 for p in positions)), trees)]
                raise self.fail(
                    f"CONTROLLED {name} has no single controlled IR gate; CONTROLLED works on "
                    "X, Y, Z, H, PHASE, RX, RY, RZ, U, CNOT and SWAP"
                )
            raise self.fail(f"the {outer} modifier is not supported (only DAGGER, CONTROLLED)")
        if name in self.defgates:
            return self.defgate(name, params, nqubits)
        spec = _STANDARD.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, [*_STANDARD, *self.defgates], n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise self.fail(f"unknown Quil gate '{name}'{hint}", code="unknown_gate")
        want_q, want_p, build = spec
        if nqubits != want_q or len(params) != want_p:
            raise self.fail(
                f"{name} takes {want_p} parameter(s) and {want_q} qubit(s), "
                f"got {len(params)} and {nqubits}",
                code="wrong_arity",
            )
        return build(*params)

    def defgate(self, name: str, params: tuple[Expr, ...], nqubits: int) -> list[_Step]:
        cached = self.defgate_steps.get(name)
        if cached is None:
            definition = self.defgates[name]
            if definition.parameters:
                raise self.fail(
                    f"DEFGATE {name} has parameters; only constant-matrix gates are supported"
                )
            spec = definition.specification
            if spec.is_permutation():
                perm = spec.to_permutation()
                matrix = np.zeros((len(perm), len(perm)), dtype=complex)
                # Quil: row perm[j] of column j is 1 (|j> goes to |perm[j]>).
                for j, target in enumerate(perm):
                    matrix[target, j] = 1.0
            elif spec.is_matrix():
                try:
                    matrix = np.array(definition.matrix, dtype=complex)
                except (TypeError, ValueError) as exc:
                    raise self.fail(f"DEFGATE {name}'s matrix is not constant: {exc}") from exc
            else:
                raise self.fail(f"DEFGATE {name} AS PAULI-SUM is not supported")
            size = matrix.shape[0]
            width = size.bit_length() - 1
            if matrix.shape != (size, size) or 1 << width != size or width < 1:
                raise self.fail(f"DEFGATE {name}'s matrix is not 2^n × 2^n", "invalid_parameter")
            if width > _MAX_DEFGATE_QUBITS:
                # Synthesis cost grows as 4^n: the ingest stage must stay fast.
                raise self.fail(
                    f"DEFGATE {name} acts on {width} qubits; matrices of at most "
                    f"{_MAX_DEFGATE_QUBITS} qubits are synthesised"
                )
            if not np.allclose(matrix.conj().T @ matrix, np.eye(size), atol=1e-8):
                raise self.fail(f"DEFGATE {name}'s matrix is not unitary", "invalid_parameter")
            cached = (width, _synthesise(matrix, width, name))
            self.defgate_steps[name] = cached
        width, steps = cached
        if nqubits != width or params:
            raise self.fail(
                f"{name} takes 0 parameters and {width} qubit(s), got {len(params)} and {nqubits}",
                code="wrong_arity",
            )
        return steps

    # -- parameters -----------------------------------------------------------------------

    def param(self, value: Any) -> Expr:
        atom = self.atom
        if isinstance(value, complex | float | int | np.number):
            number = complex(value)
            if abs(number.imag) > 1e-12:
                raise self.fail(f"complex parameter {value} (gate angles must be real)")
            return _num(number.real)
        if isinstance(value, atom.MemoryReference):
            return ("name", self.parameter_name(value))
        if isinstance(value, atom.BinaryExp):
            op = {"+": "+", "-": "-", "*": "*", "/": "/", "^": "**"}[value.operator.strip()]
            return ("bin", op, self.param(value.op1), self.param(value.op2))
        if isinstance(value, atom.Function):
            function = {"SIN": "sin", "COS": "cos", "SQRT": "sqrt", "EXP": "exp"}.get(
                value.name.upper()
            )
            if function is None:
                raise self.fail(
                    f"{value.name} in a parameter gives a complex value; angles must be real"
                )
            return ("call", function, self.param(value.expression))
        raise self.fail(f"parameter {value} is not a number or a REAL memory reference")

    def parameter_name(self, ref: Any) -> str:
        size = self.real_regions.get(ref.name)
        if size is None:
            kind = "a BIT region" if ref.name in self.clbit_offset else "not declared"
            raise self.fail(
                f"parameter {ref.name}[{ref.offset}] must be a REAL region, but it is {kind}",
                code="unknown_register",
            )
        if not 0 <= ref.offset < size:
            raise self.fail(
                f"{ref.name}[{ref.offset}] is out of range: {ref.name} has {size} value(s)",
                code="invalid_parameter",
            )
        name = ref.name if size == 1 else f"{ref.name}_{ref.offset}"
        if not re.fullmatch(r"[^\W\d]\w*", name) or name in CONSTANTS or name in FUNCTIONS:
            raise self.fail(f"memory region name {ref.name!r} is not a valid parameter name")
        self.used_parameters.add(name)
        return name


def quil_parameter_names(region: str, size: int) -> list[str]:
    """The IR parameter names a ``DECLARE region REAL[size]`` becomes."""
    return [region] if size == 1 else [f"{region}_{i}" for i in range(size)]


def _quil(inst: Any) -> str:
    try:
        text = str(inst.out())
    except Exception:  # some instruction types have no Quil form in pyQuil
        text = type(inst).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _synthesise(matrix: np.ndarray, width: int, name: str) -> list[_Step]:
    """IR steps for a constant Quil matrix (first qubit most significant), via Qiskit."""
    try:
        from qiskit import QuantumCircuit, transpile  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingOptionalLibraryError(
            "qiskit", "qiskit", f"synthesising DEFGATE {name}"
        ) from exc
    qc = QuantumCircuit(width)
    # Qiskit's matrices put qubit 0 least significant; Quil's first argument is most.
    qc.unitary(matrix, list(reversed(range(width))))
    out = transpile(qc, basis_gates=["u", "cx"], optimization_level=1, seed_transpiler=0)
    steps: list[_Step] = []
    for inst in out.data:
        positions = tuple(out.find_bit(q).index for q in inst.qubits)
        params = tuple(_num(float(p)) for p in inst.operation.params)
        steps.append((inst.operation.name, positions, params))
    return steps
