"""``qbus audit verify`` and ``qbus audit replay`` of cached and chunked jobs.

A cached JobCompleted (answered by the route stage from the result cache) is checked
against the original job's result in the log; an assembled JobCompleted (a sweep run in
chunks) is re-derived from its chunks' ExecutionCompleted events. Both run on a real
nats-server with every stage, and are tampered with the way tests/test_audit_verify.py
does it (a doctored copy of the log, re-chained by a fresh auditor).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.execute import ExecuteHandler
from qbus.consumers.pipeline import Pipeline
from qbus.producers.submit import wait_final
from qbus.schemas.events import ExecutionCompleted, JobCompleted, Reroute, encode, new_event_id
from qbus.schemas.sweep import SweepPoint
from qbus.verifier.log_audit import verify_log
from qbus.verifier.replay import replay_job
from tests.jobs import QASM2_BELL, job, run_jobs
from tests.longjobs import (
    FIRST,
    OBSERVABLES,
    PROGRAM,
    SECOND,
    Executor,
    ledger_of,
    log_of,
    stages,
    sweep_job,
    wait_for,
)
from tests.test_audit_verify import (
    Stored,
    first,
    problem_at,
    qbus_cli,
    restore_copy,
    shifted,
    stored_log,
    with_counts,
)

pytestmark = pytest.mark.timeout(180)

POINTS = [{"theta": 0.1 * i} for i in range(12)]
CHUNK = 3  # 12 points, 3 a chunk: 4 chunks


async def _flushed(bus: Bus, pipeline: Pipeline) -> None:
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    await pipeline.stages["audit"].flushed_to(last)


async def _cache_filled(bus: Bus) -> None:
    kv = await bus.js.key_value(bus.config.kv_cache)
    for _ in range(500):
        try:
            if await kv.keys():
                return
        except Exception as exc:  # nats-py raises NoKeysError for an empty bucket
            if type(exc).__name__ != "NoKeysError":
                raise
        await asyncio.sleep(0.02)
    raise AssertionError("the first result was never cached")


async def run_cached(bus: Bus, pipeline: Pipeline) -> tuple[JobCompleted, JobCompleted]:
    """A seeded job, then the same job again: answered from the cache."""
    (original,) = await run_jobs(bus, [job(QASM2_BELL, shots=400, seed=21)])
    assert isinstance(original, JobCompleted) and not original.cached
    await _cache_filled(bus)
    (cached,) = await run_jobs(bus, [job(QASM2_BELL, shots=400, seed=21)])
    assert isinstance(cached, JobCompleted) and cached.cached, cached
    assert cached.cached_from == original.job_id
    await _flushed(bus, pipeline)
    return original, cached


async def run_chunked(bus: Bus, pipeline: Pipeline) -> JobCompleted:
    """A 12-point sweep in 4 chunks of 3, assembled by the verify stage."""
    (final,) = await run_jobs(
        bus,
        [
            job(
                PROGRAM,
                method="sweep",
                engine="qiskit-aer",
                sweep=POINTS,
                observables=OBSERVABLES,
                chunk_size=CHUNK,
            )
        ],
        timeout=120,
    )
    assert isinstance(final, JobCompleted), final
    assert len(final.chunk_engines) == len(POINTS) // CHUNK
    await _flushed(bus, pipeline)
    return final


def chunk_events(log: list[Stored], job_id: str) -> list[Stored]:
    return [
        s
        for s in log
        if isinstance(s.event, ExecutionCompleted)
        and s.event.job_id == job_id
        and s.event.chunk is not None
    ]


# -- cached results ----------------------------------------------------------------------


async def test_cached_job_passes_verify_and_replays_its_original_run(
    bus: Bus, pipeline: Pipeline, config: Config
):
    original, cached = await run_cached(bus, pipeline)
    report = await verify_log(bus)
    assert report.ok, report.problems
    assert report.results_checked == 2

    replay = await replay_job(bus, cached.job_id, config, executor=ExecuteHandler)
    assert replay.status == "match" and replay.ok, replay.detail
    assert replay.cached_from == original.job_id
    assert replay.replay_hash == replay.recorded_hash == cached.result_hash
    assert replay.published_hash == cached.result_hash
    assert f"cached from job {original.job_id}" in replay.detail
    log = await stored_log(bus)
    assert replay.final_seq == first(log, JobCompleted, cached.job_id).seq
    assert replay.recorded_seq == first(log, ExecutionCompleted, original.job_id).seq

    out = await asyncio.to_thread(qbus_cli, "audit", "replay", cached.job_id, url=config.bus.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"replay MATCH: job {cached.job_id}")
    assert f"cached from {original.job_id}" in out.stdout


async def test_altered_cached_result_is_reported_against_its_original(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    """Counts of the cached JobCompleted forged, its hash recomputed, the chain rebuilt:
    only the comparison with the original job's result catches it."""
    original, cached = await run_cached(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    victim = first(log, JobCompleted, cached.job_id)
    source = first(log, JobCompleted, original.job_id)
    forged = shifted(cached.counts)

    def edit(stored: Stored) -> bytes:
        if stored.seq == victim.seq:
            return encode(with_counts(stored.event, forged))
        return stored.data

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            report = await verify_log(restored)
            replay = await replay_job(restored, cached.job_id, executor=ExecuteHandler)
    assert [p.check for p in report.problems] == ["cache_mismatch"]
    p = report.problems[0]
    assert (p.seq, p.type, p.event_id) == (victim.seq, "job.completed", victim.event.event_id)
    assert p.related_seq == source.seq
    assert original.job_id in p.message and "counts (" in p.message
    assert replay.status == "mismatch" and not replay.ok
    assert any(d.startswith("cached counts") for d in replay.differences), replay.differences


async def test_cached_result_whose_original_is_gone_is_reported(
    bus: Bus, pipeline: Pipeline, config: Config
):
    original, cached = await run_cached(bus, pipeline)
    log = await stored_log(bus)
    gone = first(log, JobCompleted, original.job_id)
    victim = first(log, JobCompleted, cached.job_id)
    await bus.js.delete_msg(config.bus.stream, gone.seq)
    report = await verify_log(bus)
    assert not report.ok
    assert problem_at(report, gone.seq, "chain_deleted")
    missing = problem_at(report, victim.seq, "cache_origin_missing")
    assert missing.event_id == victim.event.event_id and original.job_id in missing.message


# -- chunked sweeps ----------------------------------------------------------------------


async def test_chunked_sweep_passes_verify_and_replays_every_chunk(
    bus: Bus, pipeline: Pipeline, config: Config
):
    final = await run_chunked(bus, pipeline)
    report = await verify_log(bus)
    assert report.ok, report.problems
    assert report.results_checked == 1

    replay = await replay_job(bus, final.job_id, config, executor=ExecuteHandler)
    assert replay.status == "match" and replay.ok, replay.detail
    assert replay.chunks == len(POINTS) // CHUNK
    assert replay.replay_hash == replay.recorded_hash == final.result_hash
    assert replay.differences == [] and replay.warnings == []
    out = await asyncio.to_thread(qbus_cli, "audit", "replay", final.job_id, url=config.bus.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"replay MATCH: job {final.job_id}")
    assert "4 chunks" in out.stdout


async def test_tampered_chunk_result_is_reported_at_its_event(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    """One chunk's expectation value changed in its ExecutionCompleted and the chain
    rebuilt: the assembled result no longer re-derives, and the problem names that
    chunk's event; the replay finds the chunk differs from a fresh run."""
    final = await run_chunked(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    chunks = chunk_events(log, final.job_id)
    victim = next(s for s in chunks if s.event.chunk == 2)
    answer = first(log, JobCompleted, final.job_id)

    def edit(stored: Stored) -> bytes:
        if stored.seq != victim.seq:
            return stored.data
        event = stored.event
        points = list(event.sweep_results)
        values = list(points[1].expectations)
        values[0] += 0.25
        points[1] = msgspec.structs.replace(points[1], expectations=values)
        return encode(msgspec.structs.replace(event, sweep_results=points))

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            report = await verify_log(restored)
            replay = await replay_job(restored, final.job_id, executor=ExecuteHandler)
    assert [p.check for p in report.problems] == ["result_mismatch"]
    p = report.problems[0]
    assert (p.seq, p.type, p.event_id) == (answer.seq, "job.completed", answer.event.event_id)
    assert p.related_seq == victim.seq
    assert f"chunk 2's ExecutionCompleted (sequence {victim.seq}" in p.message
    assert "points 6..8" in p.message
    assert replay.status == "mismatch" and not replay.ok
    assert any(d.startswith(f"chunk 2 (sequence {victim.seq})") for d in replay.differences)


async def test_tampered_chunk_without_rechaining_is_named_twice(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    final = await run_chunked(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    victim = next(s for s in chunk_events(log, final.job_id) if s.event.chunk == 0)
    answer = first(log, JobCompleted, final.job_id)

    def edit(stored: Stored) -> bytes:
        if stored.seq != victim.seq:
            return stored.data
        event = stored.event
        points = [msgspec.structs.replace(event.sweep_results[0], expectations=[0.0, 0.0])]
        return encode(
            msgspec.structs.replace(event, sweep_results=points + event.sweep_results[1:])
        )

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit)
            report = await verify_log(restored)
    assert [(p.seq, p.check) for p in report.problems] == [
        (victim.seq, "chain_altered"),
        (answer.seq, "result_mismatch"),
    ]
    assert report.problems[1].related_seq == victim.seq


async def test_rerouted_chunked_sweep_audits_clean_with_a_stale_result_in_the_log(
    config: Config, bus: Bus
):
    """Chunks on two engines (a reroute mid-sweep) and a stale generation-0 result with
    wrong values in the log: the audit takes each chunk's accepted result, as the ledger
    did, so the job verifies and replays every chunk on the engine that ran it."""
    async with stages(config, bus) as pipeline:
        first_engine = await Executor(config, FIRST, batch=4).start()
        second_engine: Executor | None = None
        try:
            j = sweep_job(FIRST)
            await bus.publish(j)

            async def some_done():
                ledger = await ledger_of(bus, j.job_id)
                return ledger is not None and len(ledger.done) >= 8

            await wait_for(some_done, 120, "8 chunks done")
            await first_engine.stop()

            async def verify_caught_up():
                ran = sum(isinstance(e, ExecutionCompleted) for _, e in await log_of(bus, j.job_id))
                ledger = await ledger_of(bus, j.job_id)
                return ledger is not None and len(ledger.done) == ran

            await wait_for(verify_caught_up, 60, "verify to count every result")
            done_before = {int(k) for k in (await ledger_of(bus, j.job_id)).done}
            second_engine = await Executor(config, SECOND, batch=8).start()
            await bus.publish(Reroute(event_id=new_event_id(), job_id=j.job_id, engine=SECOND))

            async def bumped():
                state = await bus.job_state(j.job_id)
                return state is not None and state.generation == 1

            await wait_for(bumped, 60, "the reroute to be applied")
            template = next(
                e for _, e in await log_of(bus, j.job_id) if isinstance(e, ExecutionCompleted)
            )
            moved_chunk = min(set(range(64)) - done_before)
            late = msgspec.structs.replace(
                template,
                event_id=new_event_id(),
                chunk=moved_chunk,
                sweep_results=[SweepPoint(expectations=[42.0, 42.0])] * 2,
            )
            await bus.publish(late)
            final = await wait_final(bus, j.job_id, 120)
            await _flushed(bus, pipeline)
        finally:
            if second_engine is not None:
                await second_engine.stop()
    assert isinstance(final, JobCompleted), final
    assert set(final.chunk_engines.values()) == {FIRST, SECOND}
    report = await verify_log(bus)
    assert report.ok, report.problems
    replay = await replay_job(bus, final.job_id, config, executor=ExecuteHandler)
    assert replay.status == "match" and replay.ok, replay.detail
    assert replay.chunks == 64 and replay.engine == f"{FIRST}+{SECOND}"
    assert replay.replay_hash == replay.recorded_hash == final.result_hash
