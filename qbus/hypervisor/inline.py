"""The ``inline`` driver: the engine runs in the executor's own process (trusted, fastest).

Every driver has the same shape — ``run(engine, request, limits) -> EngineResult`` — so
the execute stage does not change when a job asks for stronger isolation.
"""

from __future__ import annotations

from qbus.engines.base import Engine, EngineResult, RunRequest
from qbus.hypervisor.base import RunLimits, Sandbox

__all__ = ["InlineSandbox", "Sandbox"]


class InlineSandbox:
    """No isolation and no limits: the engine runs in this process (``run`` validates).

    Limits are not enforced: a runaway job here holds the executor. It is the default for
    qbus's own engines because it adds nothing to a job's latency.
    """

    name = "inline"

    def run(
        self, engine: Engine, request: RunRequest, limits: RunLimits | None = None
    ) -> EngineResult:
        return engine.run(request)

    def close(self) -> None:
        """Nothing to stop."""
