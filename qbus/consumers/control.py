"""Control: reroute a running job to another engine, or cancel it.

Reads ``qbus.control.*`` (Reroute, Cancel); writes ``qbus.exec.<engine>.<job>``
(ExecutionRequested of the unfinished chunks, new generation), ``qbus.result.<job>``
(JobFailed ``cancelled``) or ``qbus.control.<job>`` (ControlRejected: the request was
refused and the job goes on as before).

**Reroute.** The job's generation is bumped with compare-and-set: first in the chunk
ledger of a long job (so a chunk result is either accepted before the bump, and the
chunk is not republished, or it is of the old generation and dropped), then in the
job-state KV (which executors read before running: a request of an older generation is
skipped). Every chunk without an accepted result is republished to the new engine with
ids derived from the Reroute's id, so a redelivered Reroute is deduped; a Reroute that
was already applied (its id is in the ledger / job state) is not applied again.

**Cancel.** The ledger is marked cancelled (the assembler ignores later results) and the
job ends with JobFailed(code=``cancelled``) through the final-event guard: when the job
already has its final event, the cancel is refused (``job_finished``) and changes
nothing. Executors skip requests of a job whose state is final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import msgspec
from nats.js.errors import NotFoundError

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.control_watch import ControlWatch
from qbus.bus.job_log import logged_events
from qbus.bus.jobstate import FINAL_STATUSES, JobState
from qbus.bus.ledger import JobStates, Ledger, LedgerStore
from qbus.bus.runner import StageRunner
from qbus.engines.registry import available_engines
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.router.capability import capability_filter
from qbus.router.chunks import rerouted
from qbus.schemas.events import (
    Cancel,
    CircuitRewritten,
    ControlRejected,
    Event,
    ExecutionRequested,
    JobFailed,
    Reroute,
    answer,
)

log = logging.getLogger("qbus.control")

Fetch = Callable[[str, str], Awaitable[Event | None]]
"""(kind, job id) → the job's last event of that kind (``exec`` or ``rewritten``)."""


class ControlHandler:
    """Turns Reroute / Cancel into the events that carry them out.

    Args:
        states: Compare-and-set access to the job-state KV.
        ledgers: The chunk ledgers.
        fetch: Reads a job's last ExecutionRequested / CircuitRewritten from the log.
        deployed: Engines with executors on this bus (None: every installed engine).
        memory_cap_mb: The operator's memory cap, for the capability check.
    """

    stage = "control"

    def __init__(
        self,
        states: JobStates,
        ledgers: LedgerStore,
        fetch: Fetch,
        deployed: Callable[[], Awaitable[set[str]]] | None = None,
        memory_cap_mb: int = 32_768,
    ) -> None:
        self.states = states
        self.ledgers = ledgers
        self.fetch = fetch
        self.deployed = deployed
        self.memory_cap_mb = memory_cap_mb

    async def handle(self, event: Event) -> Sequence[Event]:
        match event:
            case Reroute():
                return await self._reroute(event)
            case Cancel():
                return await self._cancel(event)
        return []

    # -- reroute ------------------------------------------------------------------------

    async def _reroute(self, event: Reroute) -> Sequence[Event]:
        state, revision = await self.states.read(event.job_id)
        if state is None or revision is None:
            return [_rejected(event, "unknown_job", "this bus has never seen the job")]
        if state.status in FINAL_STATUSES:
            return [
                _rejected(
                    event, "job_finished", f"the job is already {state.status}; nothing to move"
                )
            ]
        last = await self.fetch("exec", event.job_id)
        if state.status != "routed" or not isinstance(last, ExecutionRequested):
            return [
                _rejected(
                    event,
                    "not_routed",
                    f"the job has not reached an engine yet (status {state.status}); reroute "
                    "it once it is routed, or submit it with the engine you want",
                )
            ]
        whole = await self._whole_request(last)
        problem = await self._engine_problem(event.engine, whole)
        if problem is not None:
            return [_rejected(event, *problem)]
        reason = f"rerouted from {state.engine or last.engine} to {event.engine}" + (
            f": {event.reason}" if event.reason else ""
        )
        if last.chunks is None:
            generation = await self._bump_state(event, state, revision, None)
            if generation is None:
                return [_rejected(event, "job_finished", "the job ended meanwhile")]
            return rerouted(
                whole,
                None,
                [],
                reroute_id=event.event_id,
                generation=generation,
                engine=event.engine,
                reason=reason,
            )
        _, ledger = await self._bump_ledger(event, last, state.generation)
        if ledger is None or ledger.status != "running":
            status = ledger.status if ledger is not None else "unknown"
            return [_rejected(event, "job_finished", f"the job is {status}; nothing to move")]
        unfinished = ledger.unfinished()
        if not unfinished:
            return [
                _rejected(
                    event,
                    "nothing_to_reroute",
                    f"all {ledger.chunks} chunks already have results; the job is finishing",
                )
            ]
        generation = await self._bump_state(event, state, revision, ledger.generation)
        if generation is None:
            return [_rejected(event, "job_finished", "the job ended meanwhile")]
        log.info(
            "job %s: generation %d: %d of %d chunks to %s",
            event.job_id,
            ledger.generation,
            len(unfinished),
            ledger.chunks,
            event.engine,
        )
        return rerouted(
            whole,
            ledger.chunks,
            unfinished,
            reroute_id=event.event_id,
            generation=ledger.generation,
            engine=event.engine,
            reason=f"{reason} ({len(unfinished)} of {ledger.chunks} chunks unfinished)",
        )

    async def _whole_request(self, last: ExecutionRequested) -> ExecutionRequested:
        """The job's request with every point and shot (a chunk's holds only its own)."""
        if last.chunks is None:
            return last
        rewritten = await self.fetch("rewritten", last.job_id)
        if not isinstance(rewritten, CircuitRewritten):
            raise RuntimeError(f"job {last.job_id}: its CircuitRewritten is not in the log")
        predicted = last.predicted_seconds
        if predicted is not None and last.shot_start is not None and last.options.shots:
            # A shot chunk carries its share of the job's prediction: the whole job's back.
            predicted = predicted * rewritten.options.shots / last.options.shots
        return msgspec.structs.replace(
            last,
            options=rewritten.options,
            predicted_seconds=predicted,
            chunk=None,
            chunks=None,
            point_start=None,
            point_stop=None,
            shot_start=None,
            shot_stop=None,
        )

    async def _engine_problem(
        self, engine: str, whole: ExecutionRequested
    ) -> tuple[str, str] | None:
        installed = available_engines()
        if engine not in installed:
            return (
                "engine_not_deployed",
                f"engine {engine!r} is not installed (installed: {', '.join(installed)})",
            )
        if self.deployed is not None:
            deployed = await self.deployed()
            if engine not in deployed:
                return (
                    "engine_not_deployed",
                    f"no executor runs {engine!r} on this bus (engines with executors: "
                    f"{', '.join(sorted(deployed)) or 'none'}); start one with "
                    f"`qbus stage execute --engine {engine}`",
                )
        fit = capability_filter([engine], whole.circuit, whole.options, self.memory_cap_mb)
        if engine not in fit.capable:
            return ("engine_incapable", f"{engine} cannot run this job: {fit.explain()}")
        return None

    async def _bump_ledger(
        self, event: Reroute, last: ExecutionRequested, state_generation: int
    ) -> tuple[Ledger | None, Ledger | None]:
        def bump(ledger: Ledger | None) -> Ledger | None:
            ledger = ledger or Ledger(
                chunks=last.chunks or 0, generation=last.generation, engine=last.engine
            )
            if ledger.status != "running" or ledger.reroute_id == event.event_id:
                # Finished, or this Reroute was applied by an earlier delivery.
                return None
            return msgspec.structs.replace(
                ledger,
                generation=max(ledger.generation, state_generation) + 1,
                engine=event.engine,
                reroute_id=event.event_id,
            )

        return await self.ledgers.change(event.job_id, bump)

    async def _bump_state(
        self, event: Reroute, state: JobState, revision: int, generation: int | None
    ) -> int | None:
        """Compare-and-set the job state to the new generation; None when the job ended.

        ``generation`` is the ledger's (a long job); None bumps the job state's own.
        """
        for _ in range(64):
            if state.status in FINAL_STATUSES:
                return None
            if state.event_id == event.event_id:
                return state.generation  # applied by an earlier delivery
            new = generation if generation is not None else state.generation + 1
            updated = JobState(
                status="routed",
                stage="control",
                engine=event.engine,
                generation=max(new, state.generation),
                event_id=event.event_id,
                updated=time.time(),
            )
            if await self.states.swap(event.job_id, updated, revision):
                return updated.generation
            fresh, fresh_revision = await self.states.read(event.job_id)
            if fresh is None or fresh_revision is None:
                return None
            state, revision = fresh, fresh_revision
        raise RuntimeError(f"job {event.job_id}: too many concurrent state changes")

    # -- cancel -------------------------------------------------------------------------

    async def _cancel(self, event: Cancel) -> Sequence[Event]:
        state, _ = await self.states.read(event.job_id)
        if state is None:
            return [_rejected(event, "unknown_job", "this bus has never seen the job")]
        if state.status in FINAL_STATUSES:
            return [
                _rejected(
                    event,
                    "job_finished",
                    f"the job is already {state.status}; the cancel is a no-op",
                )
            ]

        def cancel(ledger: Ledger | None) -> Ledger | None:
            ledger = ledger or Ledger(chunks=0)
            if ledger.status == "cancelled":
                return None
            return msgspec.structs.replace(ledger, status="cancelled")

        await self.ledgers.change(event.job_id, cancel)
        last = await self.fetch("exec", event.job_id)
        tenant = last.options.tenant if isinstance(last, ExecutionRequested) else ""
        return [
            answer(
                event,
                JobFailed,
                "qbus.control",
                code="cancelled",
                message="cancelled" + (f": {event.reason}" if event.reason else " by request"),
                stage="control",
                tenant=tenant,
            )
        ]


def _rejected(event: Reroute | Cancel, code: str, message: str) -> ControlRejected:
    log.info("job %s: %s refused (%s): %s", event.job_id, _tag(event), code, message)
    return answer(
        event,
        ControlRejected,
        "qbus.control",
        code=code,
        message=message,
        request=_tag(event),
    )


def _tag(event: Event) -> str:
    return event.__struct_config__.tag  # type: ignore[return-value]


class ExecutionGate:
    """Why an executor should not run a request (None: run it): the executors' cheap check.

    A job whose state is final (completed, failed — a cancel ends it so —, rejected)
    needs no more work; a request of an older generation than the job's was rerouted.
    The state is read only for a job the control watch cannot vouch for (one with a
    control request, or a request older than the watch) and for chunks of long jobs,
    which end when one chunk fails: qbus/bus/control_watch.py.

    A final state counts only when ``ended`` confirms it: the state is written by the
    stage that stored a final event, and with stage signatures a forged final event is
    never stored as the job's state, but the bucket is as writable as the log without
    NATS auth (docs/security.md).

    Args:
        states: The job-state bucket.
        watch: The control watch (None: read the state for every request).
        ended: Whether the job has a final event that counts (``job_log.has_final``);
            None: trust the state (no stage keys, nothing to check it by).
    """

    def __init__(
        self,
        states: JobStates,
        watch: ControlWatch | None = None,
        ended: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.states = states
        self.watch = watch
        self.ended = ended

    async def start(self) -> None:
        """Start the watch, before the first request, so that it can vouch for it."""
        if self.watch is not None:
            await self.watch.start()

    async def __call__(self, event: ExecutionRequested) -> str | None:
        if (
            self.watch is not None
            and event.chunk is None
            and await self.watch.vouches_for(event.job_id, event.timestamp)
        ):
            return None
        state, _ = await self.states.read(event.job_id)
        if state is None:
            return None
        if state.status in FINAL_STATUSES:
            if self.ended is not None and not await self.ended(event.job_id):
                log.warning(
                    "job %s is %s with no final event that counts", event.job_id, state.status
                )
                return None
            return f"the job is {state.status}"
        if state.generation > event.generation:
            return f"generation {event.generation} is stale (the job is at {state.generation})"
        return None


async def last_event(bus: Bus, kind: str, job_id: str) -> Event | None:
    """The job's last ExecutionRequested (``kind="exec"``, any engine) or CircuitRewritten;
    with the stages' public keys (``bus.trust``), the last one that counts."""
    s = bus.subjects
    if kind == "exec":
        # Normal-priority requests have one token fewer than high/low ones.
        subjects = [s.exec("*", job_id), f"{s.prefix}.exec.*.*.{job_id}"]
    else:
        subjects = [s.rewritten(job_id)]
    found = []
    for subject in subjects:
        try:
            found.append(await bus.js.get_last_msg(bus.config.stream, subject))
        except NotFoundError:
            continue
    if not found:
        return None
    latest = max(found, key=lambda m: m.seq)
    trust = bus.trust
    forged = trust and trust.message_problem(latest.subject, latest.data, latest.headers)
    if not forged:
        try:
            return decode_event(latest.data)
        except UNDECODABLE:
            return None  # junk stored there (without auth anyone can): no request to read
    # A forged request stored last (qbus/bus/signing.py) must not be republished under
    # control's own signature: the last one that counts, from the job's log.
    log.warning("job %s: skipping a forged %s event (%s)", job_id, kind, forged)
    wanted = ExecutionRequested if kind == "exec" else CircuitRewritten
    real = None
    async for logged in logged_events(bus, job_id, timeout=1.0):
        if isinstance(logged.event, wanted) and logged.forged is None:
            real = logged.event
    return real


def control_stage(bus: Bus, config: Config) -> StageRunner:
    """The control stage on ``bus``: ``qbus stage control``."""
    return StageRunner(
        bus,
        stage="control",
        durable="control",
        subjects=[bus.subjects.control()],
        handler=ControlHandler(
            JobStates(bus.js, bus.config.kv_jobs),
            LedgerStore(bus.js, bus.config.kv_chunks),
            partial(last_event, bus),
            deployed=bus.deployed_engines,
            memory_cap_mb=config.hypervisor.max_memory_mb,
        ),
    )


__all__ = ["ControlHandler", "ExecutionGate", "control_stage", "last_event"]
