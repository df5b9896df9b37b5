"""Verification of a ``sweep`` result: every point (or a seeded sample) against the reference.

Policy, stated in each verdict's detail:

- **Which points.** Up to ``max_points`` points are checked, all of them when the sweep
  is that small; otherwise a uniform random sample without replacement, drawn from a
  generator seeded by the job id, so a replay checks the same points.
- **Counts** (a sampled sweep): the chi-square test of ``check_counts`` per checked point,
  at the Bonferroni-corrected level ``alpha / m`` for ``m`` checked points. The job fails
  when any point's p-value is below it; that is exactly when the first step of Holm's
  procedure rejects, so the chance that a correct engine's sweep is flagged stays at most
  ``alpha``, however many points it has.
- **Expectation values**: each checked point's values within the expectation tolerance
  (``check_expectations``, scaled by each observable's norm bound) of the exact ones.
"""

from __future__ import annotations

import hashlib

import numpy as np

from qbus.engines import reference
from qbus.engines.observables import expectation_values
from qbus.engines.sweep import point_parameters, without_measurements
from qbus.frontends.parameters import bind
from qbus.schemas.events import ExecutionCompleted, Verification
from qbus.verifier.expectations import check_expectations
from qbus.verifier.statistics import check_counts

MAX_CHECKED_POINTS = 64
"""Points of one sweep held to the reference (each costs one exact simulation)."""


def checked_points(num_points: int, job_id: str, limit: int = MAX_CHECKED_POINTS) -> list[int]:
    """The indices of the points to check: all, or ``limit`` of them seeded by ``job_id``."""
    if num_points <= limit:
        return list(range(num_points))
    seed = int.from_bytes(hashlib.sha256(f"sweep-check:{job_id}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_points, size=limit, replace=False))


def verify_sweep(
    event: ExecutionCompleted, alpha: float, limit: int = MAX_CHECKED_POINTS
) -> Verification:
    """Hold a sweep's per-point results to the exact reference.

    Args:
        event: The engine's result (its options carry the points and observables).
        alpha: Significance level of the whole sweep's counts check.
        limit: Most points checked.

    Raises:
        CircuitError: When a point cannot be simulated exactly (the caller skips).
    """
    opts = event.options
    results = event.sweep_results or []
    if len(results) != len(opts.sweep):
        return Verification(
            verdict="fail",
            test="sweep",
            detail=f"{len(results)} results for {len(opts.sweep)} sweep points",
        )
    indices = checked_points(len(results), event.job_id, limit)
    sets = point_parameters(opts.parameters, opts.sweep)
    which = (
        f"all {len(results)} points"
        if len(indices) == len(results)
        else f"{len(indices)} of {len(results)} points (a uniform sample seeded by the job id)"
    )
    if opts.observables:
        return _expectations(event, indices, sets, which)
    level = alpha / len(indices)
    worst: Verification | None = None
    worst_i = -1
    for i in indices:
        point = results[i]
        if point.counts is None:
            return Verification(
                verdict="fail", test="sweep-chi2", detail=f"point {i} has no counts"
            )
        exact = reference.probabilities(bind(event.circuit, sets[i]))
        v = check_counts(point.counts, exact, opts.shots, alpha=level)
        if v.verdict == "fail":
            return Verification(
                verdict="fail",
                test="sweep-chi2",
                statistic=v.statistic,
                p_value=v.p_value,
                threshold=v.threshold,
                tvd=v.tvd,
                detail=f"point {i}: {v.detail} (Bonferroni level {alpha:g}/{len(indices)} "
                f"over {which})",
            )
        if worst is None or (v.p_value or 0.0) < (worst.p_value or 0.0):
            worst, worst_i = v, i
    assert worst is not None  # indices is never empty: a sweep has points
    return Verification(
        verdict="pass",
        test="sweep-chi2",
        statistic=worst.statistic,
        p_value=worst.p_value,
        threshold=level,
        tvd=worst.tvd,
        detail=f"chi-square per point over {which}, each at the Bonferroni level "
        f"{alpha:g}/{len(indices)} = {level:.3g} (Holm's first step); smallest p-value "
        f"{worst.p_value:.3g} at point {worst_i}",
    )


def _expectations(
    event: ExecutionCompleted,
    indices: list[int],
    sets: list[dict[str, float]],
    which: str,
) -> Verification:
    opts = event.options
    results = event.sweep_results or []
    circuit = without_measurements(event.circuit)
    worst = -1.0
    worst_i = -1
    tol = None
    for i in indices:
        got = results[i].expectations
        if got is None:
            return Verification(
                verdict="fail", test="sweep-expectation", detail=f"point {i} has no values"
            )
        exact = expectation_values(reference.statevector(bind(circuit, sets[i])), opts.observables)
        v = check_expectations(got, exact, opts.observables)
        if v.verdict == "fail":
            return Verification(
                verdict="fail",
                test="sweep-expectation",
                statistic=v.statistic,
                threshold=v.threshold,
                detail=f"point {i}: {v.detail} (over {which})",
            )
        tol = v.threshold
        if (v.statistic or 0.0) > worst:
            worst, worst_i = v.statistic or 0.0, i
    return Verification(
        verdict="pass",
        test="sweep-expectation",
        statistic=worst,
        threshold=tol,
        detail=f"expectation values within {tol:g} (scaled by each observable's norm bound) "
        f"of the exact reference over {which}; largest scaled error {worst:.3g} at point "
        f"{worst_i}",
    )


__all__ = ["MAX_CHECKED_POINTS", "checked_points", "verify_sweep"]
