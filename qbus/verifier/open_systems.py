"""Verification of noisy results and of ``dynamics`` results against exact references.

* Noisy counts are held to the chi-square test against the exact **noisy** distribution
  (``density.noisy_probabilities``: the density-matrix reference with the job's noise
  model, readout error included), never the noiseless one.
* Noisy expectation values are held to the exact noisy ``Tr(ρ O)`` with the same scaled
  tolerance as noiseless ones.
* ``dynamics`` values are held to the Liouvillian reference (``lindblad``): each value
  within ``tol`` times ``1 + Σ|coeff|`` of its observable (test ``dynamics``).

Above the references' sizes the verdict is ``skipped``, with the reason.
"""

from __future__ import annotations

import msgspec

from qbus.engines import density, lindblad
from qbus.engines.sweep import without_measurements
from qbus.errors import LimitError
from qbus.frontends.parameters import bind
from qbus.schemas.dynamics import DynamicsResult, DynamicsSpec
from qbus.schemas.events import ExecutionCompleted, Verification
from qbus.verifier.expectations import check_expectations
from qbus.verifier.statistics import check_counts, too_wide

DYNAMICS_TOLERANCE = 1e-6
"""Largest error of a dynamics value, relative to ``1 + Σ|coeff|`` of its observable."""


def verify_noisy(
    event: ExecutionCompleted,
    alpha: float,
) -> Verification:
    """Verify a result that ran under a non-trivial noise model.

    Args:
        event: The engine's result.
        alpha: Significance level of the counts test.

    Raises:
        CircuitError: No exact reference for this circuit (mid-circuit measurement …).
    """
    opts = event.options
    circuit = event.circuit
    wide = too_wide(circuit.num_qubits, density.max_density_qubits, "noisy density-matrix")
    if wide is not None:
        return wide
    if opts.method not in ("sample", "expectation"):
        return Verification(
            verdict="skipped", detail=f"no exact noisy reference for method '{opts.method}'"
        )
    bound = bind(circuit, opts.parameters)
    if opts.method == "expectation":
        exact = density.noisy_expectations(
            without_measurements(bound), opts.observables, None, opts.noise
        )
        got = check_expectations(event.expectations or [], exact, opts.observables)
        return msgspec.structs.replace(got, detail=f"{got.detail} (noisy density-matrix reference)")
    probs = density.noisy_probabilities(bound, None, opts.noise)
    got = check_counts(event.counts or {}, probs, opts.shots, alpha=alpha)
    return msgspec.structs.replace(got, detail=f"{got.detail}; against the noisy distribution")


def check_dynamics(
    got: DynamicsResult | None,
    exact: DynamicsResult,
    spec: DynamicsSpec,
    tol: float = DYNAMICS_TOLERANCE,
) -> Verification:
    """Every value within ``tol`` times its observable's ``1 + Σ|coeff|`` of the exact one."""
    if got is None:
        return Verification(verdict="fail", test="dynamics", detail="the engine returned no values")
    if got.times != exact.times:
        return Verification(
            verdict="fail", test="dynamics", detail="the result's times are not the job's times"
        )
    if len(got.values) != len(exact.values) or any(
        len(g) != len(e) for g, e in zip(got.values, exact.values, strict=False)
    ):
        return Verification(
            verdict="fail",
            test="dynamics",
            detail=f"values of shape {[len(v) for v in got.values]}, expected "
            f"{[len(v) for v in exact.values]}",
        )
    worst, where = 0.0, (0, 0)
    for k, (g_row, e_row, obs) in enumerate(
        zip(got.values, exact.values, spec.observables, strict=True)
    ):
        scale = 1.0 + sum(abs(t.coeff) for t in obs.terms)
        for t, (g, e) in enumerate(zip(g_row, e_row, strict=True)):
            err = abs(g - e) / scale
            if not err <= worst:  # also catches NaN
                worst, where = err, (k, t)
    verdict = "pass" if worst <= tol else "fail"
    k, t = where
    return Verification(
        verdict=verdict,
        test="dynamics",
        statistic=worst,
        threshold=tol,
        detail=f"largest scaled error {worst:.3g} (observable {k} at t={exact.times[t]:g}) "
        f"{'<=' if verdict == 'pass' else '>'} {tol:g} against the exact Liouvillian reference",
    )


def verify_dynamics(event: ExecutionCompleted) -> Verification:
    """Verify a ``dynamics`` result against ``lindblad.reference_dynamics``.

    Raises:
        CircuitError: No exact initial state for this circuit.
    """
    spec = event.options.dynamics
    if spec is None:
        return Verification(verdict="fail", test="dynamics", detail="the job has no dynamics spec")
    try:
        exact = lindblad.reference_dynamics(event.circuit, spec, event.options.parameters)
    except LimitError as exc:
        return Verification(verdict="skipped", test="dynamics", detail=str(exc))
    return check_dynamics(event.dynamics, exact, spec)
