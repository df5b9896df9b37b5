"""Conversion from the qbus IR to ``cirq.Circuit``.

Part of the cirq and qsim engines: Cirq is imported here and in ``cirq_engine.py`` only,
so the rest of qbus runs without it.

Qubit ``i`` of the IR is ``cirq.LineQubit(i)``. Every IR gate maps to a Cirq gate with
exactly the IR's matrix, global phase included, so a state vector agrees with the
reference amplitude by amplitude (not only up to phase):

* where a native Cirq gate has the identical matrix it is used (``cirq.rx`` is
  ``exp(-i x X/2)``, ``ZPowGate(exponent=l/pi)`` is ``p(l)``, ``X**0.5`` is ``sx``,
  ``XXPowGate(exponent=t/pi, global_shift=-0.5)`` is ``rxx(t)``, ``ControlledGate(rx)``
  is ``crx`` …): native gates keep Cirq's fast ``_apply_unitary_`` paths and qsim's own
  gate kernels;
* ``u``, ``u2`` and ``cu`` have no phase-identical native gate and become
  ``cirq.MatrixGate`` of ``reference.gate_matrix``.

Matrix order: ``gate_matrix`` uses Qiskit's convention (the first listed qubit is the
*least* significant bit of the matrix index) while Cirq's ``MatrixGate`` is big-endian
(the first qubit is the *most* significant). Rather than permute the matrix, a
``MatrixGate`` is applied to the op's qubits in reverse order, which is the same thing.

Measurements use one key per clbit (``c0``, ``c1`` …); a clbit written twice repeats its
key, and the last write is what the clbit holds (``counts_from_records``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qbus.engines.checks import check_bound
from qbus.engines.params import numeric_params
from qbus.engines.reference import gate_matrix
from qbus.errors import EngineError, MissingOptionalLibraryError
from qbus.schemas.ir import Circuit, Op

try:
    import cirq
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("cirq-core", "cirq", "the cirq engine") from exc

_PI = math.pi

# Tests a clbit for 0 (cirq-core 1.5+); without it the engine runs no classical control.
_BIT_MASK_CONDITION = getattr(cirq, "BitMaskKeyCondition", None)

# Parameterless gates: built once; Cirq gates are immutable values.
FIXED_GATES: dict[str, Any] = {
    "id": cirq.I,
    "x": cirq.X,
    "y": cirq.Y,
    "z": cirq.Z,
    "h": cirq.H,
    "s": cirq.S,  # Z**0.5 = diag(1, i)
    "sdg": cirq.ZPowGate(exponent=-0.5),
    "t": cirq.T,
    "tdg": cirq.ZPowGate(exponent=-0.25),
    "sx": cirq.XPowGate(exponent=0.5),  # (1+i)/2 [[1, -i], [-i, 1]] = Qiskit's SX
    "sxdg": cirq.XPowGate(exponent=-0.5),
    "cx": cirq.CNOT,
    "cy": cirq.ControlledGate(cirq.Y),
    "cz": cirq.CZ,
    "ch": cirq.ControlledGate(cirq.H),
    "swap": cirq.SWAP,
    "csx": cirq.ControlledGate(cirq.XPowGate(exponent=0.5)),
    "ccx": cirq.CCX,
    "cswap": cirq.CSWAP,
}


def _matrix(name: str) -> Callable[..., Any]:
    # The reference matrix itself, built without Cirq's unitarity check (it is exact).
    def build(*params: float) -> Any:
        return cirq.MatrixGate(gate_matrix(name, params), unitary_check=False)

    return build


# Parametrised gates: angle(s) -> Cirq gate with the IR's exact matrix.
PARAM_GATES: dict[str, Callable[..., Any]] = {
    "rx": cirq.rx,
    "ry": cirq.ry,
    "rz": cirq.rz,
    "p": lambda lam: cirq.ZPowGate(exponent=lam / _PI),
    "u1": lambda lam: cirq.ZPowGate(exponent=lam / _PI),
    "u2": _matrix("u2"),
    "u": _matrix("u"),
    "cp": lambda lam: cirq.CZPowGate(exponent=lam / _PI),
    "crx": lambda t: cirq.ControlledGate(cirq.rx(t)),
    "cry": lambda t: cirq.ControlledGate(cirq.ry(t)),
    "crz": lambda t: cirq.ControlledGate(cirq.rz(t)),
    "cu": _matrix("cu"),
    "rxx": lambda t: cirq.XXPowGate(exponent=t / _PI, global_shift=-0.5),
    "ryy": lambda t: cirq.YYPowGate(exponent=t / _PI, global_shift=-0.5),
    "rzz": lambda t: cirq.ZZPowGate(exponent=t / _PI, global_shift=-0.5),
}

# Gates applied through a little-endian reference matrix: their qubits go in reversed.
_REVERSED = frozenset({"cu"})

_RESET = cirq.ResetChannel()
_qubits: tuple[Any, ...] = tuple(cirq.LineQubit.range(32))
_measure_gates: dict[int, Any] = {}


def line_qubits(n: int) -> Sequence[Any]:
    """``cirq.LineQubit(0) .. cirq.LineQubit(n - 1)``, from a process-wide cache."""
    global _qubits
    if len(_qubits) < n:
        # A new tuple, swapped in whole: engines run in worker threads, and a list
        # extended by two threads at once could end up with qubits out of place.
        _qubits = tuple(cirq.LineQubit.range(n))
    return _qubits[:n]


def clbit_key(clbit: int) -> str:
    """The measurement key of clbit ``clbit``."""
    return f"c{clbit}"


def _measure_gate(clbit: int) -> Any:
    gate = _measure_gates.get(clbit)
    if gate is None:
        gate = _measure_gates[clbit] = cirq.MeasurementGate(1, key=clbit_key(clbit))
    return gate


def to_cirq(
    circuit: Circuit,
    values: Mapping[str, float] | None = None,
    *,
    measurements: bool = True,
) -> cirq.Circuit:
    """Build the ``cirq.Circuit`` of ``circuit``, with named parameters bound.

    Args:
        circuit: The IR circuit.
        values: Values of the circuit's named parameters.
        measurements: Keep measurements and resets; False leaves them out (for a
            state-vector run, where measurements are terminal and resets act on fresh
            qubits, so both are no-ops on the state).

    Returns:
        A circuit on ``cirq.LineQubit(0..num_qubits-1)``, and ``LineQubit(num_qubits)``
        as a scratch qubit when a block measures or resets (``_controlled_measure``);
        barriers are dropped.

    Raises:
        CircuitError: ``unbound_parameter`` when a named parameter has no value.
    """
    values = values or {}
    check_bound(circuit, values)
    # One more than the circuit's: the last is the scratch qubit of a block's measurement.
    qubits = line_qubits(circuit.num_qubits + 1)
    ops: list[Any] = []
    _emit(ops, circuit.ops, qubits, values, measurements, (), set())
    return cirq.Circuit(ops)


def _emit(
    out: list[Any],
    ops: Sequence[Op],
    qubits: Sequence[Any],
    values: Mapping[str, float],
    measurements: bool,
    controls: tuple[Any, ...],
    seen: set[int],
    tested: Mapping[int, int] | None = None,
) -> None:
    """Append the Cirq operations of ``ops``, each controlled by ``controls`` (ANDed).

    ``seen`` collects the clbits measured so far: a condition's other clbits still read
    0 and are not tested (Cirq refuses a key it has not measured). ``tested`` holds the
    clbits ``controls`` already test, with their values: a nested condition does not
    test them again, and no copy is written for an assignment that contradicts them (it
    could never run, and ``cirq.defer_measurements`` refuses such an operation).
    """
    tested = tested or {}
    fixed = FIXED_GATES

    def append(operation: Any) -> None:
        out.append(operation.with_classical_controls(*controls) if controls else operation)

    for op in ops:
        name = op.name
        gate = fixed.get(name)
        if gate is not None:
            append(gate.on(*[qubits[q] for q in op.qubits]))
        elif name == "measure":
            if measurements:
                for q, c in zip(op.qubits, op.clbits, strict=True):
                    if controls:
                        _controlled_measure(out, qubits[q], qubits[-1], c, controls, seen)
                    else:
                        out.append(_measure_gate(c).on(qubits[q]))
                    seen.add(c)
        elif name == "reset":
            if measurements:
                for q in op.qubits:
                    if controls:
                        _controlled_reset(out, qubits[q], qubits[-1], controls)
                    else:
                        out.append(_RESET.on(qubits[q]))
        elif name == "barrier":
            continue
        elif name == "if":
            assert op.condition is not None  # the IR guarantees it
            # Cirq ANDs the conditions of an operation and has no OR or NOT on keys: the
            # block is emitted once per assignment of the bits the condition reads, under
            # that assignment's bit tests. The assignments exclude one another, so at
            # most one copy runs (check_cirq_control bounds their number).
            bits = sorted(op.condition.read_clbits() & seen - tested.keys())
            known = sum(v << c for c, v in tested.items())
            for assignment in range(1 << len(bits)):
                chosen = {c: (assignment >> j) & 1 for j, c in enumerate(bits)}
                word = known | sum(v << c for c, v in chosen.items())
                tests = tuple(_bit_test(c, v) for c, v in chosen.items())
                block = op.body if op.condition.evaluate(word) else op.orelse
                inner = {**tested, **chosen}
                _emit(out, block, qubits, values, measurements, controls + tests, seen, inner)
        else:
            gate = PARAM_GATES[name](*numeric_params(op.params, values))
            qs = op.qubits[::-1] if name in _REVERSED else op.qubits
            append(gate.on(*[qubits[q] for q in qs]))


def _controlled_measure(
    out: list[Any], qubit: Any, spare: Any, clbit: int, controls: tuple[Any, ...], seen: set[int]
) -> None:
    """``clbit = measure qubit`` only where ``controls`` hold, on the scratch qubit ``spare``.

    Cirq cannot condition a measurement, so the key is always written, from ``spare``:
    ``spare`` first takes the clbit's old value (an unmeasured clbit reads 0), which the
    controls undo; under the controls a CNOT copies ``qubit``'s Z value onto ``spare``.
    Measuring ``spare`` then measures ``qubit`` where the controls hold (the two are
    entangled) and rewrites the old value elsewhere; ``spare`` is reset for its next use.
    """
    if clbit in seen:
        old = _bit_test(clbit, 1)
        out.append(cirq.X(spare).with_classical_controls(old))
        out.append(cirq.X(spare).with_classical_controls(*controls, old))
    out.append(cirq.CNOT(qubit, spare).with_classical_controls(*controls))
    out.append(_measure_gate(clbit).on(spare))
    out.append(_RESET.on(spare))


def _controlled_reset(out: list[Any], qubit: Any, spare: Any, controls: tuple[Any, ...]) -> None:
    """``reset qubit`` only where ``controls`` hold, without a classically controlled channel.

    ``cirq.defer_measurements`` (qsim's way to run classical control) cannot control a
    reset, so: under the controls, two CNOTs move ``qubit``'s state onto the fresh
    ``spare`` (leaving ``qubit`` in ``|0>``), and ``spare`` is reset for everyone.
    """
    out.append(cirq.CNOT(qubit, spare).with_classical_controls(*controls))
    out.append(cirq.CNOT(spare, qubit).with_classical_controls(*controls))
    out.append(_RESET.on(spare))


def _bit_test(clbit: int, value: int) -> Any:
    """The Cirq condition "clbit ``clbit`` reads ``value``"."""
    key = clbit_key(clbit)
    if value:
        return cirq.KeyCondition(cirq.MeasurementKey(key))
    return _BIT_MASK_CONDITION(cirq.MeasurementKey(key), target_value=0, equal_target=True)


CONTROL_CONSTRUCTS: tuple[str, ...] = ("if",) if _BIT_MASK_CONDITION is not None else ()
"""What the cirq engine runs of classical control: ``if`` (not ``while``), with
cirq-core 1.5+ (``cirq.BitMaskKeyCondition`` tests a bit for 0)."""

MAX_CIRQ_CONDITION_BITS = 6
"""Most clbits one condition may read on Cirq (the block is emitted 2**bits times)."""


def check_cirq_control(circuit: Circuit) -> None:
    """Check that Cirq can run the circuit's ``if`` ops as ``to_cirq`` writes them.

    A measurement inside a block always writes its key (``_controlled_measure``), so
    every clbit measured earlier, in a block or not, has a key a condition can test.

    Raises:
        EngineError: ``classical_control_unsupported`` when a condition reads more
            than ``MAX_CIRQ_CONDITION_BITS`` measured clbits, or a block measures into a
            clbit that its own condition (or an enclosing one) reads: Cirq tests a
            condition again at every operation of the block, so the block's later
            operations, and the copies written for the condition's other values, would
            see the new value.
    """
    _check_blocks(circuit.ops, "ops", set(), frozenset())


def _check_blocks(
    ops: Sequence[Op], where: str, measured: set[int], guarded: frozenset[int]
) -> None:
    """``check_cirq_control`` over ``ops``; ``guarded``: clbits the enclosing conditions read."""
    for i, op in enumerate(ops):
        here = f"{where}[{i}]"
        if op.name == "measure":
            written = guarded.intersection(op.clbits)
            if written:
                raise EngineError(
                    f"cirq cannot run the measurement at $.{here}: it writes clbit(s) "
                    f"{sorted(written)}, which the condition of an enclosing 'if' reads",
                    code="classical_control_unsupported",
                )
            measured.update(op.clbits)
        if op.name != "if":
            continue
        assert op.condition is not None  # the IR guarantees it
        read = op.condition.read_clbits()
        tested = read & measured
        if len(tested) > MAX_CIRQ_CONDITION_BITS:
            raise EngineError(
                f"cirq cannot run the 'if' at $.{here}: its condition reads {len(tested)} "
                f"clbits (at most {MAX_CIRQ_CONDITION_BITS})",
                code="classical_control_unsupported",
            )
        inner = guarded | read
        _check_blocks(op.body, f"{here}.body", measured, inner)
        _check_blocks(op.orelse, f"{here}.orelse", measured, inner)


def counts_from_records(records: Mapping[str, np.ndarray], num_clbits: int) -> dict[str, int]:
    """IR counts from Cirq measurement records keyed by ``clbit_key``.

    Args:
        records: Key -> array of shape ``(repetitions, instances, 1)``, as
            ``cirq.Result.records``; the last instance of a repeated key wins.
        num_clbits: Width of the bitstrings; clbits with no key read ``0``.

    Returns:
        Bitstring (clbit 0 rightmost) -> count.
    """
    shots = next(iter(records.values())).shape[0] if records else 0
    # One byte per character: '0' everywhere, then add each clbit's bit in its column,
    # and view every row as one fixed-width byte string for np.unique.
    chars = np.full((shots, num_clbits), ord("0"), dtype=np.uint8)
    for c in range(num_clbits):
        rec = records.get(clbit_key(c))
        if rec is not None:
            chars[:, num_clbits - 1 - c] += rec[:, -1, 0].astype(np.uint8)
    rows = chars.view(f"S{num_clbits}").reshape(-1)
    keys, counts = np.unique(rows, return_counts=True)
    return {k.decode(): int(n) for k, n in zip(keys, counts, strict=True)}


__all__ = [
    "FIXED_GATES",
    "PARAM_GATES",
    "clbit_key",
    "counts_from_records",
    "line_qubits",
    "to_cirq",
]
