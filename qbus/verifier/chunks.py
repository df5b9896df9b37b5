"""Joining a long job's chunk results into the one result of the job.

Pure functions over events, used by the assembler stage (qbus/consumers/assemble.py)
and re-used by the audit and replay (qbus/verifier/audit_checks.py, replay.py), so an
assembled result is re-derived exactly the way it was made. They live here, below the
stages, because the audit must not import a stage.

A sweep's chunks are joined in point order; a shot-by-shot ``sample`` job's shot chunks
(``shot_start`` set) by summing their counts: the joined result has the job's shots and
the job's seed (chunk 0's), and its result hash is the hash of those joined counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from qbus.bus.ledger import ChunkResult
from qbus.schemas.events import ExecutionCompleted


def is_shot_chunk(event: ExecutionCompleted) -> bool:
    """True for a chunk of shots (a sweep's chunk holds points instead)."""
    return event.shot_start is not None


def chunk_result(event: ExecutionCompleted) -> ChunkResult:
    """What the ledger keeps of one chunk's result (its points or counts, as its engine
    ran them)."""
    if is_shot_chunk(event):
        part = {"shots": event.options.shots, "counts": dict(event.counts or {})}
    else:
        part = {
            "sweep": list(event.options.sweep),
            "sweep_results": list(event.sweep_results or []),
        }
    return ChunkResult(
        engine=event.engine,
        engine_version=event.engine_version,
        generation=event.generation,
        event_id=event.event_id,
        seed=event.seed,
        run_seconds=event.run_seconds,
        **part,
    )


def summed_counts(parts: Sequence[ChunkResult]) -> dict[str, int]:
    """Every chunk's counts added up, bitstrings in sorted order."""
    total: dict[str, int] = {}
    for part in parts:
        for bits, n in (part.counts or {}).items():
            total[bits] = total.get(bits, 0) + n
    return dict(sorted(total.items()))


def join_chunks(
    last: ExecutionCompleted, parts: Sequence[ChunkResult], generation: int
) -> ExecutionCompleted:
    """The whole job's result: every chunk's points joined in point order, or every shot
    chunk's counts summed.

    Pure, so the audit re-derives an assembled result exactly the way the assembler
    made it.

    Args:
        last: The chunk result that completed the job (the base of the joined event).
        parts: One accepted result per chunk, in chunk order.
        generation: The job's generation when it was assembled.
    """
    engines = list(dict.fromkeys(p.engine for p in parts))
    versions = list(dict.fromkeys(p.engine_version for p in parts))
    # Chunk 0 starts at point (or shot) 0: its seed is the job's.
    seed = parts[0].seed
    if is_shot_chunk(last):
        shots = sum(p.shots for p in parts)
        return msgspec.structs.replace(
            last,
            engine="+".join(engines),
            engine_version="+".join(versions),
            seed=seed,
            options=msgspec.structs.replace(last.options, shots=shots, seed=seed),
            counts=summed_counts(parts),
            run_seconds=sum(p.run_seconds for p in parts),
            generation=generation,
            chunk=None,
            chunks=None,
            shot_start=None,
            shot_stop=None,
        )
    return msgspec.structs.replace(
        last,
        engine="+".join(engines),
        engine_version="+".join(versions),
        seed=seed,
        options=msgspec.structs.replace(
            last.options,
            sweep=[point for p in parts for point in p.sweep],
            seed=seed,
        ),
        sweep_results=[point for p in parts for point in p.sweep_results],
        run_seconds=sum(p.run_seconds for p in parts),
        generation=generation,
        chunk=None,
        chunks=None,
        point_start=None,
        point_stop=None,
    )


__all__ = ["chunk_result", "is_shot_chunk", "join_chunks", "summed_counts"]
