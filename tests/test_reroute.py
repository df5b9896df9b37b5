"""Long jobs in chunks and backend swap mid-job (issue 5, acceptance 2).

Real nats-server, every stage. A 64-chunk sweep starts on one engine; after some chunks
are in, it is rerouted to another engine, and the final result must hold every chunk
exactly once, equal the one-engine result, and say which chunk ran where.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.errors import Reject
from qbus.producers.submit import wait_final
from qbus.router.chunks import chunk_count, chunk_range, split
from qbus.schemas.events import (
    ControlRejected,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobOptions,
    Reroute,
    new_event_id,
)
from qbus.schemas.ir import Circuit
from qbus.schemas.sweep import SweepPoint
from tests.jobs import QASM2_BELL, job
from tests.longjobs import (
    FIRST,
    POINTS,
    PROGRAM,
    SECOND,
    Executor,
    answer_to,
    ledger_of,
    log_of,
    stages,
    sweep_job,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)


# ----------------------------------------------------------------------- pure parts


def test_split_covers_every_point_once_with_whole_sweep_seeds():
    from qbus.engines.sweep import point_seed
    from qbus.frontends.qasm import parse_qasm

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
    with pytest.raises(Reject) as info:
        split(msgspec.structs.replace(whole, options=JobOptions(method="sweep", chunk_size=0)))
    assert info.value.code == "invalid_chunk_size" and info.value.where == "$.chunk_size"
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
    # The audit checks the assembled result's hash and finds nothing wrong.
    from qbus.verifier.log_audit import audit_log

    report, _ = await audit_log(bus)
    assert not [p for p in report.problems if p.job_id == chunked.job_id], report.problems


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


async def test_assembler_counts_each_chunk_once_and_drops_stale_results(bus: Bus):
    from qbus.bus.ledger import LedgerStore
    from qbus.consumers.assemble import Assembler
    from qbus.consumers.execute import ExecuteHandler
    from qbus.consumers.verify import VerifyHandler
    from qbus.frontends.qasm import parse_qasm

    circuit: Circuit = parse_qasm(PROGRAM)[0]
    whole = ExecutionRequested(
        event_id=new_event_id(),
        job_id="assemble-1",
        engine="reference",
        circuit=circuit,
        circuit_hash="sha256:" + "00" * 32,
        options=JobOptions(method="sweep", sweep=POINTS[:6], seed=5, chunk_size=2),
    )
    parts = split(whole)
    executor = ExecuteHandler("reference", None)
    results = [(await executor.handle(p))[0] for p in parts]
    assert all(
        isinstance(r, ExecutionCompleted) and r.chunk == p.chunk
        for r, p in zip(results, parts, strict=True)
    )
    store = LedgerStore(bus.js, bus.config.kv_chunks)
    assembler = Assembler(store)
    complete = VerifyHandler()._complete
    assert await assembler.intercept(results[0], complete) == []
    assert await assembler.intercept(results[0], complete) == []  # redelivered
    ledger, _ = await store.read("assemble-1")
    assert ledger is not None and list(ledger.done) == ["0"]
    # A reroute bumps the generation: a result of generation 0 is stale from then on.
    await store.change("assemble-1", lambda led: msgspec.structs.replace(led, generation=1))
    assert await assembler.intercept(results[1], complete) == []
    assert assembler.dropped == 1
    moved = [msgspec.structs.replace(r, event_id=new_event_id(), generation=1) for r in results[1:]]
    assert await assembler.intercept(moved[0], complete) == []
    (final,) = await assembler.intercept(moved[1], complete)
    # The last chunk's redelivery (a crash before the final event was stored) gives the
    # same final event, which the server's dedupe then drops.
    (again,) = await assembler.intercept(moved[1], complete)
    assert isinstance(final, JobCompleted) and again.event_id == final.event_id
    assert final.chunk_engines == {"0": "reference", "1": "reference", "2": "reference"}
    assert final.verification.verdict == "pass"
    one_piece = (await executor.handle(whole))[0]
    assert final.sweep_results == one_piece.sweep_results
    assert final.seed == one_piece.seed == 5


async def test_a_redelivered_reroute_is_applied_once(config: Config, bus: Bus):
    from functools import partial

    from qbus.bus.ledger import JobStates, LedgerStore
    from qbus.consumers.control import ControlHandler, last_event

    async with stages(config, bus):
        # Nothing runs either engine: the job stays where the handler leaves it.
        j = sweep_job(FIRST)
        await bus.publish(j)

        async def routed():
            state = await bus.job_state(j.job_id)
            return state is not None and state.status == "routed"

        await wait_for(routed, 60, "routing")
        handler = ControlHandler(
            JobStates(bus.js, bus.config.kv_jobs),
            LedgerStore(bus.js, bus.config.kv_chunks),
            partial(last_event, bus),
            deployed=bus.deployed_engines,
        )
        move = Reroute(event_id=new_event_id(), job_id=j.job_id, engine=SECOND)
        first = await handler.handle(move)
        second = await handler.handle(move)
        other = await handler.handle(
            Reroute(event_id=new_event_id(), job_id=j.job_id, engine=FIRST)
        )
        state = await bus.job_state(j.job_id)
    assert len(first) == 64 and all(isinstance(e, ExecutionRequested) for e in first)
    assert {e.generation for e in first} == {1} and {e.engine for e in first} == {SECOND}
    assert [e.event_id for e in second] == [e.event_id for e in first]
    assert [e.generation for e in second] == [1] * 64
    # A second, different reroute is a new generation.
    assert {e.generation for e in other} == {2} and {e.engine for e in other} == {FIRST}
    assert state is not None and state.generation == 2 and state.engine == FIRST
    # Every chunk is republished with its whole-sweep points.
    assert [p for e in first for p in e.options.sweep] == POINTS


async def test_reroute_while_the_first_engine_keeps_running(config: Config, bus: Bus):
    # No pause this time: the first engine races the reroute. Which chunks stay is up
    # to timing; that every chunk is used once, from one run, is not.
    async with stages(config, bus):
        first = await Executor(config, FIRST, batch=4).start()
        second = await Executor(config, SECOND, batch=4).start()
        try:
            j = sweep_job(FIRST)
            await bus.publish(j)

            async def some_done():
                ledger = await ledger_of(bus, j.job_id)
                return ledger is not None and len(ledger.done) >= 4

            await wait_for(some_done, 120, "4 chunks done")
            reroute = Reroute(event_id=new_event_id(), job_id=j.job_id, engine=SECOND)
            await bus.publish(reroute)
            final = await wait_final(bus, j.job_id, 120)
            reference = sweep_job(SECOND, chunk_size=1000)
            await bus.publish(reference)
            one_piece = await wait_final(bus, reference.job_id, 120)
            log = await log_of(bus, j.job_id)
        finally:
            await first.stop()
            await second.stop()
    assert isinstance(final, JobCompleted), final
    assert isinstance(one_piece, JobCompleted), one_piece
    assert sorted(int(k) for k in final.chunk_engines) == list(range(64))
    for x, y in zip(final.sweep_results, one_piece.sweep_results, strict=True):
        assert x.expectations == pytest.approx(y.expectations, abs=1e-6)
    completed = [e for _, e in log if isinstance(e, ExecutionCompleted)]
    assert max(Counter((e.chunk, e.generation) for e in completed).values()) == 1
    ledger = await ledger_of(bus, j.job_id)
    assert ledger is not None
    if ledger.generation == 1:  # the reroute came before the last chunk was counted
        for k, engine in final.chunk_engines.items():
            assert engine == (FIRST if ledger.done[k].generation == 0 else SECOND)
    else:
        assert set(final.chunk_engines.values()) == {FIRST}
    assert sum(isinstance(e, JobCompleted) for _, e in log) == 1


async def test_chunk_bucket_takes_its_ttl_from_the_config(config: Config):
    from qbus.bus.config import ChunksConfig

    with pytest.raises(ValueError, match="ttl_days"):
        ChunksConfig(ttl_days=-1)
    assert ChunksConfig().ttl_seconds == 30 * 86_400.0
    two_days = msgspec.structs.replace(config, chunks=ChunksConfig(ttl_days=2))
    async with Pipeline(two_days, stages=("ingest",)), await Bus.connect(config.bus) as bus:
        status = await (await bus.js.key_value(bus.config.kv_chunks)).status()
        cache = await (await bus.js.key_value(bus.config.kv_cache)).status()
    assert status.ttl == pytest.approx(2 * 86_400.0)
    assert cache.ttl == pytest.approx(config.cache.ttl_seconds)
