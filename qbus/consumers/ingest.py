"""Ingest: parse a submission into validated IR with a content hash.

Reads ``qbus.submit`` and ``qbus.submit.<tenant>``; writes ``qbus.ingested.<job>``
(CircuitIngested) or ``qbus.result.<job>`` (JobRejected, with a code and the line/field of
the problem).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from qbus.bus.config import HypervisorConfig, Limits
from qbus.consumers.ingest_open import check_open_system
from qbus.consumers.tenants import TenantGate
from qbus.engines.sweep import check_sweep
from qbus.errors import CircuitError, QbusError, Refuse, Reject
from qbus.frontends.bounds import clipped
from qbus.frontends.parameters import check_angles, check_parameters
from qbus.frontends.program import parse_program
from qbus.hypervisor.base import STATE_OVERHEAD_MB, statevector_mb
from qbus.observability import tracing
from qbus.router.wide import tensor_network_job
from qbus.schemas.events import (
    CircuitIngested,
    Event,
    JobSubmitted,
    answer,
    default_seed,
    tag_of,
)
from qbus.schemas.ir import Circuit, circuit_hash, stats, unbounded_loop, walk_ops

log = logging.getLogger("qbus.ingest")


class IngestHandler:
    """Turns JobSubmitted into CircuitIngested, or rejects it.

    Args:
        limits: What one job may ask for.
        hypervisor: Sandbox caps; a job whose state cannot fit the memory cap is rejected.
        tenants: Per-tenant limits (the job's tenant comes from its submit subject).
    """

    stage = "ingest"

    def __init__(
        self,
        limits: Limits | None = None,
        hypervisor: HypervisorConfig | None = None,
        tenants: TenantGate | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.hypervisor = hypervisor or HypervisorConfig()
        self.tenants = tenants or TenantGate()

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, JobSubmitted):
            # A result, a cancel … sent to the submit subject: a mistake or a forgery.
            raise Refuse(
                f"only job.submitted may be sent to a submit subject, not {tag_of(type(event))}",
                code="not_a_submission",
                where="$.type",
            )
        with tracing.span("qbus.ingest parse", {"qbus.format": event.format}) as span:
            circuit, source_format = self._circuit(event)
            tracing.set_attributes(
                span,
                {
                    "qbus.source_format": source_format,
                    "qbus.qubits": circuit.num_qubits,
                    "qbus.ops": len(circuit.ops),
                },
            )
        self._check(event, circuit)
        await self.tenants.check(event, circuit)
        options = event.options()
        if options.seed is None:
            options = msgspec.structs.replace(options, seed=default_seed(event.job_id))
        return [
            answer(
                event,
                CircuitIngested,
                "qbus.ingest",
                circuit=circuit,
                circuit_hash=circuit_hash(circuit),
                source_format=source_format,
                options=options,
                stats=stats(circuit),
            )
        ]

    def _circuit(self, job: JobSubmitted) -> tuple[Circuit, str]:
        limits = self.limits
        if job.circuit is not None and job.source is not None:
            raise Reject("give either 'source' or 'circuit', not both", code="ambiguous_input")
        if job.circuit is not None:
            try:
                check_parameters(job.circuit)
            except QbusError as exc:
                raise Reject(exc.message, code=exc.code, where=exc.where) from exc
            return job.circuit, "json"
        if job.source is None or not job.source.strip():
            raise Reject(
                "the job has no circuit: set 'source' (OpenQASM 2/3 or JSON IR text) "
                "or 'circuit' (inline JSON IR)",
                code="empty_program",
                where="$.source",
            )
        size = len(job.source.encode())
        if size > limits.max_source_bytes:
            raise Reject(
                f"the program is {size:,} bytes; the limit is {limits.max_source_bytes:,}",
                code="too_large",
                where="$.source",
            )
        try:
            return parse_program(
                job.source,
                job.format,
                max_bytes=limits.max_source_bytes,
                max_ops=limits.max_ops,
            )
        except QbusError as exc:
            raise Reject(exc.message, code=exc.code, where=exc.where) from exc
        except Exception as exc:
            # What a parser does depends on the text alone: a redelivery would fail the
            # same way until the job is dead-lettered, so any other error is a rejection
            # now (and a parser bug to fix: logged with its traceback).
            log.exception("ingest: parsing job %s raised", job.job_id)
            raise Reject(
                f"the program could not be parsed: {type(exc).__name__}: {clipped(str(exc))}",
                code="parser_error",
                where="$.source",
            ) from exc

    def _check(self, job: JobSubmitted, circuit: Circuit) -> None:
        limits = self.limits
        if job.method == "sample" and not 1 <= job.shots <= limits.max_shots:
            raise Reject(
                f"shots must be 1..{limits.max_shots:,}, got {job.shots:,}",
                code="invalid_shots",
                where="$.shots",
            )
        needs_state = job.method in ("statevector", "expectation")
        cap = limits.max_statevector_qubits if needs_state else limits.max_qubits
        if circuit.num_qubits > cap and not self._wide(job, circuit):
            raise Reject(
                f"the circuit has {circuit.num_qubits} qubits; {job.method} jobs may have at "
                f"most {cap} here (a state vector of n qubits takes 16·2^n bytes)",
                code="too_many_qubits",
            )
        if len(circuit.ops) > limits.max_ops:
            raise Reject(
                f"the circuit has {len(circuit.ops):,} instructions; the limit is "
                f"{limits.max_ops:,}",
                code="too_many_ops",
            )
        if job.method == "sweep":
            self._check_sweep(job, circuit)
        elif job.sweep:
            raise Reject(
                "'sweep' points are only read by method 'sweep'",
                code="invalid_sweep",
                where="$.sweep",
            )
        check_open_system(job, circuit)
        if job.method == "expectation" or (job.method == "sweep" and job.observables):
            self._check_observables(job, circuit)
        elif job.observables:
            raise Reject(
                "observables are only read by methods 'expectation' and 'sweep'",
                code="unexpected_observables",
                where="$.observables",
            )
        if job.method == "sample" and not any(op.name == "measure" for op in walk_ops(circuit.ops)):
            raise Reject(
                "a 'sample' job needs at least one measurement; add 'measure' or use "
                "method 'statevector'",
                code="no_measurements",
            )
        loop = unbounded_loop(circuit)
        if loop is not None:
            raise Reject(
                f"the 'while' loop at {loop} never measures into a bit its condition reads: "
                "once entered it would never end",
                code="unbounded_loop",
                # The IR path names the loop; text sources have no such path.
                where="$.source" if job.source is not None else f"$.circuit.{loop}",
            )
        self._check_sandbox(job, circuit)
        try:  # here, not at execution, where 1e308 overflows some engines' arithmetic
            check_angles(circuit, job.parameters, job.sweep)
        except CircuitError as exc:
            raise Reject(exc.message, code=exc.code, where=exc.where) from exc
        missing = sorted(set(circuit.parameters) - set(job.parameters))
        if missing and job.method != "sweep":
            raise Reject(
                f"parameter(s) {missing} have no value; give them in 'parameters'",
                code="unbound_parameter",
                where="$.parameters",
            )

    def _check_sweep(self, job: JobSubmitted, circuit: Circuit) -> None:
        """The sweep's points fit the circuit and the limit; sampled points need shots
        and measurements (``qbus.engines.sweep``)."""
        try:
            check_sweep(circuit, job.parameters, job.sweep, self.limits.max_sweep_points)
        except CircuitError as exc:
            raise Reject(exc.message, code=exc.code, where=exc.where) from exc
        if job.observables:
            return
        if not 1 <= job.shots <= self.limits.max_shots:
            raise Reject(
                f"shots per sweep point must be 1..{self.limits.max_shots:,}, got {job.shots:,}",
                code="invalid_shots",
                where="$.shots",
            )
        if not any(op.name == "measure" for op in walk_ops(circuit.ops)):
            raise Reject(
                "a 'sweep' without observables samples each point and needs at least one "
                "measurement; add 'measure' or give observables",
                code="no_measurements",
            )

    def _wide(self, job: JobSubmitted, circuit: Circuit) -> bool:
        """A job past the dense-state limits that a tensor-network engine may run."""
        return tensor_network_job(
            job.engine, job.method, job.noise, circuit, self.limits.max_tn_qubits
        )

    def _check_sandbox(self, job: JobSubmitted, circuit: Circuit) -> None:
        """The dense state fits the memory cap (the driver's name was checked on decode)."""
        cap = self.hypervisor.max_memory_mb
        if job.memory_mb is not None and job.memory_mb > 0:
            cap = min(cap, job.memory_mb)
        # Every engine qbus ships holds the dense state vector, whatever the method; a
        # job that cannot fit would only be killed after queueing, so it ends here.
        need = statevector_mb(circuit.num_qubits) + STATE_OVERHEAD_MB
        # ... except a tensor-network engine's: the router judges its contraction cost
        # (the process's own overhead must still fit).
        if need > cap and (cap <= STATE_OVERHEAD_MB or not self._wide(job, circuit)):
            raise Reject(
                f"a {circuit.num_qubits}-qubit state needs about {need:,.0f} MiB "
                f"(16 B x 2^n + {STATE_OVERHEAD_MB} MiB); the memory cap is {cap:,} MiB",
                code="exceeds_memory_cap",
                where="$.memory_mb" if cap == job.memory_mb else None,
            )

    @staticmethod
    def _check_observables(job: JobSubmitted, circuit: Circuit) -> None:
        if not job.observables:
            raise Reject(
                "an 'expectation' job needs at least one observable, e.g. "
                '{"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}]}',
                code="no_observables",
                where="$.observables",
            )
        for i, observable in enumerate(job.observables):
            if not observable.terms:
                raise Reject(
                    f"observable {i} has no terms",
                    code="invalid_observable",
                    where=f"$.observables[{i}].terms",
                )
            for j, term in enumerate(observable.terms):
                for _, qubit in term.factors():
                    if qubit >= circuit.num_qubits:
                        raise Reject(
                            f"observable {i} term {j} ({term.pauli!r}) acts on qubit {qubit}, "
                            f"but the circuit has {circuit.num_qubits}",
                            code="qubit_out_of_range",
                            where=f"$.observables[{i}].terms[{j}].pauli",
                        )
