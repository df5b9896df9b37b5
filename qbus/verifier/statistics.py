"""Statistical checks of engine results against the exact reference.

Sampled counts are held to a chi-square goodness-of-fit test: the tolerance follows
from the shot count (more shots, tighter test) and from one significance level
``alpha``, the probability that a correct engine is failed by chance. State vectors are
held to a fidelity bound.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
from scipy import special

from qbus.schemas.events import Verification

IMPOSSIBLE = 1e-12
"""An outcome with exact probability below this must never be observed."""

MIN_EXPECTED = 5.0
"""Bins with a smaller expected count are pooled (the chi-square approximation's rule)."""


def too_wide(num_qubits: int, limit: int, reference: str) -> Verification | None:
    """A ``skipped`` verdict when ``num_qubits`` is above what ``reference`` can compute
    exactly (``limit`` qubits); None when it is within."""
    if num_qubits <= limit:
        return None
    return Verification(
        verdict="skipped",
        detail=f"{num_qubits} qubits is above the {reference} limit ({limit})",
    )


def _tvd(counts: Mapping[str, int], exact: Mapping[str, float], shots: int) -> float:
    keys = set(counts) | set(exact)
    return 0.5 * sum(abs(counts.get(k, 0) / shots - exact.get(k, 0.0)) for k in keys)


def check_counts(
    counts: Mapping[str, int],
    exact: Mapping[str, float],
    shots: int,
    alpha: float = 1e-6,
) -> Verification:
    """Chi-square goodness-of-fit of sampled ``counts`` against the ``exact`` distribution.

    Outcomes with expected count ``shots * p`` below 5 are pooled into one bin; if that
    bin is still below 5 it joins the smallest regular bin, so no bin's expectation is
    small enough to make the chi-square approximation wildly wrong. Observing an outcome
    whose exact probability is below 1e-12 fails at once.

    Args:
        counts: Observed bitstring -> count.
        exact: Exact bitstring -> probability (missing outcomes have probability 0).
        shots: Number of shots the counts should add up to.
        alpha: Significance level: the chance that a correct result fails.

    Returns:
        Test ``chi2``: ``pass`` when the p-value is at least ``alpha``. ``threshold`` is
        the critical chi-square value for ``alpha``; ``tvd`` the total variation
        distance between the empirical and exact distributions.
    """
    if shots <= 0:
        return Verification(verdict="skipped", test="chi2", detail="no shots to test")
    total = sum(counts.values())
    if total != shots:
        return Verification(
            verdict="fail",
            test="chi2",
            detail=f"counts add up to {total}, but {shots} shots were requested",
        )
    tvd = _tvd(counts, exact, shots)
    for key in sorted(counts):
        if counts[key] > 0 and exact.get(key, 0.0) < IMPOSSIBLE:
            return Verification(
                verdict="fail",
                test="chi2",
                tvd=tvd,
                detail=(
                    f"observed impossible outcome '{key}' {counts[key]} time(s) "
                    f"(exact probability {exact.get(key, 0.0):.3g})"
                ),
            )
    possible = sorted(k for k, p in exact.items() if p >= IMPOSSIBLE)
    probs = np.array([exact[k] for k in possible], dtype=np.float64)
    # Renormalise over the possible outcomes so rounding and the dropped near-zero
    # outcomes do not bias the expectation.
    expected = shots * probs / probs.sum()
    observed = np.array([counts.get(k, 0) for k in possible], dtype=np.float64)

    small = expected < MIN_EXPECTED
    obs_bins = list(observed[~small])
    exp_bins = list(expected[~small])
    if small.any():
        pool_obs, pool_exp = float(observed[small].sum()), float(expected[small].sum())
        if pool_exp < MIN_EXPECTED and exp_bins:
            i = int(np.argmin(exp_bins))
            obs_bins[i] += pool_obs
            exp_bins[i] += pool_exp
        else:
            obs_bins.append(pool_obs)
            exp_bins.append(pool_exp)
    dof = len(exp_bins) - 1
    if dof == 0:
        # One bin holds every possible outcome, and no shot landed outside it.
        return Verification(
            verdict="pass",
            test="chi2",
            statistic=0.0,
            p_value=1.0,
            threshold=0.0,
            tvd=tvd,
            detail=f"all {shots} shots landed in the only possible outcome bin",
        )
    obs = np.asarray(obs_bins)
    exp = np.asarray(exp_bins)
    statistic = float(((obs - exp) ** 2 / exp).sum())
    # The special functions directly: scipy.stats' distribution wrappers cost ~150 µs
    # per call in argument checking, more than the rest of a small job's verification.
    p_value = float(special.chdtrc(dof, statistic))
    critical = _critical_value(alpha, dof)
    verdict = "pass" if p_value >= alpha else "fail"
    relation = ">=" if verdict == "pass" else "<"
    return Verification(
        verdict=verdict,
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        threshold=critical,
        tvd=tvd,
        detail=(
            f"chi2={statistic:.4g} dof={dof} p={p_value:.3g} {relation} alpha={alpha:g} "
            f"({shots} shots, {len(exp_bins)} bins, tvd={tvd:.4f})"
        ),
    )


def check_statevector(sv: np.ndarray, exact: np.ndarray, tol: float = 1e-6) -> Verification:
    """Compare a state vector with the exact one by fidelity ``|<exact|sv>|**2``.

    Global phase does not matter. A vector whose norm is off by more than ``tol`` fails
    even if it points the right way: an engine must return a normalised state.

    Args:
        sv: The engine's state vector.
        exact: The exact state vector.
        tol: ``pass`` when the fidelity is at least ``1 - tol``.

    Returns:
        Test ``fidelity`` with the fidelity as ``statistic`` and ``1 - tol`` as
        ``threshold``.
    """
    sv = np.asarray(sv, dtype=np.complex128).reshape(-1)
    exact = np.asarray(exact, dtype=np.complex128).reshape(-1)
    threshold = 1.0 - tol
    if sv.shape != exact.shape:
        return Verification(
            verdict="fail",
            test="fidelity",
            threshold=threshold,
            detail=f"state vector has {sv.size} amplitudes, expected {exact.size}",
        )
    norm_sv = float(np.vdot(sv, sv).real)
    norm_exact = float(np.vdot(exact, exact).real)
    if not math.isfinite(norm_sv) or abs(norm_sv - 1.0) > tol:
        return Verification(
            verdict="fail",
            test="fidelity",
            threshold=threshold,
            detail=f"state vector is not normalised: squared norm {norm_sv:.12g}",
        )
    fidelity = float(abs(np.vdot(exact, sv)) ** 2 / (norm_sv * norm_exact))
    verdict = "pass" if fidelity >= threshold else "fail"
    relation = ">=" if verdict == "pass" else "<"
    return Verification(
        verdict=verdict,
        test="fidelity",
        statistic=fidelity,
        threshold=threshold,
        detail=f"fidelity={fidelity:.12f} {relation} {threshold:.12f}",
    )


@functools.lru_cache(maxsize=1024)
def _critical_value(alpha: float, dof: int) -> float:
    """The chi-square value whose upper tail is ``alpha``."""
    return float(special.chdtri(dof, alpha))
