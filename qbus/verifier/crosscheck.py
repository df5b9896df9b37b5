"""Cross-engine agreement: re-run a job on a second engine and compare the two results.

Policy (``[verify]`` in the config, docs/audit.md): a job is cross-checked when it asks
(``options.cross_check``) or when it falls in the random sample ``cross_check_rate``.
The sample is drawn from a hash of the job id, not from a random number generator, so a
redelivered ExecutionCompleted gets the same decision, the same second run (same seed)
and therefore the same output event: the verify stage stays a pure function of its
input and at-least-once delivery needs nothing more than the usual derived event ids.

The second run happens in the verify process, on an engine instantiated from the
registry (the first of ``cross_check_engines`` that is installed, is not the job's own
engine and accepts the job). Publishing a second ExecutionRequested and waiting for it
would need a correlation state that survives redelivery, a timeout policy, and a second
result on the job's subjects that clients would have to ignore; running it here needs
none of that. The price is that engine code runs in the verifier, so the preference
list should name engines the operator trusts.

Comparison:

* counts: two-sample chi-square homogeneity test (a 2 × k contingency table, sparse
  outcomes pooled to keep every expected count >= 5); the job fails when the p-value
  is below ``cross_check_alpha``, the chance that two correct engines are failed;
* state vectors: fidelity ``|<a|b>|**2 >= 1 - 1e-6`` (global phase ignored);
* expectation values: largest difference scaled by each observable's norm bound
  ``<= 1e-6``.

Sweeps and dynamics are not cross-checked (``cross_verdict="skipped"`` says so).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from qbus.bus.blobs import deinterleave
from qbus.bus.config import VerifyConfig
from qbus.engines.base import Engine, RunRequest
from qbus.engines.observables import expectation_values
from qbus.engines.registry import get_engine
from qbus.engines.sweep import without_measurements
from qbus.errors import QbusError
from qbus.schemas.events import ExecutionCompleted, Verification
from qbus.schemas.pauli import Observable

MIN_EXPECTED = 5.0
"""Smallest expected count of a contingency cell before its outcome is pooled."""

FIDELITY_TOL = 1e-6
EXPECTATION_TOL = 1e-6

_COMPARABLE = ("sample", "statevector", "expectation")


@dataclass(frozen=True, slots=True)
class Agreement:
    """Outcome of comparing two results.

    Attributes:
        verdict: ``pass``, ``fail`` or ``skipped``.
        detail: What was compared and found, for a person.
        statistic: The chi-square value, fidelity or largest scaled difference.
        p_value: For the counts test.
    """

    verdict: str
    detail: str
    statistic: float | None = None
    p_value: float | None = None


def compare_counts(a: Mapping[str, int], b: Mapping[str, int], alpha: float = 1e-6) -> Agreement:
    """Two-sample chi-square test: were ``a`` and ``b`` drawn from one distribution?

    Outcomes whose expected count falls below 5 in either sample are pooled into one
    bin (if the pool is still below 5 it joins the smallest regular bin), the same rule
    as the goodness-of-fit test against the exact reference.

    Args:
        a: First engine's counts.
        b: Second engine's counts.
        alpha: Significance level: the chance that two agreeing engines fail.
    """
    n_a, n_b = sum(a.values()), sum(b.values())
    if n_a <= 0 or n_b <= 0:
        return Agreement("skipped", f"no shots to compare ({n_a} and {n_b})")
    keys = sorted(set(a) | set(b))
    obs = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]], dtype=np.float64)
    total = n_a + n_b
    col = obs.sum(axis=0)
    expected = np.outer([n_a, n_b], col) / total
    small = expected.min(axis=0) < MIN_EXPECTED
    bins_obs = [obs[:, i] for i in np.flatnonzero(~small)]
    bins_exp = [expected[:, i] for i in np.flatnonzero(~small)]
    if small.any():
        pool_obs, pool_exp = obs[:, small].sum(axis=1), expected[:, small].sum(axis=1)
        if pool_exp.min() < MIN_EXPECTED and bins_exp:
            i = int(np.argmin([e.min() for e in bins_exp]))
            bins_obs[i] = bins_obs[i] + pool_obs
            bins_exp[i] = bins_exp[i] + pool_exp
        else:
            bins_obs.append(pool_obs)
            bins_exp.append(pool_exp)
    tvd = 0.5 * float(np.abs(obs[0] / n_a - obs[1] / n_b).sum())
    dof = len(bins_exp) - 1
    if dof < 1:
        return Agreement(
            "pass", f"both samples fall in one outcome bin ({n_a} and {n_b} shots)", 0.0, 1.0
        )
    o, e = np.array(bins_obs), np.array(bins_exp)
    statistic = float(((o - e) ** 2 / e).sum())
    p_value = float(special.chdtrc(dof, statistic))
    verdict = "pass" if p_value >= alpha else "fail"
    relation = ">=" if verdict == "pass" else "<"
    return Agreement(
        verdict,
        f"two-sample chi2={statistic:.4g} dof={dof} p={p_value:.3g} {relation} "
        f"alpha={alpha:g} ({n_a} vs {n_b} shots, tvd={tvd:.4f})",
        statistic,
        p_value,
    )


def compare_statevectors(a: np.ndarray, b: np.ndarray, tol: float = FIDELITY_TOL) -> Agreement:
    """Fidelity ``|<a|b>|**2`` of two state vectors against ``1 - tol``."""
    a = np.asarray(a, dtype=np.complex128).reshape(-1)
    b = np.asarray(b, dtype=np.complex128).reshape(-1)
    if a.shape != b.shape:
        return Agreement("fail", f"state vectors have {a.size} and {b.size} amplitudes")
    norms = float(np.vdot(a, a).real * np.vdot(b, b).real)
    fidelity = float(abs(np.vdot(a, b)) ** 2 / norms) if norms > 0 else 0.0
    verdict = "pass" if fidelity >= 1.0 - tol else "fail"
    relation = ">=" if verdict == "pass" else "<"
    return Agreement(verdict, f"fidelity={fidelity:.12f} {relation} {1.0 - tol:.12f}", fidelity)


def compare_expectations(
    a: Sequence[float],
    b: Sequence[float],
    observables: Sequence[Observable],
    tol: float = EXPECTATION_TOL,
) -> Agreement:
    """Largest difference of two engines' expectation values, scaled by the norm bound."""
    if len(a) != len(b):
        return Agreement("fail", f"{len(a)} and {len(b)} expectation values")
    worst, worst_i = 0.0, 0
    for i, (x, y, obs) in enumerate(zip(a, b, observables, strict=False)):
        err = abs(x - y) / (1.0 + sum(abs(t.coeff) for t in obs.terms))
        if err > worst:
            worst, worst_i = err, i
    verdict = "pass" if worst <= tol else "fail"
    relation = "<=" if verdict == "pass" else ">"
    return Agreement(
        verdict,
        f"largest scaled difference {worst:.3g} (observable {worst_i}) {relation} {tol:g}",
        worst,
    )


def sampled(job_id: str, rate: float) -> bool:
    """Whether ``job_id`` falls in a sample of ``rate``: the same answer every time."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    draw = int.from_bytes(hashlib.sha256(b"qbus-cross-check\n" + job_id.encode()).digest()[:8])
    return draw / 2**64 < rate


def run_request(event: ExecutionCompleted) -> RunRequest:
    """The request the executor ran for ``event``, as the second engine gets it.

    The seed is the one the first engine used, so a rerun of this check (after a
    redelivery) draws the same samples.
    """
    opts = event.options
    expectation = opts.method == "expectation"
    return RunRequest(
        circuit=without_measurements(event.circuit) if expectation else event.circuit,
        method="statevector" if expectation else opts.method,
        shots=opts.shots,
        seed=event.seed,
        parameters=opts.parameters,
        noise=opts.noise,
        observables=opts.observables,
    )


class CrossChecker:
    """Decides which jobs to cross-check, runs the second engine and compares.

    Args:
        config: The ``[verify]`` settings.
    """

    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.config = config or VerifyConfig()

    def wanted(self, event: ExecutionCompleted) -> bool:
        """The job asked for a cross-check, or falls in the configured sample."""
        return event.options.cross_check or sampled(event.job_id, self.config.cross_check_rate)

    def second_engine(self, event: ExecutionCompleted, request: RunRequest) -> Engine | str:
        """The first preferred engine that can run ``request``, or why there is none."""
        tried = []
        for name in self.config.cross_check_engines:
            if name == event.engine:
                continue
            try:
                engine = get_engine(name)
                engine.validate(request)
            except (ImportError, QbusError) as exc:
                tried.append(f"{name}: {getattr(exc, 'code', type(exc).__name__)}")
                continue
            return engine
        listed = "; ".join(tried) if tried else "none configured besides the job's engine"
        return f"no second engine can run this job ({listed})"

    async def check(self, event: ExecutionCompleted) -> Verification:
        """Re-run ``event``'s job on a second engine and compare.

        Returns:
            A Verification carrying only the ``cross_*`` fields (the caller merges them
            into its own verdict).
        """
        method = event.options.method
        if method not in _COMPARABLE:
            return _cross(None, "skipped", f"method '{method}' is not cross-checked")
        request = run_request(event)
        engine = self.second_engine(event, request)
        if isinstance(engine, str):
            return _cross(None, "skipped", engine)
        try:
            # CPU-bound: off the event loop, so the runner keeps the input alive meanwhile.
            result = await asyncio.to_thread(engine.run, request)
        except QbusError as exc:
            return _cross(engine.name, "skipped", f"{engine.name} failed: [{exc.code}] {exc}")
        agreement = self._compare(event, result.counts, result.statevector)
        return _cross(
            engine.name,
            agreement.verdict,
            f"{event.engine} {event.engine_version} vs {engine.name} {engine.version}: "
            f"{agreement.detail}",
        )

    def _compare(
        self,
        event: ExecutionCompleted,
        counts: Mapping[str, int] | None,
        statevector: np.ndarray | None,
    ) -> Agreement:
        match event.options.method:
            case "sample":
                return compare_counts(
                    event.counts or {}, counts or {}, self.config.cross_check_alpha
                )
            case "statevector":
                if event.statevector is None or statevector is None:
                    return Agreement("skipped", "state vector is in the object store")
                return compare_statevectors(deinterleave(event.statevector), statevector)
            case _:  # expectation
                if statevector is None:
                    return Agreement("skipped", "the second engine returned no state")
                other = expectation_values(statevector, event.options.observables)
                return compare_expectations(
                    event.expectations or [], other, event.options.observables
                )


def _cross(engine: str | None, verdict: str, detail: str) -> Verification:
    return Verification(
        verdict=verdict, cross_engine=engine, cross_verdict=verdict, cross_detail=detail
    )
