"""Deterministic rewrite passes over the IR, run by the rewrite stage on every job.

Each pass is a pure function ``Circuit -> (Circuit, PassReport)``; ``optimize`` runs
them to a fixpoint. A pass never changes the circuit's unitary: every removal and
merge here is exact, global phase included (so a ``statevector`` result of the
rewritten circuit equals that of the original, not just up to phase).

Adjacency is in the DAG sense: two ops are adjacent when no op in between touches any
of their qubits; ``measure``, ``reset`` and ``barrier`` touch their qubits and so block.
Each sweep is one pass over the ops with a per-qubit "last op" index: the candidate
partner of an op is the last kept op on its first qubit, which must also be the last
op on each of its other qubits. Cancelling restores those indices to what they were
before the partner, so chains such as ``h x x h`` collapse in the same sweep. That is
O(1) per op, O(n) per sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

from qbus.observability import tracing
from qbus.schemas.events import PassReport
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op

# Gates whose unitary is unchanged by any permutation of their qubits.
_SYMMETRIC = frozenset({"cz", "swap", "cp", "rzz", "rxx", "ryy"})

# Angle period after which a one-angle rotation is exactly the identity. RX(2π) = -I is
# only a global phase, and as a controlled gate (CRX(2π) = diag(1, -1) on the control)
# not even that; so every R*/CR* rotation needs 4π, while phase gates repeat at 2π.
_IDENTITY_PERIOD = {
    "rx": 4 * math.pi,
    "ry": 4 * math.pi,
    "rz": 4 * math.pi,
    "crx": 4 * math.pi,
    "cry": 4 * math.pi,
    "crz": 4 * math.pi,
    "rxx": 4 * math.pi,
    "ryy": 4 * math.pi,
    "rzz": 4 * math.pi,
    "p": 2 * math.pi,
    "u1": 2 * math.pi,
    "cp": 2 * math.pi,
}

ANGLE_TOLERANCE = 1e-12
"""An angle within this of a multiple of its identity period counts as identity."""

MAX_ROUNDS = 16
"""Bound on ``optimize``'s rounds; each round that changes something removes a gate."""

_CANCEL = object()  # a combine result: both ops go


def qubit_key(op: Op) -> tuple[int, ...]:
    """The op's qubits in a form equal for every ordering that gives the same unitary.

    Symmetric gates sort all qubits; ``ccx`` sorts its two controls and ``cswap`` its
    two targets.
    """
    q = op.qubits
    name = op.name
    if name in _SYMMETRIC:
        return tuple(sorted(q))
    if name == "ccx":
        return (*sorted(q[:2]), q[2])
    if name == "cswap":
        return (q[0], *sorted(q[1:]))
    return q


def _sweep(circuit: Circuit, combine: Callable[[Op, Op], object | None]) -> tuple[Circuit, int]:
    """One pass of ``combine(earlier, later)`` over DAG-adjacent gate pairs.

    ``combine`` returns None (keep both), ``_CANCEL`` (drop both) or an ``Op`` that
    replaces the earlier one (the later one is dropped). Returns the new circuit and
    the number of combinations.
    """
    n = circuit.num_qubits
    everything = tuple(range(n))
    out: list[Op | None] = []
    # For each kept op: the previous last-op index of each of its qubits, for undoing.
    undo: list[tuple[int, ...]] = []
    last = [-1] * n
    hits = 0
    for op in circuit.ops:
        qs = op.qubits or everything  # an empty barrier spans every qubit
        j = last[qs[0]]
        if j >= 0 and op.name in GATES:
            top = out[j]
            assert top is not None  # removed ops are never anyone's "last"
            if top.name in GATES and len(top.qubits) == len(qs) and all(last[q] == j for q in qs):
                action = combine(top, op)
                if action is _CANCEL:
                    out[j] = None
                    for q, before in zip(top.qubits, undo[j], strict=True):
                        last[q] = before
                    hits += 1
                    continue
                if action is not None:
                    out[j] = action  # type: ignore[assignment]
                    hits += 1
                    continue
        undo.append(tuple(last[q] for q in qs))
        k = len(out)
        out.append(op)
        for q in qs:
            last[q] = k
    if not hits:
        return circuit, 0
    ops = tuple(op for op in out if op is not None)
    return msgspec.structs.replace(circuit, ops=ops), hits


def _cancel(a: Op, b: Op) -> object | None:
    if a.params or b.params:
        return None
    spec = GATES[a.name]
    if a.name == b.name:
        if spec.self_inverse and qubit_key(a) == qubit_key(b):
            return _CANCEL
    elif spec.inverse == b.name and a.qubits == b.qubits:
        return _CANCEL
    return None


def cancel_inverses(circuit: Circuit) -> tuple[Circuit, PassReport]:
    """Remove adjacent pairs of gates that multiply to the identity.

    A pair is the same self-inverse gate on the same qubits (``h h``, ``cx cx`` with the
    same control and target, ``cz(a,b) cz(b,a)``, ``ccx`` with swapped controls …) or a
    gate and its named inverse (``s sdg``, ``t tdg``, ``sx sxdg``). Chains collapse in
    one call: ``h x x h`` becomes empty.

    Returns:
        The rewritten circuit and a report whose ``removed`` counts gates (two per pair).
    """
    new, pairs = _sweep(circuit, _cancel)
    return new, PassReport(name="cancel_inverses", removed=2 * pairs)


def _merge(a: Op, b: Op) -> object | None:
    if a.name != b.name or not GATES[a.name].rotation:
        return None
    if qubit_key(a) != qubit_key(b):
        return None
    (pa,), (pb,) = a.params, b.params
    if isinstance(pa, str) or isinstance(pb, str):
        return None  # symbolic angles are left for binding; their sum is not ours to form
    total = float(pa) + float(pb)
    if not math.isfinite(total):
        return None
    return Op(name=a.name, qubits=a.qubits, params=(total,))


def merge_rotations(circuit: Circuit) -> tuple[Circuit, PassReport]:
    """Fuse adjacent rotations of the same kind on the same qubits into one.

    Applies to ``rx ry rz p u1 cp crx cry crz rxx ryy rzz`` with numeric angles; the
    angles add. ``cp``, ``rxx``, ``ryy`` and ``rzz`` match in either qubit order; the
    controlled rotations need the same control. The fused gate keeps the first one's
    qubit order. Angles are summed as is (no reduction modulo a period), so the result
    is exact.

    Returns:
        The rewritten circuit and a report with ``merged`` fusions (each removes a gate).
    """
    new, merges = _sweep(circuit, _merge)
    return new, PassReport(name="merge_rotations", removed=merges, merged=merges)


def _near_zero(angle: float, period: float) -> bool:
    return abs(math.remainder(angle, period)) < ANGLE_TOLERANCE


def is_identity(op: Op) -> bool:
    """Whether ``op`` is exactly the identity (global phase included).

    True for ``id``; for rotations whose numeric angle is 0 modulo their identity
    period (4π for ``rx ry rz crx cry crz rxx ryy rzz``, 2π for ``p u1 cp``); for
    ``u(θ, φ, λ)`` with θ ≡ 0 (mod 4π) and φ + λ ≡ 0 (mod 2π); and for ``cu`` with, in
    addition, γ ≡ 0 (mod 2π). Symbolic angles are never identity.
    """
    name = op.name
    if name == "id":
        return True
    params = op.params
    if not params or any(isinstance(p, str) for p in params):
        return False
    period = _IDENTITY_PERIOD.get(name)
    if period is not None:
        return _near_zero(float(params[0]), period)
    if name in ("u", "cu"):
        theta, phi, lam = (float(p) for p in params[:3])
        if not (_near_zero(theta, 4 * math.pi) and _near_zero(phi + lam, 2 * math.pi)):
            return False
        return name == "u" or _near_zero(float(params[3]), 2 * math.pi)
    return False


def drop_identities(circuit: Circuit) -> tuple[Circuit, PassReport]:
    """Remove gates that are exactly the identity (see ``is_identity``).

    Returns:
        The rewritten circuit and a report with the number of gates ``removed``.
    """
    kept = tuple(op for op in circuit.ops if not is_identity(op))
    removed = len(circuit.ops) - len(kept)
    if removed:
        circuit = msgspec.structs.replace(circuit, ops=kept)
    return circuit, PassReport(name="drop_identities", removed=removed)


PASSES: tuple[Callable[[Circuit], tuple[Circuit, PassReport]], ...] = (
    cancel_inverses,
    merge_rotations,
    drop_identities,
)
"""The passes ``optimize`` runs, in order."""


def optimize(circuit: Circuit) -> tuple[Circuit, list[PassReport]]:
    """Run every pass in ``PASSES`` until a round changes nothing (at most ``MAX_ROUNDS``).

    Returns:
        The rewritten circuit and one report per pass, in ``PASSES`` order, with totals
        over all rounds.
    """
    removed = [0] * len(PASSES)
    merged = [0] * len(PASSES)
    names = [""] * len(PASSES)
    for _ in range(MAX_ROUNDS):
        changed = False
        for i, run in enumerate(PASSES):
            with tracing.span(f"qbus.rewrite pass {run.__name__}") as span:
                circuit, report = run(circuit)
                tracing.set_attributes(span, {"qbus.removed": report.removed})
            names[i] = report.name
            removed[i] += report.removed
            merged[i] += report.merged
            changed = changed or report.removed > 0
        if not changed:
            break
    reports = [
        PassReport(name=name, removed=r, merged=m)
        for name, r, m in zip(names, removed, merged, strict=True)
    ]
    return circuit, reports
