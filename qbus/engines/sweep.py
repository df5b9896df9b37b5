"""The ``sweep`` method: one parametrised circuit, many parameter sets, one job.

Point ``i`` of a sweep runs the circuit with the job's ``parameters`` updated by
``sweep[i]``. Its result is:

- **counts**, ``shots`` of them, drawn with the seed ``point_seed(seed, i)``, when the job
  has no observables: the same counts as a ``sample`` job of that point with that seed
  on the same engine;
- **expectations**, exact (from the state vector, measurements dropped), when the job
  has observables.

Every engine gets the sweep through ``Engine.run_sweep``; the default here runs the
points one by one through the engine's own ``run``. Engines that batch (jax: ``vmap``;
qiskit-aer: parameter binds in one call) override it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from qbus.engines.observables import pauli_action
from qbus.errors import CircuitError
from qbus.frontends.expr import evaluate
from qbus.schemas.ir import Circuit
from qbus.schemas.pauli import Observable

if TYPE_CHECKING:
    from qbus.engines.base import RunRequest

SEED_STRIDE = 2113
"""Point ``i`` of a sweep is seeded with ``seed + SEED_STRIDE * i`` (mod 2**63).

2113 is qiskit-aer's own stride between the experiments of one call: with it Aer runs a
whole counts sweep in one call and still draws exactly what a job per point would."""

_SEED_MOD = 2**63


def point_seed(seed: int, index: int) -> int:
    """The seed of point ``index`` of a sweep whose job seed is ``seed``."""
    return (seed + SEED_STRIDE * index) % _SEED_MOD


def point_parameters(
    parameters: Mapping[str, float], sweep: Sequence[Mapping[str, float]]
) -> list[dict[str, float]]:
    """Each point's full parameter set: ``parameters`` updated by the point."""
    return [{**parameters, **point} for point in sweep]


def check_sweep(
    circuit: Circuit,
    parameters: Mapping[str, float],
    sweep: Sequence[Mapping[str, float]],
    max_points: int | None = None,
) -> None:
    """Check a sweep against its circuit before anything runs.

    Args:
        circuit: The parametrised circuit.
        parameters: The job's fixed parameter values.
        sweep: One parameter set per point.
        max_points: Most points allowed (None: no limit).

    Raises:
        CircuitError: ``invalid_sweep`` for no points, too many points, a point naming a
            parameter the circuit does not have, or a point leaving one unbound; ``where``
            names the offending point.
    """
    if not sweep:
        raise CircuitError(
            "a 'sweep' job needs at least one parameter set in 'sweep', e.g. "
            '[{"theta": 0.1}, {"theta": 0.2}]',
            code="invalid_sweep",
            where="$.sweep",
        )
    if max_points is not None and len(sweep) > max_points:
        raise CircuitError(
            f"the sweep has {len(sweep):,} points; the limit is {max_points:,}",
            code="invalid_sweep",
            where="$.sweep",
        )
    known = set(circuit.parameters)
    fixed = set(parameters)
    for i, point in enumerate(sweep):
        unknown = sorted(set(point) - known)
        if unknown:
            have = ", ".join(circuit.parameters) or "none"
            raise CircuitError(
                f"sweep point {i} sets {unknown}, which the circuit does not have "
                f"(its parameters: {have})",
                code="invalid_sweep",
                where=f"$.sweep[{i}]",
            )
        missing = sorted(known - fixed - set(point))
        if missing:
            raise CircuitError(
                f"sweep point {i} leaves parameter(s) {missing} unbound; give them in the "
                "point or in 'parameters'",
                code="invalid_sweep",
                where=f"$.sweep[{i}]",
            )


def slot_table(circuit: Circuit, sets: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Every gate parameter's value at every point: a ``(points, slots)`` float64 array.

    Slots are the gate parameters in op order (numbers, names or expressions). Bare
    names and numbers are read straight from the table; only expressions go through
    the evaluator, point by point.

    Args:
        circuit: The circuit.
        sets: Each point's full parameter set (``point_parameters``).
    """
    slots = [p for op in circuit.ops for p in op.params]
    names = list(circuit.parameters)
    column = {name: i for i, name in enumerate(names)}
    out = np.empty((len(sets), len(slots)), dtype=np.float64)
    if not slots:
        return out
    table = np.array([[v[name] for name in names] for v in sets], dtype=np.float64)
    exprs = []
    for j, p in enumerate(slots):
        if isinstance(p, str) and p in column:
            out[:, j] = table[:, column[p]]
        elif isinstance(p, str):
            exprs.append(j)
        else:
            out[:, j] = float(p)
    if exprs:
        for i, values in enumerate(sets):
            for j in exprs:
                out[i, j] = evaluate(slots[j], dict(values))  # type: ignore[arg-type]
    return out


def expectation_matrix(states: np.ndarray, observables: Sequence[Observable]) -> np.ndarray:
    """Expectation values of every observable at every point: ``(points, observables)``.

    The batched form of ``observables.expectation_values``: terms are grouped by which
    qubits they flip (X or Y), and each group costs one pass over the states, however
    many terms share it (every Z-only term reads the probabilities once).

    Args:
        states: ``(points, 2**n)`` state vectors, qubit 0 the LSB.
        observables: Pauli-sum observables.
    """
    points, dim = states.shape
    index = np.arange(dim)
    groups: dict[int, list[tuple[int, float, np.ndarray]]] = {}
    for k, obs in enumerate(observables):
        for term in obs.terms:
            flip, phase = pauli_action(term.factors(), index)
            groups.setdefault(flip, []).append((k, term.coeff, phase))
    out = np.zeros((points, len(observables)), dtype=np.float64)
    for flip, terms in groups.items():
        # <psi| P |psi> = sum_i conj(psi[i]) phase[i] psi[i ^ flip]
        overlap = states.conj() * (states[:, index ^ flip] if flip else states)
        phases = np.stack([phase for _, _, phase in terms], axis=1)  # (dim, terms)
        values = (overlap @ phases).real
        for j, (k, coeff, _) in enumerate(terms):
            out[:, k] += coeff * values[:, j]
    return out


def without_measurements(circuit: Circuit) -> Circuit:
    """``circuit`` without its measurements and barriers (for expectation values)."""
    ops = tuple(op for op in circuit.ops if op.name not in ("measure", "barrier"))
    return msgspec.structs.replace(circuit, ops=ops)


def point_requests(request: RunRequest) -> list[RunRequest]:
    """One ``sample`` (or, with observables, ``statevector``) request per point."""
    expect = bool(request.observables)
    circuit = without_measurements(request.circuit) if expect else request.circuit
    return [
        msgspec.structs.replace(
            request,
            circuit=circuit,
            method="statevector" if expect else "sample",
            seed=point_seed(request.seed, i),
            parameters=values,
            sweep=[],
        )
        for i, values in enumerate(point_parameters(request.parameters, request.sweep))
    ]


__all__ = [
    "SEED_STRIDE",
    "check_sweep",
    "expectation_matrix",
    "point_parameters",
    "point_requests",
    "point_seed",
    "slot_table",
    "without_measurements",
]
