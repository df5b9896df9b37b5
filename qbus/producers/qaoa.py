"""QAOA for MaxCut: optimise ⟨cut⟩ with ``sweep`` jobs, then sample the best circuit.

The cost is ``C(z) = Σ_(a,b) w (1 - z_a z_b) / 2``; the optimiser minimises
``⟨Σ w Z_a Z_b / 2⟩ = W/2 - ⟨C⟩`` (W the total weight). The optimised circuit is then
sampled in a ``sample`` job; the summary gives the best sampled cut, the expected cut,
and both as a fraction of the maximum cut found by brute force over all 2^n cuts.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from qbus.frontends.job_template import Optimizer
from qbus.producers.ansatz import qaoa_circuit, with_measurements
from qbus.producers.template_result import Progress, TemplateResult
from qbus.producers.vqe import initial_point, minimise
from qbus.schemas.pauli import Observable, PauliTerm

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qbus.producers.templates import Session


def cut_value(
    sides: Sequence[int], edges: Sequence[tuple[int, int]], weights: Sequence[float]
) -> float:
    """Total weight of the edges whose ends lie on different sides."""
    return float(sum(w for (a, b), w in zip(edges, weights, strict=True) if sides[a] != sides[b]))


def brute_force_max_cut(
    n: int, edges: Sequence[tuple[int, int]], weights: Sequence[float]
) -> tuple[float, list[int]]:
    """The maximum cut and one partition reaching it, by trying all 2^(n-1) cuts."""
    best, best_sides = -1.0, [0] * n
    for rest in itertools.product((0, 1), repeat=n - 1):
        sides = [0, *rest]  # node 0 fixed: a cut and its mirror image are the same
        value = cut_value(sides, edges, weights)
        if value > best:
            best, best_sides = value, sides
    return best, best_sides


def sides_of(bits: str, n: int) -> list[int]:
    """Node sides from a counts key (clbit 0, node 0, is the rightmost character)."""
    return [int(bits[-1 - q]) for q in range(n)]


def run_qaoa(session: Session, progress: Progress) -> TemplateResult:
    """Optimise the QAOA angles, sample, and compare with the brute-force maximum."""

    t = session.template
    q = t.qaoa
    assert q is not None
    edges = [(int(a), int(b)) for a, b in q.edges]
    weights = list(q.weights) or [1.0] * len(edges)
    n = max(max(e) for e in edges) + 1
    circuit = qaoa_circuit(n, edges, weights, q.layers)
    cost = Observable(
        name="maxcut",
        terms=[
            PauliTerm(coeff=w / 2, pauli=f"Z{a} Z{b}")
            for (a, b), w in zip(edges, weights, strict=True)
        ],
    )
    total = float(sum(weights))
    optimizer = t.optimizer or Optimizer()
    x0 = initial_point(optimizer, len(circuit.parameters), 0.0, np.pi / 4)
    progress(
        f"QAOA MaxCut: {n} nodes, {len(edges)} edges, p={q.layers}, {optimizer.method} on "
        f"{session.engine}"
    )
    result, trajectory, evaluations = minimise(
        session, circuit, cost, optimizer, x0, progress, label="W/2-<cut>"
    )
    expected_cut = total / 2 - float(result.fun)
    angles = dict(zip(circuit.parameters, map(float, result.x), strict=True))
    final = session.run(with_measurements(circuit), method="sample", parameters=angles)
    counts = final.counts or {}
    shots = sum(counts.values())
    cuts = {bits: cut_value(sides_of(bits, n), edges, weights) for bits in counts}
    best_bits = max(cuts, key=lambda b: (cuts[b], counts[b]))
    likely_bits = max(counts, key=lambda b: (counts[b], b))
    max_cut, max_sides = brute_force_max_cut(n, edges, weights)
    p_optimal = sum(c for b, c in counts.items() if cuts[b] == max_cut) / max(shots, 1)
    summary: dict[str, Any] = {
        "nodes": n,
        "edges": [list(e) for e in edges],
        "layers": q.layers,
        "angles": angles,
        "trajectory": [total / 2 - v for v in trajectory],
        "iterations": len(trajectory),
        "evaluations": evaluations,
        "expected_cut": expected_cut,
        "best_cut": cuts[best_bits],
        "best_bitstring": best_bits,
        "most_likely_bitstring": likely_bits,
        "most_likely_cut": cuts[likely_bits],
        "max_cut": max_cut,
        "max_cut_partition": max_sides,
        "approximation_ratio": cuts[best_bits] / max_cut,
        "expected_approximation_ratio": expected_cut / max_cut,
        "probability_optimal": p_optimal,
        "sample_job": final.job_id,
        "shots": shots,
    }
    lines = [
        f"QAOA p={q.layers}: expected cut {expected_cut:.4f} after {len(trajectory)} iterations, "
        f"{evaluations} evaluations",
        f"sampled {shots} shots (job {final.job_id}): best cut {cuts[best_bits]:g} "
        f"({best_bits}, qubit 0 rightmost), most likely {likely_bits} (cut {cuts[likely_bits]:g})",
        f"brute-force maximum cut: {max_cut:g}; approximation ratio "
        f"{cuts[best_bits] / max_cut:.3f} "
        f"(best sampled), {expected_cut / max_cut:.3f} (expected); "
        f"P(optimal cut) = {p_optimal:.3f}",
    ]
    return TemplateResult(t.name or "", "qaoa", session.engine, summary, lines)
