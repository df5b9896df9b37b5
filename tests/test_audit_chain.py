"""The audit against a real anvil node: anchored proofs and on-chain roots, the export.

A log forged so that it no longer contradicts itself (the engine's counts, the final
event's counts and hash, and the ResultAnchored's proof and root all rewritten, and the
audit chain rebuilt) is still caught, because the root it names is not the one the
contract holds and only the verifier key could have anchored one.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest
from nats.js import api as js_api

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import (
    ExecutionCompleted,
    JobCompleted,
    ResultAnchored,
    decode,
    encode,
)
from qbus.verifier.anchor_check import chain_root_reader
from qbus.verifier.chain import close_connections, hex32
from qbus.verifier.log_audit import audit_log, verify_log
from qbus.verifier.merkle import leaf_hash
from tests.jobs import QASM2_BELL, job, run_jobs
from tests.test_audit_verify import (
    Stored,
    first,
    qbus_cli,
    restore_copy,
    shifted,
    stored_log,
    with_counts,
)

pytestmark = pytest.mark.timeout(240)

STAGES = ("ingest", "rewrite", "route", "execute", "verify", "audit", "anchor")
JOBS = 5


async def wait_anchored(bus: Bus, count: int, timeout: float = 90.0) -> None:
    sub = await bus.js.subscribe(
        bus.subjects.anchored(">"),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    try:
        async with asyncio.timeout(timeout):
            for _ in range(count):
                assert isinstance(
                    decode((await sub.next_msg(timeout=timeout)).data), ResultAnchored
                )
    finally:
        await sub.unsubscribe()


@pytest.fixture
async def anchored_log(chain_qbus_config: Config, bus: Bus) -> list[JobCompleted]:
    async with Pipeline(chain_qbus_config, stages=STAGES) as pipeline:
        finals = await run_jobs(bus, [job(QASM2_BELL, shots=300, seed=i) for i in range(JOBS)])
        await wait_anchored(bus, JOBS)
        last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
        await pipeline.stages["audit"].flushed_to(last)
        pipeline.check()
    assert all(isinstance(f, JobCompleted) for f in finals)
    return finals


async def test_anchored_log_verifies_against_the_chain_and_exports(
    anchored_log: list[JobCompleted], bus: Bus, chain_qbus_config: Config, tmp_path: Path
):
    reader, note = chain_root_reader(chain_qbus_config.chain)
    assert reader is not None, note
    report, checker = await audit_log(bus, root_reader=reader, keep_jobs=True)
    await close_connections()
    assert report.ok, report.problems
    assert report.anchors_checked == JOBS and report.results_checked == JOBS
    assert report.chain_status == "checked" and report.chain_roots_checked >= 1
    for final in anchored_log:
        record = checker.jobs[final.job_id]
        assert record.status == "completed" and record.ok
        assert record.anchor is not None
        assert record.anchor.proof_ok is True and record.anchor.chain_root_ok is True

    # The same through the command line, as a separate process with a config file.
    config_file = tmp_path / "qbus.toml"
    chain = chain_qbus_config.chain
    config_file.write_text(f'[chain]\nrpc_url = "{chain.rpc_url}"\ncontract = "{chain.contract}"\n')
    out_file = tmp_path / "audit.jsonl"
    url = chain_qbus_config.bus.url
    out = await asyncio.to_thread(
        qbus_cli, "audit", "export", "--out", str(out_file), url=url, config_file=config_file
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    jobs, summary = lines[:-1], lines[-1]
    assert summary["kind"] == "summary" and summary["ok"] is True
    assert summary["jobs"] == JOBS and summary["chain_status"] == "checked"
    by_id = {line["job_id"]: line for line in jobs}
    for final in anchored_log:
        line = by_id[final.job_id]
        assert line["kind"] == "job" and line["status"] == "completed" and line["ok"] is True
        assert line["result_hash"] == final.result_hash
        assert line["verification"]["verdict"] == "pass"
        types = [e["type"] for e in line["events"]]
        assert types[0] == "job.submitted" and types[-1] == "result.anchored"
        assert "job.completed" in types and "execution.completed" in types
        seqs = [e["seq"] for e in line["events"]]
        assert seqs == sorted(seqs) and all(e["timestamp"] > 0 for e in line["events"])
        assert line["final_seq"] in seqs
        anchor = line["anchor"]
        assert anchor["proof_ok"] is True and anchor["chain_root_ok"] is True
        assert anchor["tx_hash"].startswith("0x") and anchor["block_number"] > 0
    out = await asyncio.to_thread(qbus_cli, "audit", "verify", url=url, config_file=config_file)
    assert out.returncode == 0, out.stderr
    assert "chain: checked" in out.stdout


async def test_a_self_consistent_forgery_fails_only_on_chain(
    anchored_log: list[JobCompleted], bus: Bus, chain_qbus_config: Config, tmp_path: Path
):
    job_id = anchored_log[2].job_id
    log = await stored_log(bus)
    completed = first(log, JobCompleted, job_id)
    anchored = first(log, ResultAnchored, job_id)
    forged = with_counts(completed.event, shifted(anchored_log[2].counts))
    targets = {first(log, ExecutionCompleted, job_id).seq, completed.seq}

    def edit(stored: Stored) -> bytes:
        if stored.seq in targets:
            return encode(with_counts(stored.event, forged.counts))
        if stored.seq == anchored.seq:
            # A one-leaf "batch" whose root is the forged leaf: the proof checks out.
            return encode(
                msgspec.structs.replace(
                    stored.event,
                    result_hash=forged.result_hash,
                    root=hex32(leaf_hash(forged.result_hash)),
                    proof=[],
                    leaf_index=0,
                    batch_size=1,
                )
            )
        return stored.data

    reader, _ = chain_root_reader(chain_qbus_config.chain)
    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            offline = await verify_log(restored)
            report = await verify_log(restored, root_reader=reader)
    await close_connections()
    assert offline.ok, offline.problems  # nothing in the log contradicts itself
    assert "not compared" in offline.chain_status
    assert [p.check for p in report.problems] == ["anchor_chain"]
    p = report.problems[0]
    assert (p.seq, p.type, p.event_id) == (
        anchored.seq,
        "result.anchored",
        anchored.event.event_id,
    )
    assert f"batch {anchored.event.batch_id}" in p.message and "root" in p.message


async def test_a_result_changed_after_anchoring_breaks_its_proof(
    anchored_log: list[JobCompleted], bus: Bus, tmp_path: Path
):
    job_id = anchored_log[0].job_id
    log = await stored_log(bus)
    completed = first(log, JobCompleted, job_id)
    anchored = first(log, ResultAnchored, job_id)
    targets = {first(log, ExecutionCompleted, job_id).seq, completed.seq}
    counts = shifted(anchored_log[0].counts)

    def edit(stored: Stored) -> bytes:
        return encode(with_counts(stored.event, counts)) if stored.seq in targets else stored.data

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            report = await verify_log(restored)
    assert [(p.seq, p.check) for p in report.problems] == [
        (anchored.seq, "anchor_hash"),
        (anchored.seq, "anchor_proof"),
    ]
    assert report.problems[0].related_seq == completed.seq
