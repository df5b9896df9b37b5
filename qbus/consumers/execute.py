"""Execute: run circuits on one engine.

Reads ``qbus.exec.<engine>.*`` (one durable consumer per engine, shared by its copies);
writes ``qbus.executed.<job>`` (ExecutionCompleted or ExecutionFailed). State vectors
above the inline limit go to the object store and the event carries a reference.

The engine code runs under the job's sandbox driver (docs/hypervisor.md): ``inline`` in
this process, ``process``/``bwrap`` in a warm worker under the job's limits. A sandbox
kill (``memory_limit``, ``cpu_limit`` …) is an ExecutionFailed with that code, and the
executor goes on with the next job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec

from qbus.bus.blobs import BlobStore, ResultStoreFull, interleave, statevector_buffer
from qbus.bus.config import HypervisorConfig, Limits
from qbus.consumers.control import ExecutionGate
from qbus.engines.base import Engine, RunRequest
from qbus.engines.observables import expectation_values
from qbus.engines.registry import get_engine
from qbus.errors import EngineError, QbusError, SandboxFailure
from qbus.hypervisor import make_sandbox
from qbus.hypervisor.base import Sandbox, choose_driver, run_limits
from qbus.hypervisor.process import engine_target
from qbus.observability import metrics, tracing
from qbus.schemas.events import (
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    answer,
)
from qbus.schemas.ir import Circuit
from qbus.schemas.noise import is_noisy

log = logging.getLogger("qbus.execute")


QUICK_QUBITS = 12
QUICK_OPS = 2_000
QUICK_SHOTS = 100_000


def _is_quick(request: RunRequest) -> bool:
    """A run that takes milliseconds on any engine: small state, few ops, few shots."""
    return (
        request.circuit.num_qubits <= QUICK_QUBITS
        and len(request.circuit.ops) <= QUICK_OPS
        and request.shots <= QUICK_SHOTS
        and len(request.sweep) <= 1
    )


def _without_measurements(circuit: Circuit) -> Circuit:
    ops = tuple(op for op in circuit.ops if op.name not in ("measure", "barrier"))
    return msgspec.structs.replace(circuit, ops=ops)


class ExecuteHandler:
    """Runs ExecutionRequested on ``engine``.

    Args:
        engine: Engine name (its registry entry is loaded once, here).
        blobs: Where large state vectors go.
        limits: The inline state-vector limit.
        hypervisor: Sandbox policy and caps; the drivers' workers start on first use.
        gate: Says why a request is no longer wanted.
        nice: Run every job in a sandbox worker at this niceness (0: as the job asks):
            the heavy lane's handlers, so a heavy run gives the CPU to light ones.
        idle: Run every job in a sandbox worker under ``SCHED_IDLE`` (the heavy lane's
            default).
    """

    stage = "execute"

    def __init__(
        self,
        engine: str,
        blobs: BlobStore | None,
        limits: Limits | None = None,
        hypervisor: HypervisorConfig | None = None,
        gate: ExecutionGate | None = None,
        nice: int = 0,
        idle: bool = False,
    ):
        self.engine: Engine = get_engine(engine)
        self.nice = nice
        self.idle = idle
        # Says why a request is no longer wanted (job ended, cancelled, rerouted):
        # qbus/consumers/control.py.
        self.gate = gate
        self.blobs = blobs
        self.limits = limits or Limits()
        self.hypervisor = hypervisor or HypervisorConfig()
        self.sandboxes: dict[str, Sandbox] = {}

    def sandbox(self, driver: str) -> Sandbox:
        """This executor's sandbox of ``driver``, created on first use."""
        sandbox = self.sandboxes.get(driver)
        if sandbox is None:
            sandbox = make_sandbox(
                driver,
                self.hypervisor.pool_size,
                [engine_target(self.engine)],
                self.nice,
                self.idle,
            )
            self.sandboxes[driver] = sandbox
        return sandbox

    async def start(self) -> None:
        """Start what the gate watches (the runner calls this before consuming)."""
        if self.gate is not None:
            await self.gate.start()

    def close(self) -> None:
        """Stop the sandboxes' worker processes."""
        for sandbox in self.sandboxes.values():
            sandbox.close()
        self.sandboxes.clear()

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, ExecutionRequested) or event.engine != self.engine.name:
            return []
        if self.gate is not None and (why := await self.gate(event)) is not None:
            log.info("job %s: not running %s: %s", event.job_id, event.event_id, why)
            return []
        opts = event.options
        expectation = opts.method == "expectation"
        # A noisy state is a density matrix: the engine evaluates the observables itself
        # (method 'expectation'), since a density matrix never leaves the engine; so does
        # an engine that never holds the dense state (a tensor network).
        density = expectation and (is_noisy(opts.noise) or not self.engine.capabilities.holds_state)
        # Measurements in the program of a dynamics job are ignored, as for expectation.
        unmeasured = expectation or opts.method == "dynamics"
        request = RunRequest(
            # An expectation job is a state-vector run on the circuit without its
            # measurements; the observables are evaluated here, the same for every engine.
            circuit=_without_measurements(event.circuit) if unmeasured else event.circuit,
            method="statevector" if expectation and not density else opts.method,
            shots=opts.shots,
            seed=opts.seed if opts.seed is not None else 0,
            parameters=opts.parameters,
            noise=opts.noise,
            sweep=opts.sweep,
            observables=opts.observables,
            dynamics=opts.dynamics,
            memory_mb=run_limits(self.hypervisor, opts.memory_mb).memory_mb,
        )
        try:
            # No validation here: ``Engine.run`` validates the request once, before any
            # compute, wherever the sandbox runs it; a refusal comes back as the
            # engine's QbusError (from a worker process too).
            driver = choose_driver(
                opts.hypervisor,
                self.engine.name,
                self.hypervisor,
                limited=any(
                    x is not None for x in (opts.memory_mb, opts.cpu_seconds, opts.wall_seconds)
                ),
                num_qubits=event.circuit.num_qubits,
            )
            if (self.nice or self.idle) and driver == "inline":
                # A lower CPU priority needs a process of its own: inline would run in
                # the executor's.
                driver = "process"
            limits = run_limits(
                self.hypervisor, opts.memory_mb, opts.cpu_seconds, opts.wall_seconds
            )
            sandbox = self.sandbox(driver)
            with (
                tracing.span("qbus.execute sandbox", {"qbus.sandbox.driver": driver}) as box,
                tracing.span("qbus.execute engine.run", self._span_attributes(request)) as run,
            ):
                if driver == "inline" and _is_quick(request):
                    # Milliseconds at most: a thread hop would cost more than it protects.
                    result = sandbox.run(self.engine, request, limits)
                else:
                    # In a thread, so the runner keeps telling the server we are still
                    # working (a sandboxed run may be killed only at its wall limit).
                    result = await asyncio.to_thread(sandbox.run, self.engine, request, limits)
                tracing.set_attributes(run, {"qbus.engine.run_seconds": result.run_seconds})
                tracing.set_attributes(
                    box,
                    {
                        "qbus.sandbox.peak_rss_mb": result.peak_rss_mb,
                        "qbus.sandbox.cpu_seconds": result.cpu_seconds,
                        "qbus.sandbox.wall_seconds": result.wall_seconds,
                    },
                )
        except SandboxFailure as exc:
            metrics.SANDBOX_KILLS.labels(exc.driver or "unknown", exc.code).inc()
            log.warning("job %s: sandbox stopped the run: %s (%s)", event.job_id, exc, exc.code)
            # A worker that died of something other than a limit (a crash, a signal)
            # may well run the job next time: the verify stage retries it with backoff.
            return [self._failed(event, exc.code, str(exc), exc.code == "worker_died")]
        except QbusError as exc:
            retryable = isinstance(exc, EngineError) and exc.retryable
            return [self._failed(event, exc.code, str(exc), retryable)]
        metrics.observe_engine_run(
            self.engine.name, opts.method, event.circuit.num_qubits, result.run_seconds
        )
        if result.wall_seconds is not None:
            metrics.SANDBOX_WALL_SECONDS.labels(driver).observe(result.wall_seconds)
        if result.cpu_seconds is not None:
            metrics.SANDBOX_CPU_SECONDS.labels(driver).observe(result.cpu_seconds)
        if result.peak_rss_mb is not None:
            metrics.SANDBOX_PEAK_RSS.labels(driver).observe(result.peak_rss_mb * 2**20)
        statevector = statevector_ref = expectations = None
        if expectation and result.expectations is not None:
            expectations = result.expectations
        elif expectation and result.statevector is not None:
            expectations = expectation_values(result.statevector, opts.observables)
        elif result.statevector is not None:
            if event.circuit.num_qubits <= self.limits.inline_statevector_qubits:
                statevector = interleave(result.statevector)
            elif self.blobs is not None:
                name = f"{event.job_id}.g{event.generation}.statevector"
                try:
                    statevector_ref = await self.blobs.put(
                        name, statevector_buffer(result.statevector)
                    )
                except ResultStoreFull as exc:
                    # Not retried: the store frees space only as results expire.
                    return [self._failed(event, exc.code, str(exc), False)]
            else:
                return [
                    self._failed(
                        event,
                        "no_object_store",
                        "state vector too large to inline and no object store",
                        False,
                    )
                ]
        return [
            answer(
                event,
                ExecutionCompleted,
                f"qbus.execute.{self.engine.name}",
                engine=self.engine.name,
                engine_version=self.engine.version,
                circuit=event.circuit,
                circuit_hash=event.circuit_hash,
                options=opts,
                seed=result.seed,
                counts=result.counts,
                statevector=statevector,
                statevector_ref=statevector_ref,
                run_seconds=result.run_seconds,
                generation=event.generation,
                hypervisor=driver,
                peak_rss_mb=result.peak_rss_mb,
                cpu_seconds=result.cpu_seconds,
                wall_seconds=result.wall_seconds,
                expectations=expectations,
                sweep_results=result.sweep_results,
                dynamics=result.dynamics,
                chunk=event.chunk,
                chunks=event.chunks,
                point_start=event.point_start,
                point_stop=event.point_stop,
                shot_start=event.shot_start,
                shot_stop=event.shot_stop,
            )
        ]

    def _span_attributes(self, request: RunRequest) -> dict[str, object]:
        return {
            "qbus.engine": self.engine.name,
            "qbus.engine.version": self.engine.version,
            "qbus.qubits": request.circuit.num_qubits,
            "qbus.method": request.method,
            "qbus.shots": request.shots,
        }

    def _failed(
        self, event: ExecutionRequested, code: str, message: str, retryable: bool
    ) -> ExecutionFailed:
        return answer(
            event,
            ExecutionFailed,
            f"qbus.execute.{self.engine.name}",
            engine=self.engine.name,
            code=code,
            message=message,
            retryable=retryable,
            generation=event.generation,
            attempt=event.attempt,
            chunk=event.chunk,
        )
