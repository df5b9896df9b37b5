"""Long jobs in chunks: how a ``sweep`` or a shot-by-shot ``sample`` job is split into
ExecutionRequested events.

A sweep with more points than the chunk size becomes ``chunks`` requests, one per chunk,
each carrying only its own points in ``options.sweep`` (so any executor runs a chunk as
an ordinary, smaller sweep) and the chunk's place in the job (``chunk``, ``chunks``,
``point_start``, ``point_stop``). Each chunk's seed is the seed its first point has in
the whole sweep (``point_seed``), so a chunked sampled sweep draws exactly the counts of
the same sweep run in one piece.

A ``sample`` job whose circuit runs shot by shot (``qbus.schemas.ir.shot_by_shot``: its
cost is shots × one run) and whose predicted run time is above ``[chunks]
shot_seconds`` becomes chunks of shots: each carries its own ``options.shots``, its
place (``shot_start``, ``shot_stop``) and its own seed (``shot_seed``: the job's seed for
chunk 0, a distinct one derived from it for the others), so a redelivered or rerouted
chunk draws the same counts, and the joined counts are the same however the chunks were
spread over executors.

The split depends only on the size (points or shots) and the number of chunks
(balanced: chunk ``k`` holds ``k*n//c`` to ``(k+1)*n//c``), so the control stage
recomputes the same ranges and seeds when it republishes a chunk on a reroute. Every
chunk is a ``msgspec.structs.replace`` copy of the whole request: fields this module does
not know about travel with each chunk. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from qbus.engines.sweep import point_seed
from qbus.errors import Reject
from qbus.schemas.events import ExecutionRequested, JobOptions, default_seed, derived_event_id
from qbus.schemas.ir import shot_by_shot

CHUNKED_METHODS = frozenset({"sweep"})
"""Methods whose work splits into independent points (``vqe`` joins when it exists)."""

SHOT_CHUNKED_METHODS = frozenset({"sample"})
"""Methods whose shots split into chunks when the circuit runs shot by shot."""

_MASK31 = (1 << 31) - 1


def _mix31(k: int) -> int:
    """A bijection of the 31-bit integers with 0 → 0 that scatters neighbours far apart."""
    x = k & _MASK31
    x = (x * 0x5BD1E995) & _MASK31  # odd multipliers and xorshifts are invertible
    x ^= x >> 15
    x = (x * 0x27D4EB2D) & _MASK31
    x ^= x >> 13
    return x


def shot_seed(seed: int, chunk: int) -> int:
    """The seed of shot chunk ``chunk`` of a job whose seed is ``seed``.

    Chunk 0 keeps the job's seed (the joined result reports it); the others get the
    seed XOR a scrambled chunk index, so the seeds of one job's chunks are all distinct
    and far apart (engines that seed parallel shot groups ``seed + i`` never draw one
    chunk's stream in another).
    """
    return seed ^ _mix31(chunk)


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


def shot_chunk_count(
    request: ExecutionRequested, shot_seconds: float, min_shots: int, max_chunks: int
) -> int:
    """How many shot chunks ``request`` makes (1: not split).

    Only a ``sample`` job whose circuit runs shot by shot is split, and not one that asks
    for a cross-engine check (the check re-runs the whole job). With a ``chunk_size`` the
    job sets its shots per chunk; else the chunks are sized by the predicted run time to
    about ``shot_seconds`` each, with at least ``min_shots`` shots. Never more chunks
    than ``max_chunks`` or than shots.
    """
    opts = request.options
    if (
        opts.method not in SHOT_CHUNKED_METHODS
        or opts.cross_check
        or opts.shots < 2
        or not shot_by_shot(request.circuit)
    ):
        return 1
    if opts.chunk_size is not None:
        wanted = -(-opts.shots // opts.chunk_size)
    else:
        predicted = request.predicted_seconds
        if predicted is None or predicted <= shot_seconds:
            return 1
        wanted = min(math.ceil(predicted / shot_seconds), opts.shots // min_shots)
    return max(1, min(wanted, max_chunks, opts.shots))


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
    """Chunk ``index`` of the whole-job ``request`` (whose options hold every point or shot).

    A ``sample`` request is cut into shots (``shot_start``/``shot_stop``, its own
    ``shots`` and ``shot_seed``); a sweep into points.
    """
    opts = request.options
    where: dict[str, object]
    if opts.method in SHOT_CHUNKED_METHODS:
        start, stop = chunk_range(opts.shots, chunks, index)
        # A job without a seed (ingest normally fills one in) still gets fixed chunk seeds.
        seed = opts.seed if opts.seed is not None else default_seed(request.job_id)
        options = msgspec.structs.replace(opts, shots=stop - start, seed=shot_seed(seed, index))
        predicted = request.predicted_seconds
        where = {
            "shot_start": start,
            "shot_stop": stop,
            # The chunk's own share of the job's predicted time.
            "predicted_seconds": None
            if predicted is None
            else predicted * (stop - start) / max(opts.shots, 1),
        }
    else:
        start, stop = chunk_range(len(opts.sweep), chunks, index)
        seed = opts.seed if opts.seed is not None else 0
        options = msgspec.structs.replace(
            opts, sweep=list(opts.sweep[start:stop]), seed=point_seed(seed, start)
        )
        where = {"point_start": start, "point_stop": stop}
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
        **where,
    )


def split(
    request: ExecutionRequested,
    default_size: int = 64,
    max_chunks: int = 4096,
    *,
    shot_seconds: float = 5.0,
    min_shots: int = 64,
) -> list[ExecutionRequested]:
    """The route stage's hook: ``request`` as is, or one request per chunk of a long job.

    Chunk ids derive from the whole request's id and the chunk index, so a redelivered
    CircuitRewritten yields the same ids and the server drops the copies.

    Args:
        request: What the router would publish for the whole job (with the cost
            model's ``predicted_seconds``).
        default_size: Points per chunk when a sweep sets no ``chunk_size``.
        max_chunks: Most chunks (a chunk then holds more points or shots).
        shot_seconds: Target run time of a shot chunk (``[chunks] shot_seconds``).
        min_shots: Fewest shots in a shot chunk sized by time (``[chunks] min_shots``).

    Raises:
        Reject: ``invalid_chunk_size`` for a ``chunk_size`` below 1.
    """
    opts = request.options
    if opts.chunk_size is not None and opts.chunk_size < 1:
        raise Reject(
            f"chunk_size must be at least 1 (point or shot), got {opts.chunk_size}",
            code="invalid_chunk_size",
            where="$.chunk_size",
        )
    if wants_chunks(opts, default_size):
        chunks = chunk_count(len(opts.sweep), effective_chunk_size(opts, default_size), max_chunks)
        what = f"{len(opts.sweep)} points"
    else:
        chunks = shot_chunk_count(request, shot_seconds, min_shots, max_chunks)
        if chunks == 1:
            return [request]
        what = f"{opts.shots} shots"
    reason = f"{request.route_reason}; {what} in {chunks} chunks".lstrip("; ")
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
        request: The whole job's request (options holding every point and shot).
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
    "SHOT_CHUNKED_METHODS",
    "chunk_count",
    "chunk_range",
    "chunk_request",
    "effective_chunk_size",
    "rerouted",
    "shot_chunk_count",
    "shot_seed",
    "split",
    "wants_chunks",
]
