"""Are two circuits the same operation? The check an AI rewrite must pass before it is used.

Two circuits are **equivalent** here when they have the same qubit and clbit counts,
the same named parameters, the same final measurements (the same ``(qubit, clbit)``
pairs; measurements must be terminal) and unitaries equal up to one global phase:
``U_a = e^{iφ} U_b``. This is stricter than "same counts": dropping a phase gate just
before a measurement changes the unitary and is refused.

Two methods, both on numpy with the reference simulator's gate matrices:

* ``unitary`` (``n <= exact_max_qubits``, 12 by default): every column of both unitaries
  is computed (in blocks, so at most a few tens of MiB are held) and compared element by
  element after fixing the phase from the first column. Exact up to ``tolerance``.
* ``random_states`` (larger circuits): ``samples`` (4) Haar-random input states ψ are run
  through both; each must give ``‖U_a ψ − e^{iφ} U_b ψ‖ ≤ tolerance`` with one common
  phase. Stated confidence: if the circuits differ by at least ``η`` in operator norm
  (minimised over the global phase), every one of ``k`` inputs passes with probability at
  most ``(16 (d−1) τ² / η²)^k`` (``d = 2^n``, ``τ`` the tolerance). Proof sketch: with
  ``V = U_b† U_a``, a pass needs ``Σ_i |c_i|² |λ_i − e^{iφ}|² ≤ τ²`` over V's eigenbasis;
  V has two eigenvalues at distance ``Δ ≥ η/√2``, one of which is ``≥ Δ/2`` from
  ``e^{iφ}``, so the Haar weight ``w`` of its eigenspace must be ``≤ 4τ²/Δ²``, and
  ``P(w ≤ x) ≤ (d−1) x`` (a Beta(m, d−m) marginal with m ≥ 1). Inputs are independent.

Circuits with named parameters are compared at ``parameter_points`` random bindings (the
same values in both); that part is a randomized check whatever the size, and says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import msgspec
import numpy as np

from qbus.engines.base import numeric_params
from qbus.engines.reference import check_terminal_measurements, gate_matrix
from qbus.errors import CircuitError
from qbus.schemas.ir import Circuit

EXACT_MAX_QUBITS = 12
"""Up to this many qubits the full unitaries are compared."""

TOLERANCE = 1e-9
"""Largest accepted deviation: per unitary element (exact), per state-vector norm (random)."""

SAMPLES = 4
"""Random input states of the randomized check."""

CONFIDENCE_ETA = 1e-3
"""Operator-norm difference the randomized check's stated confidence refers to."""

# Amplitudes held per block of columns / states (2**21 complex128 = 32 MiB per circuit).
_BLOCK_AMPLITUDES = 1 << 21

_SKIP = frozenset({"measure", "barrier", "reset"})


class EquivalenceResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one equivalence check.

    Attributes:
        equivalent: Whether the two circuits were found equivalent.
        method: ``structure`` (they differ before any simulation: shape, parameters or
            measurements), ``unitary``, ``random_states``, or ``none`` (too large).
        detail: What was compared and found, for a person.
        max_deviation: Largest deviation seen (None when nothing was simulated).
        confidence: For randomized checks: the stated bound on a false "equivalent".
    """

    equivalent: bool
    method: str
    detail: str
    max_deviation: float | None = None
    confidence: str = ""


def _measurements(circuit: Circuit) -> tuple[tuple[int, int], ...]:
    pairs = {
        (q, c)
        for op in circuit.ops
        if op.name == "measure"
        for q, c in zip(op.qubits, op.clbits, strict=True)
    }
    return tuple(sorted(pairs))


def _gates(circuit: Circuit, values: dict[str, float]) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """The circuit's unitary part as (matrix, qubits), with one-qubit runs fused.

    Consecutive one-qubit gates on a qubit are multiplied into one matrix, and that
    matrix is folded into the next multi-qubit gate on the qubit: fewer passes over the
    (large) state arrays, the same product.
    """
    pending: dict[int, np.ndarray] = {}
    out: list[tuple[np.ndarray, tuple[int, ...]]] = []
    for op in circuit.ops:
        if op.name in _SKIP:
            continue
        m = gate_matrix(op.name, numeric_params(op.params, values))
        if len(op.qubits) == 1:
            q = op.qubits[0]
            pending[q] = m @ pending[q] if q in pending else m
            continue
        before = np.ones((1, 1), dtype=np.complex128)
        for q in reversed(op.qubits):  # the first listed qubit is the low bit: kron last
            before = np.kron(before, pending.pop(q, _I2))
        out.append((m @ before, op.qubits))
    out.extend((m, (q,)) for q, m in sorted(pending.items()))
    return out


_I2 = np.eye(2, dtype=np.complex128)


def _apply_one(flat: np.ndarray, m: np.ndarray, qubits: tuple[int, ...], n: int, batch: int):
    """Apply ``m`` to ``qubits`` of every column of ``flat`` (a ``(2**n, batch)`` array)."""
    k = len(qubits)
    if k == 1:
        q = qubits[0]
        # Index bits above q, q's bit, then bits below q together with the batch axis.
        view = flat.reshape(1 << (n - 1 - q), 2, (1 << q) * batch)
        return np.matmul(m, view).reshape(flat.shape)
    if k == 2:
        a, b = qubits
        hi, lo = (a, b) if a > b else (b, a)
        view = flat.reshape(1 << (n - 1 - hi), 2, 1 << (hi - lo - 1), 2, (1 << lo) * batch)
        # m4 axes (out b, out a, in b, in a): qubit a is the low bit of m's index.
        m4 = m.reshape(2, 2, 2, 2)
        if a > b:
            m4 = m4.transpose(1, 0, 3, 2)  # now (out hi, out lo, in hi, in lo) either way
        out = np.empty_like(view)
        # Sixteen scaled slice additions: no transposed copies of the big array.
        for x in range(2):
            for y in range(2):
                target = out[:, x, :, y, :]
                np.multiply(view[:, 0, :, 0, :], m4[x, y, 0, 0], out=target)
                for u, v in ((0, 1), (1, 0), (1, 1)):
                    if m4[x, y, u, v] != 0:
                        target += m4[x, y, u, v] * view[:, u, :, v, :]
        return out.reshape(flat.shape)
    tensor = flat.reshape((2,) * n + (batch,))
    # Qubit q is tensor axis n-1-q; the gate's input axes run (q_{k-1}, …, q_0).
    axes = [n - 1 - q for q in reversed(qubits)]
    out = np.tensordot(m.reshape((2,) * (2 * k)), tensor, axes=(list(range(k, 2 * k)), axes))
    return np.ascontiguousarray(np.moveaxis(out, list(range(k)), axes)).reshape(flat.shape)


def _apply_all(
    states: np.ndarray,
    gates: Sequence[tuple[np.ndarray, tuple[int, ...]]],
    n: int,
    deadline: float | None = None,
) -> np.ndarray:
    """Apply the gates to every column of ``states`` (shape ``(2**n, batch)``).

    Raises:
        TimeoutError: ``deadline`` (a ``time.monotonic()`` value) passed.
    """
    batch = states.shape[1]
    flat = states
    for m, qubits in gates:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        flat = _apply_one(flat, m, qubits, n, batch)
    return flat


def _phase(a: np.ndarray, b: np.ndarray) -> complex:
    overlap = complex(np.vdot(b, a))
    return overlap / abs(overlap) if abs(overlap) > 1e-12 else 1.0


def _exact(
    ga: list, gb: list, n: int, tolerance: float, deadline: float | None
) -> tuple[bool, float]:
    d = 1 << n
    block = max(1, min(d, _BLOCK_AMPLITUDES // d))
    phase: complex | None = None
    worst = 0.0
    for start in range(0, d, block):
        width = min(block, d - start)
        cols = np.zeros((d, width), dtype=np.complex128)
        cols[np.arange(start, start + width), np.arange(width)] = 1.0
        a = _apply_all(cols, ga, n, deadline)
        b = _apply_all(cols, gb, n, deadline)
        if phase is None:
            phase = _phase(a[:, 0], b[:, 0])
        worst = max(worst, float(np.max(np.abs(a - phase * b))))
        if worst > tolerance:
            return False, worst
    return True, worst


def _random(
    ga: list,
    gb: list,
    n: int,
    tolerance: float,
    samples: int,
    rng: np.random.Generator,
    deadline: float | None,
) -> tuple[bool, float]:
    d = 1 << n
    block = max(1, min(samples, _BLOCK_AMPLITUDES // d))
    phase: complex | None = None
    worst = 0.0
    done = 0
    while done < samples:
        width = min(block, samples - done)
        psi = rng.standard_normal((d, width)) + 1j * rng.standard_normal((d, width))
        psi /= np.linalg.norm(psi, axis=0)
        a = _apply_all(psi, ga, n, deadline)
        b = _apply_all(psi, gb, n, deadline)
        if phase is None:
            phase = _phase(a[:, 0], b[:, 0])
        worst = max(worst, float(np.max(np.linalg.norm(a - phase * b, axis=0))))
        if worst > tolerance:
            return False, worst
        done += width
    return True, worst


def random_states_confidence(
    num_qubits: int, samples: int, tolerance: float = TOLERANCE, eta: float = CONFIDENCE_ETA
) -> float:
    """Upper bound on the chance that circuits ``eta`` apart pass the randomized check.

    ``(16 (d−1) τ² / η²)^k`` capped at 1 (see the module docstring).
    """
    d = 1 << num_qubits
    per_state = min(1.0, 16 * (d - 1) * tolerance**2 / eta**2)
    return per_state**samples


def check_equivalence(
    a: Circuit,
    b: Circuit,
    *,
    exact_max_qubits: int = EXACT_MAX_QUBITS,
    max_qubits: int = 20,
    samples: int = SAMPLES,
    tolerance: float = TOLERANCE,
    parameter_points: int = 3,
    seed: int = 0,
    time_limit: float | None = None,
) -> EquivalenceResult:
    """Decide whether ``b`` does what ``a`` does (see the module docstring).

    Args:
        a: The reference circuit (the deterministic rewrite's result).
        b: The candidate (the model's proposal).
        exact_max_qubits: Widest circuit compared by full unitaries.
        max_qubits: Widest circuit checked at all; wider ones are not equivalent by
            default (``method="none"``).
        samples: Random input states for wider circuits.
        tolerance: Largest deviation accepted.
        parameter_points: Random bindings tried when the circuits have named parameters.
        seed: Seed of the random states and bindings (the check is reproducible).
        time_limit: Seconds the simulation may take; past it the answer is "not shown
            equivalent" (``method="timeout"``).

    Returns:
        The verdict, the method and what was found.
    """
    n = a.num_qubits
    if (a.num_qubits, a.num_clbits) != (b.num_qubits, b.num_clbits):
        return EquivalenceResult(
            equivalent=False,
            method="structure",
            detail=f"registers differ: {a.num_qubits} qubits/{a.num_clbits} bits vs "
            f"{b.num_qubits} qubits/{b.num_clbits} bits",
        )
    if set(a.parameters) != set(b.parameters):
        return EquivalenceResult(
            equivalent=False,
            method="structure",
            detail=f"parameters differ: {sorted(a.parameters)} vs {sorted(b.parameters)}",
        )
    for which, circuit in (("original", a), ("proposal", b)):
        try:
            check_terminal_measurements(circuit)
        except CircuitError as exc:
            return EquivalenceResult(equivalent=False, method="structure", detail=f"{which}: {exc}")
    ma, mb = _measurements(a), _measurements(b)
    if ma != mb:
        return EquivalenceResult(
            equivalent=False,
            method="structure",
            detail=f"final measurements differ: {_pairs(ma)} vs {_pairs(mb)}",
        )
    if n > max_qubits:
        return EquivalenceResult(
            equivalent=False,
            method="none",
            detail=f"{n} qubits is more than the check takes on ({max_qubits})",
        )
    rng = np.random.default_rng(seed)
    names = sorted(a.parameters)
    points: list[dict[str, float]] = (
        [
            dict(zip(names, rng.uniform(-math.pi, math.pi, len(names)), strict=True))
            for _ in range(parameter_points)
        ]
        if names
        else [{}]
    )
    exact = n <= exact_max_qubits
    deadline = None if time_limit is None else time.monotonic() + time_limit
    worst = 0.0
    try:
        for values in points:
            ga, gb = _gates(a, values), _gates(b, values)
            if exact:
                ok, dev = _exact(ga, gb, n, tolerance, deadline)
            else:
                ok, dev = _random(ga, gb, n, tolerance, samples, rng, deadline)
            worst = max(worst, dev)
            if not ok:
                break
        else:
            ok = True
    except TimeoutError:
        return EquivalenceResult(
            equivalent=False,
            method="timeout",
            detail=f"the {'unitary' if exact else 'random-state'} check of {n} qubits did not "
            f"finish within {time_limit:g} s",
        )
    where = f" at {len(points)} random parameter points" if names else ""
    if exact:
        verb = "equal" if ok else "differ"
        return EquivalenceResult(
            equivalent=ok,
            method="unitary",
            detail=f"{n}-qubit unitaries {verb} up to global phase{where} "
            f"(max element deviation {worst:.1e}, tolerance {tolerance:.0e})",
            max_deviation=worst,
            confidence=(
                f"exact at each of {len(points)} random parameter points" if names else "exact"
            ),
        )
    bound = random_states_confidence(n, samples, tolerance)
    return EquivalenceResult(
        equivalent=ok,
        method="random_states",
        detail=f"{samples} Haar-random input states on {n} qubits{where}: "
        + ("all agree" if ok else "outputs differ")
        + f" up to global phase (max deviation {worst:.1e}, tolerance {tolerance:.0e})",
        max_deviation=worst,
        confidence=(
            f"circuits differing by >= {CONFIDENCE_ETA:g} in operator norm pass with "
            f"probability <= {bound:.1e}"
        ),
    )


def _pairs(pairs: tuple[tuple[int, int], ...]) -> str:
    text = ", ".join(f"q{q}->c{c}" for q, c in pairs[:8])
    return f"[{text}{', …' if len(pairs) > 8 else ''}]"


__all__ = [
    "EXACT_MAX_QUBITS",
    "SAMPLES",
    "TOLERANCE",
    "EquivalenceResult",
    "check_equivalence",
    "random_states_confidence",
]
