"""Per-tenant job limits, checked by ingest (``[tenants.<name>]``, docs/security.md).

A tenant's job is rejected with ``tenant_limit_qubits``, ``tenant_limit_shots`` or
``tenant_concurrency`` when it asks for more than the tenant may. Running jobs are
counted from the job-state KV (``qbus.bus.tenancy.running_jobs``): a job counts from
ingest until its final event.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from qbus.bus.auth import TENANT_PATTERN, is_valid_tenant
from qbus.bus.config import TenantLimits
from qbus.errors import Reject
from qbus.schemas.events import JobSubmitted
from qbus.schemas.ir import Circuit

RunningJobs = Callable[[str, set[str]], Awaitable[set[str]]]
"""``(tenant, also) -> running job ids``: the tenant's jobs from the KV index, plus those
of ``also`` (accepted here, perhaps not yet indexed) that have no final state."""

_RECENT_SECONDS = 60.0


class TenantGate:
    """Checks a submission against its tenant's limits.

    Args:
        limits: Per-tenant limits; a tenant not listed has only the global ``[limits]``.
        running: How to count a tenant's running jobs (needed for ``max_concurrent``).
    """

    def __init__(
        self, limits: dict[str, TenantLimits] | None = None, running: RunningJobs | None = None
    ) -> None:
        self.limits = limits or {}
        self.running = running
        # Jobs this ingest accepted lately: their index keys are written after the whole
        # batch is handled, so a burst in one batch would otherwise not see itself.
        self._recent: dict[str, dict[str, float]] = {}

    async def check(self, job: JobSubmitted, circuit: Circuit) -> None:
        """Raise ``Reject`` when ``job`` is over its tenant's limits.

        Raises:
            Reject: ``invalid_tenant``, ``tenant_limit_qubits``, ``tenant_limit_shots`` or
                ``tenant_concurrency``.
        """
        tenant = job.tenant
        if not tenant:
            return
        if not is_valid_tenant(tenant):
            raise Reject(
                f"tenant {tenant!r} is not a valid name ({TENANT_PATTERN}); publish to "
                "qbus.submit.<tenant>",
                code="invalid_tenant",
            )
        limits = self.limits.get(tenant)
        if limits is None:
            return
        if limits.max_qubits is not None and circuit.num_qubits > limits.max_qubits:
            raise Reject(
                f"tenant {tenant!r} may run circuits of at most {limits.max_qubits} qubits; "
                f"this one has {circuit.num_qubits}",
                code="tenant_limit_qubits",
            )
        if limits.max_shots is not None and job.method == "sample" and job.shots > limits.max_shots:
            raise Reject(
                f"tenant {tenant!r} may ask for at most {limits.max_shots:,} shots per job; "
                f"this job asks for {job.shots:,}",
                code="tenant_limit_shots",
                where="$.shots",
            )
        if limits.max_concurrent is not None and self.running is not None:
            now = time.monotonic()
            recent = self._recent.setdefault(tenant, {})
            for old in [j for j, t in recent.items() if now - t > _RECENT_SECONDS]:
                del recent[old]
            running = await self.running(tenant, set(recent))
            running.discard(job.job_id)  # a redelivered submission is not its own rival
            if len(running) >= limits.max_concurrent:
                raise Reject(
                    f"tenant {tenant!r} already has {len(running)} job(s) running; the "
                    f"limit is {limits.max_concurrent}: submit again when one has finished",
                    code="tenant_concurrency",
                )
            recent[job.job_id] = now
