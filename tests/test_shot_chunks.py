"""Shot-by-shot jobs in shot chunks (issue 21, item 4): split, join exactly once, audit.

A ``sample`` job whose circuit runs shot by shot (a mid-circuit measurement here) and
whose predicted run time is long is split by the route stage into chunks of shots, each
with its own seed; executor copies run them in parallel and the verify stage sums their
counts into the job's one JobCompleted. The bus tests use a real nats-server, real Aer
and, for the kill -9 test, two real executor processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import BusConfig, ChunksConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.ledger import ChunkDone, Ledger
from qbus.bus.server import NatsServer
from qbus.cli.control import progress_line
from qbus.consumers.execute import ExecuteHandler
from qbus.consumers.pipeline import Pipeline
from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.errors import Reject
from qbus.frontends.program import parse_program
from qbus.producers.submit import wait_final
from qbus.router.chunks import chunk_range, rerouted, shot_seed, split
from qbus.schemas.events import (
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobOptions,
    default_seed,
    encode,
)
from qbus.schemas.ir import circuit_hash, shot_by_shot
from qbus.supervisor import StageProcess
from qbus.verifier.chunks import chunk_result, join_chunks
from qbus.verifier.hashing import event_result_hash
from qbus.verifier.log_audit import verify_log
from qbus.verifier.replay import replay_job
from tests.conftest import config_toml
from tests.jobs import QASM2_BELL, count_results, job
from tests.longjobs import log_of, wait_for
from tests.test_audit_verify import (
    Stored,
    first,
    restore_copy,
    shifted,
    stored_log,
    with_counts,
)

pytestmark = pytest.mark.timeout(240)

ENGINE = "qiskit-aer"
STAGES = ("ingest", "rewrite", "route", "verify", "audit", "control")


def dynamic_program(qubits: int, layers: int) -> str:
    """Layers of ry + a cx ladder with a mid-circuit measurement of q[0] halfway: every
    shot runs on its own (two branches, so the verify stage has an exact reference)."""
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for layer in range(layers):
        lines += [f"ry({0.2 + layer * 0.31}) q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{i + 1}];" for i in range(qubits - 1)]
        if layer == layers // 2:
            lines.append("c[0] = measure q[0];")
    lines.append("c = measure q;")
    return "\n".join(lines) + "\n"


def whole_request(shots: int = 1000, seed: int | None = 7, **fields) -> ExecutionRequested:
    circuit, _ = parse_program(dynamic_program(4, 3))
    options = JobOptions(shots=shots, seed=seed, **fields.pop("options", {}))
    return ExecutionRequested(
        event_id="req-1",
        job_id="job-1",
        causation_id="rw-1",
        producer="qbus.route",
        engine=ENGINE,
        circuit=circuit,
        circuit_hash=circuit_hash(circuit),
        options=options,
        route_reason="auto: cheapest",
        timestamp=1.0,
        **{"predicted_seconds": 23.0, **fields},
    )


# ----------------------------------------------------------------------- pure parts


def test_long_shot_by_shot_job_splits_into_shot_chunks_with_their_own_seeds():
    whole = whole_request()
    assert shot_by_shot(whole.circuit)
    chunks = split(whole, shot_seconds=5.0, min_shots=64)
    # 23 s predicted at 5 s a chunk: 5 chunks of 200 shots.
    assert [c.chunk for c in chunks] == list(range(5))
    assert {c.chunks for c in chunks} == {5}
    assert [(c.shot_start, c.shot_stop) for c in chunks] == [
        (0, 200),
        (200, 400),
        (400, 600),
        (600, 800),
        (800, 1000),
    ]
    assert [c.options.shots for c in chunks] == [200] * 5
    assert sum(c.options.shots for c in chunks) == whole.options.shots
    seeds = [c.options.seed for c in chunks]
    assert seeds[0] == 7 and len(set(seeds)) == 5
    assert seeds == [shot_seed(7, k) for k in range(5)]
    assert sum(c.predicted_seconds or 0 for c in chunks) == pytest.approx(23.0)
    # Deterministic: the same request splits into the same ids, ranges and seeds.
    assert split(whole, shot_seconds=5.0, min_shots=64) == chunks
    assert len({c.event_id for c in chunks}) == 5
    assert all(c.point_start is None and c.options.sweep == [] for c in chunks)
    # Every field the split does not own travels with each chunk unchanged (a field added
    # later, such as an executor lane, too).
    for c in chunks:
        assert (
            msgspec.structs.replace(
                c,
                event_id=whole.event_id,
                options=whole.options,
                predicted_seconds=whole.predicted_seconds,
                route_reason=whole.route_reason,
                chunk=None,
                chunks=None,
                shot_start=None,
                shot_stop=None,
            )
            == whole
        )
    assert "1000 shots in 5 chunks" in chunks[0].route_reason


def test_short_or_sampled_jobs_are_not_split():
    # Predicted below the target, no prediction, a circuit that samples one final state,
    # a cross-checked job, a sweep-free statevector job: one request each.
    assert split(whole_request(predicted_seconds=4.0), shot_seconds=5.0) == [
        whole_request(predicted_seconds=4.0)
    ]
    assert len(split(whole_request(predicted_seconds=None), shot_seconds=5.0)) == 1
    bell, _ = parse_program(QASM2_BELL)
    sampled = msgspec.structs.replace(whole_request(), circuit=bell)
    assert not shot_by_shot(bell)
    assert split(sampled, shot_seconds=5.0) == [sampled]
    checked = whole_request(options={"cross_check": True})
    assert len(split(checked, shot_seconds=5.0)) == 1
    vector = whole_request(options={"method": "statevector"})
    assert len(split(vector, shot_seconds=5.0)) == 1


def test_shot_chunk_count_is_bounded_by_min_shots_max_chunks_and_chunk_size():
    # 10 000 s predicted: min_shots caps 1000 shots at 1000 // 300 = 3 chunks.
    assert len(split(whole_request(predicted_seconds=1e4), shot_seconds=5.0, min_shots=300)) == 3
    assert len(split(whole_request(predicted_seconds=1e4), max_chunks=4, min_shots=1)) == 4
    # Never more chunks than shots.
    few = whole_request(shots=3, predicted_seconds=1e4)
    assert [c.options.shots for c in split(few, min_shots=1)] == [1, 1, 1]
    # chunk_size is shots per chunk for such a job, whatever the prediction.
    sized = split(whole_request(predicted_seconds=0.01, options={"chunk_size": 300}))
    assert [c.options.shots for c in sized] == [250, 250, 250, 250]
    with pytest.raises(Reject) as err:
        split(whole_request(options={"chunk_size": 0}))
    assert err.value.code == "invalid_chunk_size"
    with pytest.raises(ValueError, match="shot_seconds"):
        ChunksConfig(shot_seconds=0)
    with pytest.raises(ValueError, match="min_shots"):
        ChunksConfig(min_shots=0)


def test_a_job_without_seed_gets_fixed_seeds_from_its_job_id():
    chunks = split(whole_request(seed=None), shot_seconds=5.0)
    base = default_seed("job-1")
    assert [c.options.seed for c in chunks] == [shot_seed(base, k) for k in range(5)]
    assert split(whole_request(seed=None), shot_seconds=5.0) == chunks


def test_reroute_republishes_unfinished_shot_chunks_with_their_ranges_and_seeds():
    whole = whole_request()
    first = split(whole, shot_seconds=5.0)
    moved = rerouted(
        whole, 5, [4, 1], reroute_id="rr-1", generation=1, engine="cirq", reason="operator"
    )
    assert [m.chunk for m in moved] == [1, 4]
    for m in moved:
        orig = first[m.chunk]
        assert (m.shot_start, m.shot_stop, m.options) == (
            orig.shot_start,
            orig.shot_stop,
            orig.options,
        )
        assert m.engine == "cirq" and m.generation == 1 and m.event_id != orig.event_id


def test_join_sums_counts_with_the_job_shots_and_seed():
    chunks = split(whole_request(), shot_seconds=5.0)
    engine = get_engine(ENGINE)
    results = []
    for c in chunks:
        run = engine.run(
            RunRequest(circuit=c.circuit, shots=c.options.shots, seed=c.options.seed or 0)
        )
        results.append(
            ExecutionCompleted(
                event_id=f"done-{c.chunk}",
                job_id=c.job_id,
                engine=ENGINE,
                engine_version=engine.version,
                circuit=c.circuit,
                circuit_hash=c.circuit_hash,
                options=c.options,
                seed=run.seed,
                counts=run.counts,
                chunk=c.chunk,
                chunks=c.chunks,
                shot_start=c.shot_start,
                shot_stop=c.shot_stop,
            )
        )
    parts = [chunk_result(r) for r in results]
    joined = join_chunks(results[2], parts, 0)
    expected = sum((Counter(r.counts) for r in results), Counter())
    assert joined.counts == dict(expected) and sum(joined.counts.values()) == 1000
    assert joined.options.shots == 1000 and joined.seed == joined.options.seed == 7
    assert joined.chunk is None and joined.shot_start is None and joined.engine == ENGINE
    # Any arrival order joins to the same result (and hash).
    assert event_result_hash(join_chunks(results[0], parts, 0)) == event_result_hash(joined)


def test_progress_line_counts_shot_chunks_and_shots():
    ledger = Ledger(
        chunks=4,
        engine=ENGINE,
        done={
            "0": ChunkDone(engine=ENGINE, generation=0, event_id="a", shots=250),
            "2": ChunkDone(engine=ENGINE, generation=0, event_id="b", shots=250),
        },
    )
    line = progress_line(ledger)
    assert "2/4 shot chunks (500 shots done)" in line
    sweep = Ledger(chunks=4, done={"0": ChunkDone(engine=ENGINE, generation=0, event_id="a")})
    assert "1/4 chunks" in progress_line(sweep) and "shot" not in progress_line(sweep)


# ----------------------------------------------------------------------- on the bus


def chunked_config(config: Config, min_shots: int) -> Config:
    # Any prediction is above a microsecond: the split is made by the predicted-time path,
    # with min_shots fixing the chunk count (shots // min_shots).
    return msgspec.structs.replace(
        config, chunks=ChunksConfig(shot_seconds=1e-6, min_shots=min_shots)
    )


def direct_counts(requests: list[ExecutionRequested]) -> dict[str, int]:
    """The chunks run straight on the engine, counts added up."""
    engine = get_engine(ENGINE)
    total: Counter[str] = Counter()
    for r in requests:
        run = engine.run(
            RunRequest(circuit=r.circuit, shots=r.options.shots, seed=r.options.seed or 0)
        )
        total.update(run.counts or {})
    return dict(total)


async def run_shot_chunked(config: Config, bus: Bus) -> JobCompleted:
    """A 2400-shot dynamic-circuit job in 6 shot chunks, every stage on the bus; the
    pipeline is stopped (and the audit chain flushed) when it returns."""
    cfg = chunked_config(config, min_shots=400)
    async with Pipeline(cfg) as pipeline:
        j = job(dynamic_program(8, 8), shots=2400, seed=11, engine=ENGINE, optimize=False)
        await bus.publish(j)
        final = await wait_final(bus, j.job_id, 120)
        last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
        await pipeline.stages["audit"].flushed_to(last)
        pipeline.check()
    assert isinstance(final, JobCompleted), final
    return final


async def test_chunked_dynamic_job_completes_once_verified_and_audits(config: Config, bus: Bus):
    final = j = await run_shot_chunked(config, bus)
    assert final.chunk_engines == {str(k): ENGINE for k in range(6)}
    assert final.shots == 2400 and sum((final.counts or {}).values()) == 2400
    assert final.seed == 11
    assert final.verification.verdict == "pass", final.verification
    assert final.verification.test == "chi2"
    assert await count_results(bus, j.job_id) == 1
    log = [e for _, e in await log_of(bus, j.job_id)]
    requests = sorted(
        (e for e in log if isinstance(e, ExecutionRequested)), key=lambda e: e.chunk or 0
    )
    assert [(r.shot_start, r.shot_stop) for r in requests] == [
        chunk_range(2400, 6, k) for k in range(6)
    ]
    assert [r.options.seed for r in requests] == [shot_seed(11, k) for k in range(6)]
    completed = [e for e in log if isinstance(e, ExecutionCompleted)]
    assert sorted(e.chunk or 0 for e in completed) == list(range(6))
    # The joined counts are the counts of the same chunks run straight on the engine.
    assert final.counts == direct_counts(requests)
    # The result hash is the hash of the joined counts; audit and replay re-derive it.
    report = await verify_log(bus)
    assert report.ok, report.problems
    assert report.results_checked == 1
    replay = await replay_job(bus, j.job_id, config, executor=ExecuteHandler)
    assert replay.status == "match" and replay.ok, replay.detail
    assert replay.chunks == 6
    assert replay.replay_hash == replay.recorded_hash == final.result_hash


# ------------------------------------------------------------- kill -9 mid-chunk

HEAVY_SHOTS, HEAVY_CHUNKS, HEAVY_SEED = 3600, 6, 5


def _group_cpu_ticks(pgid: int) -> int:
    """CPU ticks used by every live process of a process group (a stage and its sandbox
    workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


async def test_executor_killed_mid_chunk_still_gives_one_final_event_and_the_counts(
    config: Config, bus: Bus, tmp_path: Path
):
    cfg = chunked_config(config, min_shots=HEAVY_SHOTS // HEAVY_CHUNKS)
    program = dynamic_program(10, 6)
    circuit, _ = parse_program(program)
    whole = whole_request(shots=HEAVY_SHOTS, seed=HEAVY_SEED)
    # What an unkilled run joins to: each chunk run straight on the engine with its seed.
    unkilled = split(
        msgspec.structs.replace(whole, circuit=circuit, predicted_seconds=1.0),
        shot_seconds=1e-6,
        min_shots=HEAVY_SHOTS // HEAVY_CHUNKS,
    )
    assert len(unkilled) == HEAVY_CHUNKS
    # Computed while the executor processes start and run.
    expected_counts = asyncio.ensure_future(asyncio.to_thread(direct_counts, unkilled))

    await bus.ensure_executor(ENGINE)
    cfg_file = tmp_path / "qbus.toml"
    cfg_file.write_text(config_toml(config))
    env = {**os.environ, "QBUS_URL": config.bus.url, "QBUS_CONFIG": str(cfg_file)}
    executors = [
        StageProcess(f"execute-{i}", ["stage", "execute", "--engine", ENGINE], tmp_path / f"x{i}")
        for i in range(2)
    ]
    durable = bus.executor_durable(ENGINE)
    async with Pipeline(cfg, stages=STAGES, engines=()) as pipeline:
        try:
            for x in executors:
                x.start(env)

            async def both_pulling() -> bool:
                info = await bus.js.consumer_info(config.bus.stream, durable)
                return info.num_waiting >= 2

            await wait_for(both_pulling, 90, "two executor processes pulling")
            j = job(program, shots=HEAVY_SHOTS, seed=HEAVY_SEED, engine=ENGINE, optimize=False)
            await bus.publish(j)

            async def handed_out() -> bool:
                info = await bus.js.consumer_info(config.bus.stream, durable)
                return info.num_pending == 0 and info.num_ack_pending >= HEAVY_CHUNKS

            await wait_for(handed_out, 90, "every chunk to be taken by an executor")
            # An executor runs its chunks one after another and publishes their results
            # together: the one burning CPU now is inside a chunk. Kill it.
            victim = None
            while victim is None:
                before = [_group_cpu_ticks(x.proc.pid) for x in executors]  # type: ignore[union-attr]
                await asyncio.sleep(0.3)
                after = [_group_cpu_ticks(x.proc.pid) for x in executors]  # type: ignore[union-attr]
                busy = [a - b for a, b in zip(after, before, strict=True)]
                if max(busy) >= 3:
                    victim = executors[busy.index(max(busy))]
            assert victim.proc is not None and victim.proc.poll() is None
            assert await count_results(bus, j.job_id) == 0
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()

            # The victim's chunks come back to the survivor after ack_wait: count them while
            # they are redelivered (the server's count is of unacknowledged ones only).
            redelivered = 0

            async def finished() -> bool:
                nonlocal redelivered
                info = await bus.js.consumer_info(config.bus.stream, durable)
                redelivered = max(redelivered, info.num_redelivered)
                return await count_results(bus, j.job_id) >= 1

            await wait_for(finished, 120, "the job's final event")
            final = await wait_final(bus, j.job_id, 5)
            # A straggler would show up within ack_wait; give it that long to appear.
            await asyncio.sleep(config.bus.ack_wait + 1)
            last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
            await pipeline.stages["audit"].flushed_to(last)
        finally:
            for x in executors:
                if x.proc is not None and x.proc.poll() is None:
                    os.killpg(x.proc.pid, signal.SIGTERM)
                    x.proc.wait(30)
    assert isinstance(final, JobCompleted), final
    # The killed executor's chunk(s) went to the survivor: redelivered, not lost.
    assert redelivered >= 1
    assert await count_results(bus, j.job_id) == 1
    assert len(final.chunk_engines) == HEAVY_CHUNKS
    assert final.shots == HEAVY_SHOTS and sum((final.counts or {}).values()) == HEAVY_SHOTS
    assert final.counts == await expected_counts
    assert final.verification.verdict == "pass", final.verification
    report = await verify_log(bus)
    assert report.ok, report.problems


async def test_tampered_shot_chunk_is_caught_by_audit_and_replay(
    config: Config, bus: Bus, tmp_path: Path
):
    """One shot chunk's counts changed in its ExecutionCompleted and the chain rebuilt:
    the joined result no longer re-derives, and the replay names that chunk."""
    final = await run_shot_chunked(config, bus)
    log = await stored_log(bus)
    victim = next(
        s
        for s in log
        if isinstance(s.event, ExecutionCompleted)
        and s.event.job_id == final.job_id
        and s.event.chunk == 1
    )
    answer = first(log, JobCompleted, final.job_id)

    def edit(stored: Stored) -> bytes:
        if stored.seq != victim.seq:
            return stored.data
        return encode(with_counts(stored.event, shifted(stored.event.counts)))

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            report = await verify_log(restored)
            replay = await replay_job(restored, final.job_id, executor=ExecuteHandler)
    assert [p.check for p in report.problems] == ["result_mismatch"]
    p = report.problems[0]
    assert (p.seq, p.type) == (answer.seq, "job.completed")
    assert "joined by summing their counts" in p.message and "counts" in p.message
    assert replay.status == "mismatch" and not replay.ok
    assert any(d.startswith(f"chunk 1 (sequence {victim.seq})") for d in replay.differences)
