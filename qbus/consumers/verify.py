"""Verify: check a result against the exact reference and publish the job's final event.

Reads ``qbus.executed.*``; writes ``qbus.result.<job>``: JobCompleted (verdict + result
hash) or JobFailed (engine failure, or a result the statistics reject).

Counts of circuits up to ``max_reference_qubits`` are held to a chi-square test against
the exact distribution (its tolerance follows from the shot count); state vectors to a
fidelity bound. Larger circuits, mid-circuit measurements and object-store vectors are
marked ``skipped`` with the reason, except wide Clifford circuits, held to stim's exact
stabilizer state (``qbus/verifier/stabilizer.py``). A sweep's points are checked one
by one, or a seeded sample of them, at a Bonferroni-corrected level
(``qbus/verifier/sweep.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import msgspec
import numpy as np

from qbus.bus.blobs import deinterleave
from qbus.consumers.assemble import Assembler
from qbus.consumers.engine_failure import engine_failed
from qbus.consumers.retry import RetryPolicy
from qbus.engines import reference
from qbus.engines.observables import expectation_values
from qbus.engines.sweep import without_measurements
from qbus.errors import CircuitError
from qbus.frontends.parameters import bind
from qbus.observability import metrics, tracing
from qbus.schemas.events import (
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    JobCompleted,
    JobFailed,
    Verification,
    answer,
)
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import is_noisy
from qbus.verifier.crosscheck import CrossChecker
from qbus.verifier.expectations import check_expectations
from qbus.verifier.hashing import HASH_VERSION, event_result_hash
from qbus.verifier.open_systems import verify_dynamics, verify_noisy
from qbus.verifier.stabilizer import verify_wide
from qbus.verifier.statistics import check_counts, check_statevector, too_wide
from qbus.verifier.sweep import verify_sweep

_CACHE_SIZE = 256
VERIFY_MAX_BRANCHES = 64
"""Live measurement branches the verify stage follows for a dynamic circuit's exact
distribution (docs/engines.md): more is ``skipped``, as the stage verifies every job of
the bus in one process and a branch costs a state vector pass per op."""
VERIFY_MAX_WORK = 2**21
"""Most amplitude updates the stage spends on one dynamic circuit's exact distribution
(tens of milliseconds): many branches over many ops cost time long before they cost
memory, and every other job's verification waits meanwhile (benchmarks/fairness.py
showed a 340 ms stall). More is ``skipped``."""


class VerifyHandler:
    """Turns ExecutionCompleted/ExecutionFailed into the job's one final event.

    Args:
        alpha: Significance level of the counts test: the chance that a correct engine's
            result is flagged (per job).
        max_reference_qubits: Largest circuit checked against the exact reference.
        retry: What a transient engine failure leads to (None: the job fails at once).
    """

    stage = "verify"

    def __init__(
        self,
        alpha: float = 1e-6,
        max_reference_qubits: int = reference.max_reference_qubits,
        crosscheck: CrossChecker | None = None,
        assembler: Assembler | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.alpha = alpha
        # Long jobs: chunk results are collected there (qbus/consumers/assemble.py).
        self.assembler = assembler
        self.max_reference_qubits = max_reference_qubits
        # Cross-engine agreement policy (job flag / sample rate): qbus/verifier/crosscheck.py.
        self.crosscheck = crosscheck or CrossChecker()
        # None: every engine failure ends the job at once (no retries).
        self.retry = retry
        self._exact: OrderedDict[tuple, dict[str, float] | np.ndarray | CircuitError] = (
            OrderedDict()
        )

    async def start(self) -> None:
        """Start the assembler's control watch (the runner calls this before consuming)."""
        if self.assembler is not None:
            await self.assembler.start()

    async def handle(self, event: Event) -> Sequence[Event]:
        if isinstance(event, ExecutionFailed) and self.retry is not None:
            # A transient failure (of a job or of one chunk) is asked for again with
            # backoff, or ends the job after the last attempt (consumers/retry.py).
            retried = await self.retry.on_failure(event)
            if retried is not None:
                return retried
        if self.assembler is not None:
            claimed = await self.assembler.intercept(event, self._complete)
            if claimed is not None:
                return claimed
        match event:
            case ExecutionCompleted():
                return [self._complete(event, await self._cross_check(event))]
            case ExecutionFailed():
                return [engine_failed(event, event.message)]
        return []

    async def _cross_check(self, event: ExecutionCompleted) -> Verification | None:
        """The second engine's agreement, when the job or the sample rate asks for one."""
        if not self.crosscheck.wanted(event):
            return None
        return await self.crosscheck.check(event)

    def _complete(self, event: ExecutionCompleted, cross: Verification | None = None) -> Event:
        with tracing.span(
            "qbus.verify check",
            {"qbus.engine": event.engine, "qbus.method": event.options.method},
        ) as span:
            verification = self._verify(event)
            tracing.set_attributes(
                span,
                {
                    "qbus.verification.verdict": verification.verdict,
                    "qbus.verification.test": verification.test,
                    "qbus.verification.statistic": verification.statistic,
                    "qbus.verification.p_value": verification.p_value,
                    "qbus.verification.tvd": verification.tvd,
                },
            )
        metrics.VERDICTS.labels(verification.verdict, verification.test).inc()
        if verification.tvd is not None:
            metrics.VERIFY_TVD.labels(event.engine).observe(verification.tvd)
        if verification.test == "fidelity" and verification.statistic is not None:
            metrics.VERIFY_FIDELITY.labels(event.engine).observe(verification.statistic)
        if cross is not None:
            verification = msgspec.structs.replace(
                verification,
                cross_engine=cross.cross_engine,
                cross_verdict=cross.cross_verdict,
                cross_detail=cross.cross_detail,
            )
            if cross.cross_verdict == "fail" and verification.verdict != "fail":
                return answer(
                    event,
                    JobFailed,
                    "qbus.verify",
                    code="cross_engine_disagreement",
                    message=f"{event.engine} and {cross.cross_engine} disagree: "
                    f"{cross.cross_detail}",
                    stage="verify",
                )
        if verification.verdict == "fail":
            return answer(
                event,
                JobFailed,
                "qbus.verify",
                code="verification_failed",
                message=f"{event.engine} result failed verification: {verification.detail}",
                stage="verify",
            )
        opts = event.options
        return answer(
            event,
            JobCompleted,
            "qbus.verify",
            engine=event.engine,
            engine_version=event.engine_version,
            circuit_hash=event.circuit_hash,
            method=opts.method,
            shots=opts.shots,
            seed=event.seed,
            verification=verification,
            # One mapping of event fields onto the hash, shared with `qbus audit verify`.
            result_hash=event_result_hash(event, HASH_VERSION),
            hash_version=HASH_VERSION,
            counts=event.counts,
            expectations=event.expectations,
            statevector=event.statevector,
            statevector_ref=event.statevector_ref,
            run_seconds=event.run_seconds,
            sweep_results=event.sweep_results,
            dynamics=event.dynamics,
            noise=opts.noise,
        )

    def _verify(self, event: ExecutionCompleted) -> Verification:
        circuit = event.circuit
        wide = too_wide(circuit.num_qubits, self.max_reference_qubits, "exact-reference")
        if wide is not None:
            # A Clifford circuit has an exact reference at any width: stim's tableau.
            return verify_wide(event, self.alpha) or wide
        try:
            # Noise and dynamics have their own exact references (verifier/open_systems.py).
            if event.options.method == "dynamics":
                return verify_dynamics(event)
            if is_noisy(event.options.noise):
                return verify_noisy(event, self.alpha)
            if event.options.method == "sweep":
                # Per point, against the reference (qbus/verifier/sweep.py states the policy).
                return verify_sweep(event, self.alpha)
            bound = bind(circuit, event.options.parameters)
            if event.options.method == "expectation":
                state = reference.statevector(without_measurements(bound))
                exact = expectation_values(state, event.options.observables)
                return check_expectations(
                    event.expectations or [], exact, event.options.observables
                )
            if event.options.method == "statevector":
                if event.statevector is None:
                    return Verification(
                        verdict="skipped", detail="state vector is in the object store"
                    )
                exact = self._reference(bound, event.circuit_hash, event.options.parameters, "sv")
                return check_statevector(deinterleave(event.statevector), exact)
            exact = self._reference(bound, event.circuit_hash, event.options.parameters, "p")
            return check_counts(event.counts or {}, exact, event.options.shots, alpha=self.alpha)
        except CircuitError as exc:
            return Verification(verdict="skipped", detail=f"no exact reference: {exc}")

    def _reference(
        self, bound: Circuit, circuit_hash: str, params: dict[str, float], kind: str
    ) -> dict[str, float] | np.ndarray:
        # Many jobs share a circuit (sweeps aside): the exact answer is computed once, and
        # so is the finding that there is none (a circuit too costly to branch is skipped
        # at once the next time, not after its work budget again).
        key = (circuit_hash, tuple(sorted(params.items())), kind)
        if key in self._exact:
            self._exact.move_to_end(key)
            cached = self._exact[key]
            if isinstance(cached, CircuitError):
                raise cached
            return cached
        value: dict[str, float] | np.ndarray | CircuitError
        try:
            if kind == "sv":
                value = reference.statevector(bound)
            else:
                # A dynamic circuit's exact answer branches per mid-circuit measurement;
                # the stage checks what it can in milliseconds, and skips (saying so)
                # the rest.
                value = reference.probabilities(
                    bound, max_branches=VERIFY_MAX_BRANCHES, max_work=VERIFY_MAX_WORK
                )
        except CircuitError as exc:
            value = exc
        self._exact[key] = value
        if len(self._exact) > _CACHE_SIZE:
            self._exact.popitem(last=False)
        if isinstance(value, CircuitError):
            raise value
        return value
