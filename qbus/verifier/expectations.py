"""Expectation values against the exact ones: the check every expectation job gets.

Used by the verify stage for one-piece jobs and by the sweep and open-system checks
(qbus/verifier/sweep.py, open_systems.py) for each point.
"""

from __future__ import annotations

from qbus.schemas.events import Observable, Verification


def check_expectations(
    got: list[float], exact: list[float], observables: list[Observable], tol: float = 1e-6
) -> Verification:
    """Each expectation value within ``tol`` times the observable's norm bound of exact."""
    if len(got) != len(exact):
        return Verification(
            verdict="fail",
            test="expectation",
            detail=f"{len(got)} values for {len(exact)} observables",
        )
    worst, worst_i = 0.0, 0
    for i, (g, e, obs) in enumerate(zip(got, exact, observables, strict=True)):
        scale = 1.0 + sum(abs(t.coeff) for t in obs.terms)
        err = abs(g - e) / scale
        if err > worst:
            worst, worst_i = err, i
    verdict = "pass" if worst <= tol else "fail"
    return Verification(
        verdict=verdict,
        test="expectation",
        statistic=worst,
        threshold=tol,
        detail=f"largest scaled error {worst:.3g} (observable {worst_i}) "
        f"{'<=' if verdict == 'pass' else '>'} {tol:g} against the exact reference",
    )
