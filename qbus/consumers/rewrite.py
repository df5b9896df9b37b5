"""Rewrite: deterministic optimisation passes, with before/after gate counts and depth.

Reads ``qbus.ingested.*``; writes ``qbus.rewritten.<job>``. A job with
``optimize=false`` passes through unchanged (its report lists no passes). A job with
``ai_optimize=true`` then asks the AI assistant for a rewrite of that result, used only
when proven equivalent and not worse (``qbus.ai.rewrite``); ``CircuitRewritten.ai``
records the proposal, the check and the verdict, and the job never fails because of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from qbus.ai.rewrite import AiRewriter
from qbus.bus.config import AiConfig, Limits
from qbus.observability import tracing
from qbus.passes import optimize
from qbus.schemas.ai import AiRewriteReport
from qbus.schemas.events import (
    CircuitIngested,
    CircuitRewritten,
    Event,
    PassReport,
    answer,
)
from qbus.schemas.ir import circuit_hash, stats


class RewriteHandler:
    """Turns CircuitIngested into CircuitRewritten.

    Args:
        ai: The AI assistant's settings, for ``ai_optimize`` jobs (default: a local Ollama).
        limits: Ingest limits, which the model's program must meet too.
    """

    stage = "rewrite"

    def __init__(self, ai: AiConfig | None = None, limits: Limits | None = None) -> None:
        self.ai = ai or AiConfig()
        self.limits = limits or Limits()

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, CircuitIngested):
            return []
        circuit, passes = event.circuit, []
        if event.options.optimize:
            with tracing.span("qbus.rewrite passes", {"qbus.ops": len(circuit.ops)}) as span:
                circuit, passes = optimize(event.circuit)
                tracing.set_attributes(span, {"qbus.ops_after": len(circuit.ops)})
        ai: AiRewriteReport | None = None
        if event.options.ai_optimize:
            proposed, ai = await AiRewriter(self.ai, self.limits).rewrite(circuit)
            if proposed is not None:
                removed = stats(circuit).gates - stats(proposed).gates
                passes = [*passes, PassReport(name="ai_rewrite", removed=removed)]
                circuit = proposed
        return [
            answer(
                event,
                CircuitRewritten,
                "qbus.rewrite",
                circuit=circuit,
                circuit_hash=circuit_hash(circuit) if passes else event.circuit_hash,
                original_hash=event.circuit_hash,
                options=event.options,
                before=event.stats,
                after=stats(circuit) if passes else event.stats,
                passes=passes,
                ai=ai,
            )
        ]
