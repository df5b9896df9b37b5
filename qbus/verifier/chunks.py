"""Joining a long job's chunk results into the one result of the job.

Pure functions over events, used by the assembler stage (qbus/consumers/assemble.py)
and re-used by the audit and replay (qbus/verifier/audit_checks.py, replay.py), so an
assembled result is re-derived exactly the way it was made. They live here, below the
stages, because the audit must not import a stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from qbus.bus.ledger import ChunkResult
from qbus.schemas.events import ExecutionCompleted


def chunk_result(event: ExecutionCompleted) -> ChunkResult:
    """What the ledger keeps of one chunk's result (its points, as its engine ran them)."""
    return ChunkResult(
        engine=event.engine,
        engine_version=event.engine_version,
        generation=event.generation,
        event_id=event.event_id,
        seed=event.seed,
        run_seconds=event.run_seconds,
        sweep=list(event.options.sweep),
        sweep_results=list(event.sweep_results or []),
    )


def join_chunks(
    last: ExecutionCompleted, parts: Sequence[ChunkResult], generation: int
) -> ExecutionCompleted:
    """The whole job's result: every chunk's points joined in point order.

    Pure, so the audit re-derives an assembled result exactly the way the assembler
    made it.

    Args:
        last: The chunk result that completed the job (the base of the joined event).
        parts: One accepted result per chunk, in chunk order.
        generation: The job's generation when it was assembled.
    """
    engines = list(dict.fromkeys(p.engine for p in parts))
    versions = list(dict.fromkeys(p.engine_version for p in parts))
    return msgspec.structs.replace(
        last,
        engine="+".join(engines),
        engine_version="+".join(versions),
        # Chunk 0 starts at point 0: its seed is the job's.
        seed=parts[0].seed,
        options=msgspec.structs.replace(
            last.options,
            sweep=[point for p in parts for point in p.sweep],
            seed=parts[0].seed,
        ),
        sweep_results=[point for p in parts for point in p.sweep_results],
        run_seconds=sum(p.run_seconds for p in parts),
        generation=generation,
        chunk=None,
        chunks=None,
        point_start=None,
        point_stop=None,
    )


__all__ = ["chunk_result", "join_chunks"]
