"""``qbus audit replay``: seeded results re-derive bit for bit from the logged request."""

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
from qbus.schemas.events import ExecutionCompleted, JobCompleted, encode
from qbus.schemas.noise import NoiseModel
from qbus.verifier.hashing import event_result_hash
from qbus.verifier.log_audit import verify_log
from qbus.verifier.replay import replay_job
from tests.jobs import QASM2_BELL, job, run_jobs
from tests.test_audit_verify import (
    Stored,
    first,
    qbus_cli,
    restore_copy,
    run_audited,
    shifted,
    stored_log,
    with_counts,
)

pytestmark = pytest.mark.timeout(180)


async def test_every_method_replays_bit_for_bit(bus: Bus, pipeline: Pipeline, config: Config):
    finals = await run_audited(bus, pipeline)
    for final in finals:
        report = await replay_job(bus, final.job_id, config, executor=ExecuteHandler)
        assert report.status == "match", report.detail
        assert report.ok and report.differences == [] and report.warnings == []
        assert report.replay_hash == report.recorded_hash == final.result_hash
        assert report.replay_version == report.recorded_version == final.engine_version
        assert report.request_seq < report.recorded_seq < report.final_seq
    out = await asyncio.to_thread(qbus_cli, "audit", "replay", finals[0].job_id, url=config.bus.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"replay MATCH: job {finals[0].job_id}")


async def test_consistently_forged_counts_pass_the_log_checks_but_not_the_replay(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    """The engine's result and the final event are both forged (counts and hash), and
    the chain rebuilt: nothing in the log contradicts itself any more. Re-running the
    seeded request does."""
    finals = await run_audited(bus, pipeline)
    await pipeline.stop()
    job_id = finals[0].job_id
    log = await stored_log(bus)
    forged_counts = shifted(finals[0].counts)
    targets = {first(log, ExecutionCompleted, job_id).seq, first(log, JobCompleted, job_id).seq}

    def edit(stored: Stored) -> bytes:
        if stored.seq in targets:
            return encode(with_counts(stored.event, forged_counts))
        return stored.data

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            log_report = await verify_log(restored)
            report = await replay_job(restored, job_id, executor=ExecuteHandler)
            out = await asyncio.to_thread(qbus_cli, "audit", "replay", job_id, url=other.url)
    assert log_report.ok, log_report.problems  # only an anchor (or a replay) can tell
    assert report.status == "mismatch" and not report.ok
    assert report.replay_hash == finals[0].result_hash != report.recorded_hash
    assert any(d.startswith("counts (") for d in report.differences), report.differences
    assert out.returncode == 1
    assert "replay MISMATCH" in out.stderr and "counts" in out.stderr


async def test_engine_version_change_is_warned_about(bus: Bus, pipeline: Pipeline, tmp_path: Path):
    finals = await run_audited(bus, pipeline)
    await pipeline.stop()
    job_id = finals[1].job_id
    log = await stored_log(bus)
    targets = {first(log, ExecutionCompleted, job_id).seq, first(log, JobCompleted, job_id).seq}

    def edit(stored: Stored) -> bytes:
        if stored.seq not in targets:
            return stored.data
        event = msgspec.structs.replace(stored.event, engine_version="0.0.1-old")
        if isinstance(event, JobCompleted):
            event = msgspec.structs.replace(event, result_hash=event_result_hash(event))
        return encode(event)

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            assert (await verify_log(restored)).ok
            report = await replay_job(restored, job_id, executor=ExecuteHandler)
    assert report.recorded_version == "0.0.1-old"
    assert report.replay_version == finals[1].engine_version
    assert any("engine version changed" in w for w in report.warnings)
    # Identical counts all the same: a match, with the warning.
    assert report.status == "match" and report.ok


async def test_replay_of_unknown_or_rejected_job_says_why(bus: Bus, pipeline: Pipeline):
    (rejected,) = await run_jobs(bus, [job("not qasm at all")])
    report = await replay_job(bus, rejected.job_id, executor=ExecuteHandler)
    assert report.status == "not_replayable" and not report.ok
    assert "never ran an engine" in report.detail
    assert (
        await replay_job(bus, "no-such-job", executor=ExecuteHandler)
    ).detail == "no such job in the log"


SWEPT = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[2] q;
bit[2] c;
ry(theta) q[0];
cx q[0], q[1];
c = measure q;
"""


async def test_noisy_and_sweep_jobs_audit_clean_and_replay_bit_for_bit(
    bus: Bus, pipeline: Pipeline, config: Config
):
    noise = NoiseModel(depolarizing_1q=0.05, depolarizing_2q=0.1)
    points = [{"theta": 0.3}, {"theta": 1.9}]
    finals = await run_jobs(
        bus,
        [
            job(QASM2_BELL, shots=1000, seed=3, noise=noise),
            job(SWEPT, method="sweep", sweep=points, shots=300, seed=2),
        ],
        timeout=120,
    )
    assert all(isinstance(f, JobCompleted) for f in finals), finals
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    await pipeline.stages["audit"].flushed_to(last)
    report = await verify_log(bus)
    assert report.ok, report.problems
    assert report.results_checked == 2
    for final in finals:
        replay = await replay_job(bus, final.job_id, config, executor=ExecuteHandler)
        assert replay.status == "match", replay.detail
        assert replay.replay_hash == final.result_hash
