"""Long jobs in chunks: how a ``sweep`` is split into ExecutionRequested events.

A sweep with more points than the chunk size becomes ``chunks`` requests, one per chunk,
each carrying only its own points in ``options.sweep`` (so any executor runs a chunk as
an ordinary, smaller sweep) and the chunk's place in the job (``chunk``, ``chunks``,
``point_start``, ``point_stop``). Each chunk's seed is the seed its first point has in
the whole sweep (``point_seed``), so a chunked sampled sweep draws exactly the counts of
the same sweep run in one piece.

The split depends only on the number of points and the number of chunks (balanced:
chunk ``k`` holds points ``k*n//c`` to ``(k+1)*n//c``), so the control stage recomputes
the same ranges when it republishes a chunk on a reroute. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from qbus.engines.sweep import point_seed
from qbus.errors import Reject
from qbus.schemas.events import ExecutionRequested, JobOptions, derived_event_id

CHUNKED_METHODS = frozenset({"sweep"})
"""Methods whose work splits into independent points (``vqe`` joins when it exists)."""


def chunk_count(points: int, chunk_size: int, max_chunks: int) -> int:
    """How many chunks ``points`` points make at ``chunk_size`` a chunk (at most ``max_chunks``)."""
    if points <= 0:
        return 1
    return max(1, min(-(-points // chunk_size), max_chunks))


def chunk_range(points: int, chunks: int, index: int) -> tuple[int, int]:
    """The points ``[start, stop)`` of chunk ``index`` of ``chunks``."""
    return index * points // chunks, (index + 1) * points // chunks


def effective_chunk_size(options: JobOptions, default: int) -> int:
    """The job's ``chunk_size`` when it sets a usable one, else ``default``."""
    size = options.chunk_size
    return size if size is not None and size >= 1 else default


def wants_chunks(options: JobOptions, default_size: int) -> bool:
    """True when the job is a long job: a chunkable method with more points than a chunk."""
    return options.method in CHUNKED_METHODS and len(options.sweep) > effective_chunk_size(
        options, default_size
    )


def chunk_request(
    request: ExecutionRequested,
    chunks: int,
    index: int,
    *,
    event_id: str,
    generation: int,
    engine: str,
    causation_id: str,
    producer: str,
    route_reason: str,
) -> ExecutionRequested:
    """Chunk ``index`` of the whole-job ``request`` (whose options hold every point)."""
    opts = request.options
    start, stop = chunk_range(len(opts.sweep), chunks, index)
    seed = opts.seed if opts.seed is not None else 0
    options = msgspec.structs.replace(
        opts, sweep=list(opts.sweep[start:stop]), seed=point_seed(seed, start)
    )
    return msgspec.structs.replace(
        request,
        event_id=event_id,
        causation_id=causation_id,
        producer=producer,
        engine=engine,
        options=options,
        generation=generation,
        route_reason=route_reason,
        chunk=index,
        chunks=chunks,
        point_start=start,
        point_stop=stop,
    )


def split(
    request: ExecutionRequested, default_size: int = 64, max_chunks: int = 4096
) -> list[ExecutionRequested]:
    """The route stage's hook: ``request`` as is, or one request per chunk of a long job.

    Chunk ids derive from the whole request's id and the chunk index, so a redelivered
    CircuitRewritten yields the same ids and the server drops the copies.

    Args:
        request: What the router would publish for the whole job.
        default_size: Points per chunk when the job sets no ``chunk_size``.
        max_chunks: Most chunks (a chunk then holds more points).

    Raises:
        Reject: ``invalid_chunk_size`` for a ``chunk_size`` below 1.
    """
    opts = request.options
    if opts.chunk_size is not None and opts.chunk_size < 1:
        raise Reject(
            f"chunk_size must be at least 1 point, got {opts.chunk_size}",
            code="invalid_chunk_size",
            where="$.chunk_size",
        )
    if not wants_chunks(opts, default_size):
        return [request]
    size = effective_chunk_size(opts, default_size)
    chunks = chunk_count(len(opts.sweep), size, max_chunks)
    reason = f"{request.route_reason}; {len(opts.sweep)} points in {chunks} chunks".lstrip("; ")
    return [
        chunk_request(
            request,
            chunks,
            k,
            event_id=derived_event_id(
                request.event_id, "execution.requested.chunk", k, job_id=request.job_id
            ),
            generation=request.generation,
            engine=request.engine,
            causation_id=request.causation_id or request.event_id,
            producer=request.producer,
            route_reason=reason,
        )
        for k in range(chunks)
    ]


def rerouted(
    request: ExecutionRequested,
    chunks: int | None,
    unfinished: Iterable[int],
    *,
    reroute_id: str,
    generation: int,
    engine: str,
    reason: str,
) -> list[ExecutionRequested]:
    """The requests a Reroute publishes: every unfinished chunk (or the whole job) on ``engine``.

    Ids derive from the Reroute's id and the chunk, so a redelivered Reroute is deduped.

    Args:
        request: The whole job's request (options holding every point).
        chunks: The job's chunk count (None: the job is not chunked).
        unfinished: Chunks without an accepted result.
        reroute_id: The Reroute event's id.
        generation: The job's new generation.
        engine: The engine to move to.
        reason: Why (goes into ``route_reason``).
    """
    if chunks is None:
        return [
            msgspec.structs.replace(
                request,
                event_id=derived_event_id(reroute_id, "execution.requested", job_id=request.job_id),
                causation_id=reroute_id,
                producer="qbus.control",
                engine=engine,
                generation=generation,
                route_reason=reason,
            )
        ]
    return [
        chunk_request(
            request,
            chunks,
            k,
            event_id=derived_event_id(
                reroute_id, "execution.requested.chunk", k, job_id=request.job_id
            ),
            generation=generation,
            engine=engine,
            causation_id=reroute_id,
            producer="qbus.control",
            route_reason=reason,
        )
        for k in sorted(unfinished)
    ]


__all__ = [
    "CHUNKED_METHODS",
    "chunk_count",
    "chunk_range",
    "chunk_request",
    "effective_chunk_size",
    "rerouted",
    "split",
    "wants_chunks",
]
