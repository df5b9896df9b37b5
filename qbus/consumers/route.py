"""Route: choose an engine and publish the circuit to that engine's subject.

Reads ``qbus.rewritten.*``; writes ``qbus.exec.<engine>.<job>`` (ExecutionRequested) —
the subject is the route, so an executor group only ever sees its own engine's work.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from qbus.engines.registry import available_engines
from qbus.errors import Reject
from qbus.router.capability import route_dynamics, route_noisy
from qbus.router.policy import DEFAULT_ENGINE, choose_engine
from qbus.schemas.events import CircuitRewritten, Event, ExecutionRequested, derived_event_id
from qbus.schemas.noise import is_noisy


class RouteHandler:
    """Turns CircuitRewritten into ExecutionRequested on the chosen engine's subject.

    Args:
        default_engine: Engine for ``engine="auto"`` jobs.
        deployed: Returns the engines that have executors on this bus; a job for an
            installed engine nobody runs is rejected instead of waiting for ever.
    """

    stage = "route"
    DEPLOYED_TTL = 2.0

    def __init__(
        self,
        default_engine: str = DEFAULT_ENGINE,
        deployed: Callable[[], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.default_engine = default_engine
        self._installed = available_engines()
        self._deployed_source = deployed
        self._deployed: set[str] = set()
        self._deployed_at = -1e9

    async def _is_deployed(self, engine: str) -> bool:
        if self._deployed_source is None:
            return True
        now = time.monotonic()
        if engine not in self._deployed or now - self._deployed_at > self.DEPLOYED_TTL:
            self._deployed = await self._deployed_source()
            self._deployed_at = now
        return engine in self._deployed

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, CircuitRewritten):
            return []
        if event.options.engine not in (*self._installed, "auto"):
            # Reading entry points costs milliseconds: only on a name we have not seen.
            self._installed = available_engines()
        engine, reason = choose_engine(event.options.engine, self._installed, self.default_engine)
        opts = event.options
        if is_noisy(opts.noise):
            engine, reason = route_noisy(opts.engine, engine, reason, self._installed)
        if opts.method == "dynamics":
            engine, reason = route_dynamics(opts.engine, engine, reason, self._installed)
        if not await self._is_deployed(engine):
            running = ", ".join(sorted(self._deployed)) or "none"
            raise Reject(
                f"engine {engine!r} is installed but no executor runs it on this bus "
                f"(engines with executors: {running}); start one with "
                f"`qbus stage execute --engine {engine}` or `qbus up --engine {engine}`",
                code="engine_not_deployed",
                where="$.engine",
            )
        return [
            ExecutionRequested(
                event_id=derived_event_id(event.event_id, "execution.requested"),
                job_id=event.job_id,
                causation_id=event.event_id,
                producer="qbus.route",
                engine=engine,
                circuit=event.circuit,
                circuit_hash=event.circuit_hash,
                options=event.options,
                route_reason=reason,
            )
        ]
