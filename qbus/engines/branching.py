"""Exact output distributions of dynamic circuits, by enumerating measurement branches.

A dynamic circuit measures or resets qubits mid-circuit and may branch on the results
(``if``/``while`` ops, qbus/schemas/ir.py). Its output is not one state but a mixture:
this module follows every outcome of every mid-circuit measurement as a separate
**branch** (probability, normalised state, classical bits), applies gates to each,
evaluates conditions on each branch's own bits, and sums the branches' final
distributions. The result is exact (up to float rounding) except that branches whose
probability falls below ``PROB_CUTOFF`` are dropped (a repeat-until-success loop would
otherwise branch forever); the dropped mass is at most that cutoff per dropped branch.

Cost is the number of live branches times ``2**n`` amplitudes, bounded by
``MAX_BRANCH_AMPLITUDES``; measurements at the end of the circuit (after its last gate,
reset or control flow) do not branch: their distribution is read from each branch's
state, as for a static circuit. A ``while`` loop runs at most ``MAX_LOOP_ITERATIONS``
times per entry on any branch: past that the run ends with ``loop_budget_exceeded``.

The gate matrices come from the caller (``qbus.engines.reference`` passes its
``gate_matrix``), so this module does not import the reference it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qbus.engines.checks import check_bound
from qbus.engines.kernels import apply_matrix
from qbus.engines.params import numeric_params
from qbus.errors import CircuitError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op

MAX_BRANCH_AMPLITUDES = 2**22
"""Most amplitudes held over all live branches (64 MiB of ``complex128``)."""

WORK_FLOOR = 256
"""Amplitudes one pass over a state counts for at least, in ``max_work`` (the numpy call
overhead of a pass over a few qubits is that of a few hundred amplitudes)."""

MAX_LOOP_ITERATIONS = 1000
"""Most iterations of one ``while`` loop per entry, on any branch."""

PROB_CUTOFF = 1e-14
"""Branches and outcomes below this probability are numerical noise and are dropped."""

MatrixOf = Callable[[str, Sequence[float]], np.ndarray]


@dataclass(slots=True)
class _Branch:
    prob: float
    psi: np.ndarray
    bits: int


def _tail_start(ops: tuple[Op, ...]) -> int:
    """Index where the circuit's final run of measurements and barriers begins."""
    k = len(ops)
    while k and ops[k - 1].name in ("measure", "barrier"):
        k -= 1
    return k


class _Simulator:
    def __init__(
        self,
        circuit: Circuit,
        values: Mapping[str, float],
        matrix: MatrixOf,
        max_branches: int | None = None,
        max_work: int | None = None,
    ):
        self.n = circuit.num_qubits
        self.values = values
        self.matrix = matrix
        self.max_branches = max(1, MAX_BRANCH_AMPLITUDES >> self.n)
        if max_branches is not None:
            self.max_branches = min(self.max_branches, max_branches)
        self.max_work = max_work
        self.work = 0

    def spend(self, branches: int, here: str) -> None:
        """Count one pass over ``branches`` states; past ``max_work``, give up."""
        if self.max_work is None:
            return
        # A small state costs its call overhead, not its few amplitudes.
        self.work += branches * max(1 << self.n, WORK_FLOOR)
        if self.work > self.max_work:
            raise CircuitError(
                f"exact simulation of this dynamic circuit would take more than "
                f"{self.max_work:,} amplitude updates (reached at {here}, with "
                f"{branches} live branches of {self.n} qubits)",
                code="too_many_branches",
                where=f"$.{here}",
            )

    def run(self, ops: tuple[Op, ...], branches: list[_Branch], where: str) -> list[_Branch]:
        for i, op in enumerate(ops):
            if not branches:
                return branches
            name = op.name
            here = f"{where}[{i}]"
            if name in GATES:
                self.spend(len(branches), here)
                m = self.matrix(name, numeric_params(op.params, self.values))
                for b in branches:
                    b.psi = apply_matrix(b.psi, m, op.qubits, self.n)
            elif name == "measure":
                for q, c in zip(op.qubits, op.clbits, strict=True):
                    branches = self.split(branches, q, c, here)
            elif name == "reset":
                for q in op.qubits:
                    branches = self.split(branches, q, None, here)
            elif name == "if":
                assert op.condition is not None  # the IR guarantees it
                cond = op.condition.evaluate
                yes = [b for b in branches if cond(b.bits)]
                no = [b for b in branches if not cond(b.bits)]
                branches = self.run(op.body, yes, f"{here}.body")
                branches += self.run(op.orelse, no, f"{here}.orelse")
            elif name == "while":
                branches = self.loop(op, branches, here)
            # barrier: nothing to do
        return branches

    def loop(self, op: Op, branches: list[_Branch], here: str) -> list[_Branch]:
        assert op.condition is not None  # the IR guarantees it
        cond = op.condition.evaluate
        done: list[_Branch] = []
        active = branches
        for _ in range(MAX_LOOP_ITERATIONS):
            done += [b for b in active if not cond(b.bits)]
            active = [b for b in active if cond(b.bits)]
            if not active:
                return done
            active = self.run(op.body, active, f"{here}.body")
        if any(cond(b.bits) for b in active):
            raise CircuitError(
                f"the 'while' loop at {here} still runs after {MAX_LOOP_ITERATIONS} "
                "iterations (with probability "
                f"{sum(b.prob for b in active if cond(b.bits)):.3g}); the run is stopped",
                code="loop_budget_exceeded",
                where=f"$.{here}",
            )
        return done + active

    def split(self, branches: list[_Branch], q: int, clbit: int | None, here: str) -> list[_Branch]:
        """Each branch into its outcomes of measuring ``q`` (``clbit``: None for a reset)."""
        n = self.n
        self.spend(2 * len(branches), here)
        out: list[_Branch] = []
        for b in branches:
            view = b.psi.reshape(1 << (n - 1 - q), 2, 1 << q)
            halves = (view[:, 0, :], view[:, 1, :])
            weights = [float(np.vdot(h, h).real) for h in halves]
            for outcome in (0, 1):
                p = weights[outcome]
                if b.prob * p < PROB_CUTOFF:
                    continue
                new = np.zeros_like(view)
                # A reset sends the outcome-1 part to |0>: the qubit ends in 0 either way.
                target = 0 if clbit is None else outcome
                new[:, target, :] = halves[outcome] / np.sqrt(p)
                bits = b.bits
                if clbit is not None:
                    bits = (bits & ~(1 << clbit)) | (outcome << clbit)
                out.append(_Branch(b.prob * p, new.reshape(-1), bits))
        if len(out) > self.max_branches:
            raise CircuitError(
                f"the dynamic circuit has more than {len(out) - 1} measurement branches at "
                f"{here}; exact simulation holds at most {self.max_branches} at "
                f"{n} qubits ({MAX_BRANCH_AMPLITUDES:,} amplitudes)",
                code="too_many_branches",
                where=f"$.{here}",
            )
        return out


def _final_distribution(
    branches: list[_Branch], tail: tuple[Op, ...], n: int, num_clbits: int
) -> dict[str, float]:
    # The final measurements: clbit -> qubit, the last write winning, as in the static case.
    source: dict[int, int] = {}
    for op in tail:
        if op.name == "measure":
            for q, c in zip(op.qubits, op.clbits, strict=True):
                source[c] = q
    kept = sorted(set(source.values()))
    drop = tuple(n - 1 - q for q in range(n) if q not in set(kept))
    pos = {q: j for j, q in enumerate(kept)}
    written = 0
    for c in source:
        written |= 1 << c
    totals: dict[int, float] = {}
    for b in branches:
        probs = (b.psi.real**2 + b.psi.imag**2).reshape((2,) * n)
        marginal = probs.sum(axis=drop).reshape(-1) if drop else probs.reshape(-1)
        base = b.bits & ~written
        for idx in np.flatnonzero(marginal > PROB_CUTOFF).tolist():
            key = base
            for c, q in source.items():
                key |= ((idx >> pos[q]) & 1) << c
            totals[key] = totals.get(key, 0.0) + b.prob * float(marginal[idx])
    fmt = f"0{num_clbits}b"
    return {format(k, fmt): p for k, p in sorted(totals.items()) if p > PROB_CUTOFF}


def branch_distribution(
    circuit: Circuit,
    values: Mapping[str, float] | None,
    matrix: MatrixOf,
    *,
    max_branches: int | None = None,
    max_work: int | None = None,
) -> dict[str, float]:
    """The exact distribution over clbit bitstrings of a (possibly dynamic) circuit.

    Args:
        circuit: The circuit: mid-circuit measurement, reset, ``if`` and ``while`` allowed.
        values: Values of its named parameters.
        matrix: ``(gate name, numeric params) -> matrix`` in Qiskit's convention.
        max_branches: A tighter bound on live branches than the memory bound (the
            verify stage's, whose time per job must stay small).
        max_work: Most amplitude updates (live branches × ``2**n`` per gate or
            measurement, at least ``WORK_FLOOR`` per state) before giving up; None: no
            bound but memory. Many branches over many ops cost time long before memory.

    Returns:
        ``{bitstring: probability}``, clbit 0 rightmost; outcomes below ``PROB_CUTOFF``
        left out.

    Raises:
        CircuitError: ``too_many_branches`` past ``MAX_BRANCH_AMPLITUDES`` or
            ``max_work``;
            ``loop_budget_exceeded`` for a ``while`` past ``MAX_LOOP_ITERATIONS``;
            ``unbound_parameter``.
    """
    values = values or {}
    check_bound(circuit, values)
    n = circuit.num_qubits
    if (1 << n) > MAX_BRANCH_AMPLITUDES:
        raise CircuitError(
            f"exact simulation of a dynamic circuit holds at most "
            f"{MAX_BRANCH_AMPLITUDES.bit_length() - 1} qubits, the circuit has {n}",
            code="too_many_branches",
        )
    psi = np.zeros(1 << n, dtype=np.complex128)
    psi[0] = 1.0
    k = _tail_start(circuit.ops)
    sim = _Simulator(circuit, values, matrix, max_branches, max_work)
    branches = sim.run(circuit.ops[:k], [_Branch(1.0, psi, 0)], "ops")
    return _final_distribution(branches, circuit.ops[k:], n, circuit.num_clbits)


__all__ = [
    "MAX_BRANCH_AMPLITUDES",
    "MAX_LOOP_ITERATIONS",
    "branch_distribution",
]
