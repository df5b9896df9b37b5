"""Assemble long jobs: collect chunk results and publish the job's one final event.

Called by the verify stage (``VerifyHandler``) for every ExecutionCompleted /
ExecutionFailed before its usual path:

* a **chunk** result (``chunk`` set) is accepted once into the job's ledger
  (qbus/bus/ledger.py, compare-and-set): a redelivered result, a second result for a
  chunk that already has one, a result of a generation older than the job's (a reroute
  moved the chunk) and any result of a cancelled job are dropped. When the last chunk
  is in, the chunks are joined (a sweep's in point order, a shot-by-shot job's shot
  chunks by summing their counts) into one result, verified like a one-piece job, and
  published as the job's JobCompleted with ``chunk_engines``;
* a **whole-job** result of a generation older than the job's (it was rerouted while
  the old engine ran) is dropped; anything else goes on to the usual verify path.

A chunk's ExecutionFailed of the current generation fails the job (JobFailed, through
the final-event guard).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from qbus.bus.control_watch import ControlWatch
from qbus.bus.jobstate import JobState
from qbus.bus.ledger import ChunkDone, ChunkResult, Ledger, LedgerStore
from qbus.consumers.engine_failure import engine_failed
from qbus.observability import metrics
from qbus.schemas.events import (
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    JobCompleted,
)
from qbus.verifier.chunks import chunk_result, is_shot_chunk, join_chunks

log = logging.getLogger("qbus.assemble")

Complete = Callable[[ExecutionCompleted], Event]
"""Verify one (whole-job) result into its final event: ``VerifyHandler._complete``."""


class Assembler:
    """The verify stage's long-job step.

    Args:
        ledgers: The chunk bucket.
        job_state: Job id → its state (the job-state KV), for whole-job generation checks.
        watch: Jobs with control requests; a whole-job result of a job it vouches for
            cannot be of an older generation, and its state is not read.
    """

    def __init__(
        self,
        ledgers: LedgerStore,
        job_state: Callable[[str], Awaitable[JobState | None]] | None = None,
        watch: ControlWatch | None = None,
    ) -> None:
        self.ledgers = ledgers
        self.job_state = job_state
        self.watch = watch
        self.dropped = 0

    async def start(self) -> None:
        """Start the control watch (before the first result, so it can vouch for it)."""
        if self.watch is not None:
            await self.watch.start()

    async def intercept(self, event: Event, complete: Complete) -> Sequence[Event] | None:
        """The events for ``event`` when this step handles it, or None to go on as usual."""
        if not isinstance(event, ExecutionCompleted | ExecutionFailed):
            return None
        if event.chunk is not None:
            if isinstance(event, ExecutionFailed):
                return await self._chunk_failed(event)
            return await self._chunk_completed(event, complete)
        if self.job_state is not None and not (
            self.watch is not None and await self.watch.vouches_for(event.job_id, event.timestamp)
        ):
            state = await self.job_state(event.job_id)
            if state is not None and state.generation > event.generation:
                self._drop(event, f"generation {event.generation} < job's {state.generation}")
                return []
        return None

    def _drop(self, event: ExecutionCompleted | ExecutionFailed, why: str) -> None:
        self.dropped += 1
        metrics.SUPERSEDED.labels("verify", event.__struct_config__.tag).inc()
        log.info(
            "job %s: dropping %s of chunk %s (%s): %s",
            event.job_id,
            event.__struct_config__.tag,
            event.chunk,
            event.engine,
            why,
        )

    async def _chunk_completed(
        self, event: ExecutionCompleted, complete: Complete
    ) -> Sequence[Event]:
        chunk = event.chunk
        assert chunk is not None and event.chunks is not None
        key = str(chunk)
        verdict: list[str] = []

        def accept(ledger: Ledger | None) -> Ledger | None:
            verdict.clear()
            ledger = ledger or Ledger(chunks=event.chunks or 0, engine=event.engine)
            if (why := _not_current(ledger, event.generation)) is not None:
                verdict.append(why)
                return None
            done = ledger.done.get(key)
            if done is not None:
                verdict.append("same" if done.event_id == event.event_id else "chunk done")
                return None
            accepted = ChunkDone(
                engine=event.engine,
                generation=event.generation,
                event_id=event.event_id,
                # Progress of a shot-chunked job counts shots too (qbus status / watch).
                shots=event.options.shots if is_shot_chunk(event) else 0,
            )
            return msgspec.structs.replace(
                ledger,
                chunks=ledger.chunks or event.chunks or 0,
                done={**ledger.done, key: accepted},
            )

        # The result is stored before it is counted: a crash between the two leaves an
        # unreferenced key, never a counted chunk without its points.
        await self.ledgers.put_result(
            event.job_id,
            chunk,
            chunk_result(event),
        )
        _, after = await self.ledgers.change(event.job_id, accept)
        if verdict and verdict[0] != "same":
            self._drop(event, verdict[0])
            return []
        # Counted now, or counted by an earlier delivery of this very event (a crash
        # before the final event was stored): the last chunk in assembles the job.
        if after is None or not after.complete:
            return []
        return [await self._assemble(event, after, complete)]

    async def _assemble(
        self, last: ExecutionCompleted, ledger: Ledger, complete: Complete
    ) -> Event:
        parts: list[ChunkResult] = []
        for k in range(ledger.chunks):
            done = ledger.done[str(k)]
            parts.append(await self.ledgers.result(last.job_id, k, done.generation))
        engines = list(dict.fromkeys(p.engine for p in parts))
        whole = join_chunks(last, parts, ledger.generation)
        final = complete(whole)
        if isinstance(final, JobCompleted):
            final = msgspec.structs.replace(
                final, chunk_engines={str(k): parts[k].engine for k in range(len(parts))}
            )
        log.info("job %s: %d chunks assembled (%s)", last.job_id, ledger.chunks, ", ".join(engines))
        return final

    async def _chunk_failed(self, event: ExecutionFailed) -> Sequence[Event]:
        verdict: list[str] = []

        def fail(ledger: Ledger | None) -> Ledger | None:
            verdict.clear()
            ledger = ledger or Ledger(chunks=0, engine=event.engine)
            if (why := _not_current(ledger, event.generation)) is not None:
                verdict.append(why)
                return None
            if str(event.chunk) in ledger.done:
                verdict.append("chunk done")
                return None
            return msgspec.structs.replace(ledger, status="failed")

        await self.ledgers.change(event.job_id, fail)
        if verdict and not verdict[0].startswith("job is failed"):
            self._drop(event, verdict[0])
            return []
        return [engine_failed(event, f"chunk {event.chunk}: {event.message}")]


def _not_current(ledger: Ledger, generation: int) -> str | None:
    """Why a chunk result of ``generation`` no longer counts for the job, or None."""
    if ledger.status != "running":
        return f"job is {ledger.status}"
    if generation < ledger.generation:
        return f"generation {generation} < job's {ledger.generation}"
    return None


__all__ = ["Assembler"]
