"""Rewrite: deterministic optimisation passes, with before/after gate counts and depth.

Reads ``qbus.ingested.*``; writes ``qbus.rewritten.<job>``. A job with
``optimize=false`` passes through unchanged (its report lists no passes).
"""

from __future__ import annotations

from collections.abc import Sequence

from qbus.passes import optimize
from qbus.schemas.events import CircuitIngested, CircuitRewritten, Event, derived_event_id
from qbus.schemas.ir import circuit_hash, stats


class RewriteHandler:
    """Turns CircuitIngested into CircuitRewritten."""

    stage = "rewrite"

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, CircuitIngested):
            return []
        circuit, passes = event.circuit, []
        if event.options.optimize:
            circuit, passes = optimize(event.circuit)
        return [
            CircuitRewritten(
                event_id=derived_event_id(event.event_id, "circuit.rewritten"),
                job_id=event.job_id,
                causation_id=event.event_id,
                producer="qbus.rewrite",
                circuit=circuit,
                circuit_hash=circuit_hash(circuit) if passes else event.circuit_hash,
                original_hash=event.circuit_hash,
                options=event.options,
                before=event.stats,
                after=stats(circuit) if passes else event.stats,
                passes=passes,
            )
        ]
