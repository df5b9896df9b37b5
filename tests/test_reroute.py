"""Long jobs in chunks and backend swap mid-job (issue 5, acceptance 2).

Real nats-server, every stage. A 64-chunk sweep starts on one engine; after some chunks
are in, it is rerouted to another engine, and the final result must hold every chunk
exactly once, equal the one-engine result, and say which chunk ran where.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.js import api as js_api

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.ledger import Ledger, LedgerStore
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.stages import build_stage
from qbus.producers.submit import wait_final
from qbus.router.chunks import chunk_count, chunk_range, split
from qbus.schemas.events import (
    ControlRejected,
    Event,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobOptions,
    Observable,
    Reroute,
    decode,
    new_event_id,
)
from qbus.schemas.ir import Circuit
from qbus.schemas.sweep import SweepPoint
from tests.jobs import QASM2_BELL, job

pytestmark = pytest.mark.timeout(240)

FIRST, SECOND = "qiskit-aer", "cirq"
PROGRAM = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[2] q;
bit[2] c;
ry(theta) q[0];
cx q[0], q[1];
rx(theta / 2) q[1];
c = measure q;
"""
POINTS = [{"theta": 0.05 * i} for i in range(128)]
CHUNK = 2  # 128 points, 2 a chunk: 64 chunks
OBSERVABLES = msgspec.convert(
    [
        {"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}, {"coeff": 0.5, "pauli": "X1"}]},
        {"terms": [{"coeff": 1.0, "pauli": "Z0"}]},
    ],
    list[Observable],
)
STAGES = ("ingest", "rewrite", "route", "verify", "audit", "control")


def sweep_job(engine: str, chunk_size: int | None = CHUNK, **fields: object):
    return job(
        PROGRAM,
        method="sweep",
        engine=engine,
        sweep=POINTS,
        observables=OBSERVABLES,
        chunk_size=chunk_size,
        **fields,
    )


class Executor:
    """One engine's executor stage that a test starts and stops."""

    def __init__(self, config: Config, engine: str, batch: int = 4) -> None:
        self.config, self.engine, self.batch = config, engine, batch
        self.bus: Bus | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> Executor:
        self.bus = await Bus.connect(self.config.bus, name=f"test-execute-{self.engine}")
        self.stage = build_stage("execute", self.bus, self.config, engine=self.engine)
        # Small batches: results come out a few chunks at a time, as in a long job.
        self.stage.batch = self.batch  # type: ignore[attr-defined]
        self.task = asyncio.create_task(self.stage.run())
        return self

    async def stop(self) -> None:
        self.stage.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        if self.bus is not None:
            await self.bus.close()


@contextlib.asynccontextmanager
async def stages(config: Config, bus: Bus) -> AsyncIterator[Pipeline]:
    for engine in (FIRST, SECOND):
        await bus.ensure_executor(engine)
    async with Pipeline(config, stages=STAGES, engines=()) as p:
        yield p
        p.check()


async def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` (async) until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.05)


async def ledger_of(bus: Bus, job_id: str) -> Ledger | None:
    ledger, _ = await LedgerStore(bus.js, bus.config.kv_chunks).read(job_id)
    return ledger


async def log_of(bus: Bus, job_id: str) -> list[tuple[str, Event]]:
    """Every stored event of the job, in log order, those after its final event too."""
    sub = await bus.js.subscribe(
        bus.subjects.result(job_id),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        config=js_api.ConsumerConfig(filter_subjects=bus.subjects.of_job(job_id)),
    )
    out: list[tuple[str, Event]] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=5.0)
            out.append((msg.subject, decode(msg.data)))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def answer_to(bus: Bus, event_id: str, job_id: str) -> Event:
    """The first event in the log caused by ``event_id``."""

    async def find():
        for _, e in await log_of(bus, job_id):
            if e.causation_id == event_id:
                return e
        return None

    return await wait_for(find, 30, f"answer to {event_id}")


# ----------------------------------------------------------------------- pure parts


def test_split_covers_every_point_once_with_whole_sweep_seeds():
    from qbus.engines.sweep import point_seed
    from qbus.schemas.qasm import parse_qasm

    circuit: Circuit = parse_qasm(PROGRAM)[0]
    whole = ExecutionRequested(
        event_id="e1",
        job_id="j1",
        engine=FIRST,
        circuit=circuit,
        circuit_hash="h",
        options=JobOptions(method="sweep", sweep=POINTS[:10], seed=99, chunk_size=3),
    )
    parts = split(whole, default_size=64)
    assert [p.chunk for p in parts] == [0, 1, 2, 3] and {p.chunks for p in parts} == {4}
    assert [pt for p in parts for pt in p.options.sweep] == POINTS[:10]
    for p in parts:
        assert p.options.seed == point_seed(99, p.point_start)
        assert p.options.sweep == POINTS[p.point_start : p.point_stop]
    # Deterministic ids: a redelivered rewrite gives the same chunk ids.
    assert [p.event_id for p in parts] == [p.event_id for p in split(whole, 64)]
    assert len({p.event_id for p in parts}) == 4
    # Small jobs and other methods go out whole.
    assert split(msgspec.structs.replace(whole, options=JobOptions(sweep=POINTS)), 2) == [
        msgspec.structs.replace(whole, options=JobOptions(sweep=POINTS))
    ]
    assert chunk_count(128, 2, 4096) == 64 and chunk_count(128, 2, 10) == 10
    ranges = [chunk_range(10, 3, k) for k in range(3)]
    assert ranges == [(0, 3), (3, 6), (6, 10)]


# ----------------------------------------------------------------------- on the bus


async def test_long_sweep_runs_in_chunks_and_equals_the_one_piece_run(config: Config, bus: Bus):
    async with stages(config, bus):
        runners = [await Executor(config, FIRST, batch=16).start()]
        try:
            chunked, whole = sweep_job(FIRST), sweep_job(FIRST, chunk_size=1000)
            for j in (chunked, whole):
                await bus.publish(j)
            a = await wait_final(bus, chunked.job_id, 120)
            b = await wait_final(bus, whole.job_id, 120)
        finally:
            for r in runners:
                await r.stop()
    assert isinstance(a, JobCompleted), a
    assert isinstance(b, JobCompleted), b
    assert a.verification.verdict == "pass", a.verification.detail
    assert len(a.chunk_engines) == 64 and set(a.chunk_engines.values()) == {FIRST}
    assert b.chunk_engines == {}
    assert len(a.sweep_results) == len(POINTS)
    for x, y in zip(a.sweep_results, b.sweep_results, strict=True):
        assert x.expectations == pytest.approx(y.expectations, abs=1e-9)
    requests = [
        e for _, e in await log_of(bus, chunked.job_id) if isinstance(e, ExecutionRequested)
    ]
    assert sorted(r.chunk for r in requests) == list(range(64))
    ledger = await ledger_of(bus, chunked.job_id)
    assert ledger is not None and ledger.complete and len(ledger.done) == 64


async def test_reroute_mid_sweep_moves_only_the_unfinished_chunks(config: Config, bus: Bus):
    async with stages(config, bus):
        first = await Executor(config, FIRST, batch=4).start()
        second: Executor | None = None
        try:
            j = sweep_job(FIRST)
            await bus.publish(j)

            async def some_done():
                ledger = await ledger_of(bus, j.job_id)
                return ledger is not None and len(ledger.done) >= 8

            await wait_for(some_done, 120, "8 chunks done")
            # The first engine stops mid-job: what it took is finished and published.
            await first.stop()

            async def verify_caught_up():
                ran = sum(isinstance(e, ExecutionCompleted) for _, e in await log_of(bus, j.job_id))
                ledger = await ledger_of(bus, j.job_id)
                return ledger is not None and len(ledger.done) == ran

            await wait_for(verify_caught_up, 60, "verify to count every result")
            second = await Executor(config, SECOND, batch=8).start()
            done_before = set((await ledger_of(bus, j.job_id)).done)
            assert 8 <= len(done_before) < 64
            reroute = Reroute(
                event_id=new_event_id(),
                job_id=j.job_id,
                producer="tests",
                engine=SECOND,
                reason="first engine drained",
            )
            await bus.publish(reroute)
            # A redelivered / republished Reroute is deduped by id.
            await bus.publish(reroute)

            async def bumped():
                state = await bus.job_state(j.job_id)
                return state is not None and state.generation == 1

            await wait_for(bumped, 60, "the reroute to be applied")
            # A slow old executor's late result for a moved chunk: of generation 0, dropped.
            template = next(
                e for _, e in await log_of(bus, j.job_id) if isinstance(e, ExecutionCompleted)
            )
            moved_chunk = min(set(range(64)) - {int(k) for k in done_before})
            late = msgspec.structs.replace(
                template,
                event_id=new_event_id(),
                chunk=moved_chunk,
                sweep_results=[SweepPoint(expectations=[42.0, 42.0])] * 2,
            )
            await bus.publish(late)
            final = await wait_final(bus, j.job_id, 120)
            # The old engine comes back: its gen-0 leftovers are stale and are skipped.
            first = await Executor(config, FIRST, batch=4).start()
            # The same sweep in one piece on one engine, for comparison.
            reference = sweep_job(FIRST, chunk_size=1000)
            await bus.publish(reference)
            one_piece = await wait_final(bus, reference.job_id, 120)
            log = await log_of(bus, j.job_id)
        finally:
            await first.stop()
            if second is not None:
                await second.stop()

    assert isinstance(final, JobCompleted), final
    assert final.verification.verdict == "pass", final.verification.detail
    # Every chunk exactly once, and from the engine its accepted result came from.
    assert sorted(int(k) for k in final.chunk_engines) == list(range(64))
    moved = {k for k, e in final.chunk_engines.items() if e == SECOND}
    stayed = {k for k, e in final.chunk_engines.items() if e == FIRST}
    assert stayed == done_before and moved == {str(k) for k in range(64)} - done_before
    assert final.engine == f"{FIRST}+{SECOND}"
    assert all(p.expectations != [42.0, 42.0] for p in final.sweep_results)
    assert len(final.sweep_results) == len(POINTS)
    assert isinstance(one_piece, JobCompleted)
    for x, y in zip(final.sweep_results, one_piece.sweep_results, strict=True):
        assert x.expectations == pytest.approx(y.expectations, abs=1e-6)

    # No chunk ran twice to completion within a generation; the result used one each.
    completed = [e for _, e in log if isinstance(e, ExecutionCompleted)]
    completed = [e for e in completed if e.event_id != late.event_id]
    per = Counter((e.chunk, e.generation) for e in completed)
    assert max(per.values()) == 1
    assert {e.chunk for e in completed} == set(range(64))
    assert all(e.engine == FIRST for e in completed if e.generation == 0)
    assert all(e.engine == SECOND for e in completed if e.generation == 1)
    # The log shows the switch: the Reroute, and requests on both engines' subjects.
    subjects = [s for s, e in log if isinstance(e, ExecutionRequested)]
    assert any(s.startswith(f"{bus.subjects.prefix}.exec.{FIRST}.") for s in subjects)
    assert any(s.startswith(f"{bus.subjects.prefix}.exec.{SECOND}.") for s in subjects)
    rerouted = [e for _, e in log if isinstance(e, ExecutionRequested) and e.generation == 1]
    assert sorted(str(e.chunk) for e in rerouted) == sorted(moved)
    assert all(e.causation_id == reroute.event_id for e in rerouted)
    assert sum(isinstance(e, Reroute) for _, e in log) == 1
    assert sum(isinstance(e, JobCompleted) for _, e in log) == 1
    state = await bus.job_state(j.job_id)
    assert state is not None and state.status == "completed"


async def test_reroute_a_whole_job_and_refusals(config: Config, bus: Bus):
    async with stages(config, bus):
        # Nothing runs the first engine: the job waits there until it is moved.
        second = await Executor(config, SECOND).start()
        try:
            j = job(QASM2_BELL, engine=FIRST)
            await bus.publish(j)

            async def routed():
                state = await bus.job_state(j.job_id)
                return state is not None and state.status == "routed"

            await wait_for(routed, 60, "routing")
            bad = Reroute(event_id=new_event_id(), job_id=j.job_id, engine="quest")
            await bus.publish(bad)
            refused = await answer_to(bus, bad.event_id, j.job_id)
            assert isinstance(refused, ControlRejected)
            assert refused.code == "engine_not_deployed" and "quest" in refused.message
            move = Reroute(event_id=new_event_id(), job_id=j.job_id, engine=SECOND)
            await bus.publish(move)
            final = await wait_final(bus, j.job_id, 60)
            late = Reroute(event_id=new_event_id(), job_id=j.job_id, engine=FIRST)
            await bus.publish(late)
            after = await answer_to(bus, late.event_id, j.job_id)
        finally:
            await second.stop()
    assert isinstance(final, JobCompleted) and final.engine == SECOND, final
    assert isinstance(after, ControlRejected) and after.code == "job_finished"
    assert final.chunk_engines == {}
