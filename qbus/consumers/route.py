"""Route: choose an engine and publish the circuit to that engine's subject.

Reads ``qbus.rewritten.*``; writes ``qbus.exec.<engine>.<job>`` (ExecutionRequested) —
the subject is the route, so an executor group only ever sees its own engine's work.
"""

from __future__ import annotations

from collections.abc import Sequence

from qbus.engines.registry import available_engines
from qbus.router.policy import DEFAULT_ENGINE, choose_engine
from qbus.schemas.events import CircuitRewritten, Event, ExecutionRequested, derived_event_id


class RouteHandler:
    """Turns CircuitRewritten into ExecutionRequested on the chosen engine's subject.

    Args:
        default_engine: Engine for ``engine="auto"`` jobs.
    """

    stage = "route"

    def __init__(self, default_engine: str = DEFAULT_ENGINE) -> None:
        self.default_engine = default_engine
        self._installed = available_engines()

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, CircuitRewritten):
            return []
        if event.options.engine not in (*self._installed, "auto"):
            # Reading entry points costs milliseconds: only on a name we have not seen.
            self._installed = available_engines()
        engine, reason = choose_engine(event.options.engine, self._installed, self.default_engine)
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
