"""The anchor stage on a real anvil node: batches, proofs against the on-chain root, crashes."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest
from nats.js import api as js_api
from nats.js.errors import NoKeysError

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.anchor import PENDING_PREFIX, AnchorStage
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import (
    JobCompleted,
    JobRejected,
    ResultAnchored,
    Verification,
    decode,
)
from qbus.verifier.chain import AnchorContract, read_batch
from qbus.verifier.merkle import leaf_hash, verify_proof
from tests.jobs import QASM2_BELL, job, run_jobs

pytestmark = pytest.mark.timeout(180)

CORE_STAGES = ("ingest", "rewrite", "route", "execute", "verify")


async def anchored_events(bus: Bus, count: int, timeout: float = 60.0) -> list[ResultAnchored]:
    """The first ``count`` ResultAnchored events in the log (waiting for them to come)."""
    sub = await bus.js.subscribe(
        bus.subjects.anchored(">"),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    out: list[ResultAnchored] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < count:
                msg = await sub.next_msg(timeout=timeout)
                event = decode(msg.data)
                assert isinstance(event, ResultAnchored)
                out.append(event)
    finally:
        await sub.unsubscribe()
    return out


async def per_subject(bus: Bus, subject: str) -> dict[str, int]:
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
    return dict(info.state.subjects or {})


async def check_against_chain(
    config: Config, contract: AnchorContract, events: list[ResultAnchored]
) -> dict[int, int]:
    """Every proof verifies against the root the contract holds; returns batch → count."""
    batches: dict[int, int] = {}
    for e in events:
        if e.batch_id not in batches:
            onchain = await read_batch(config.chain, contract.address, e.batch_id)
            assert onchain is not None and "0x" + onchain.root.hex() == e.root
            assert onchain.count == e.batch_size and onchain.block_number == e.block_number
            batches[e.batch_id] = onchain.count
            receipt = await contract.w3.eth.get_transaction_receipt(e.tx_hash)
            assert receipt["status"] == 1 and receipt["blockNumber"] == e.block_number
        proof = [bytes.fromhex(p[2:]) for p in e.proof]
        root = bytes.fromhex(e.root[2:])
        assert verify_proof(
            leaf_hash(e.result_hash), proof, e.leaf_index, root, count=batches[e.batch_id]
        )
        assert await contract.verify_inclusion(e.batch_id, e.result_hash, proof, e.leaf_index)
        assert e.chain_id == contract.chain_id and e.contract == contract.address
    return batches


async def test_100_jobs_are_anchored_in_batches_and_every_proof_verifies_on_chain(
    chain_qbus_config: Config, bus: Bus, anchor_contract: AnchorContract
):
    config = chain_qbus_config
    jobs = [job(QASM2_BELL, shots=64, seed=i) for i in range(100)]
    async with Pipeline(config, stages=(*CORE_STAGES, "anchor")) as pipeline:
        finals = await run_jobs(bus, jobs, timeout=120)
        assert all(isinstance(f, JobCompleted) for f in finals)
        events = await anchored_events(bus, 100, timeout=60)
        pipeline.check()
    by_job = {e.job_id: e for e in events}
    assert len(by_job) == 100
    for final in finals:
        assert by_job[final.job_id].result_hash == final.result_hash
        assert by_job[final.job_id].causation_id == final.event_id
    batches = await check_against_chain(config, anchor_contract, events)
    # Batches of at most 16: one transaction each, and together exactly the 100 results.
    assert sum(batches.values()) == 100 and max(batches.values()) <= 16
    assert len(batches) >= 7
    assert await anchor_contract.contract.functions.batchCount().call() == len(batches)
    # One ResultAnchored per job in the log.
    counts = await per_subject(bus, bus.subjects.anchored())
    assert len(counts) == 100 and set(counts.values()) == {1}


async def test_a_non_verifier_key_cannot_anchor_and_the_stage_keeps_the_results(
    chain_qbus_config: Config, bus: Bus, anvil, anchor_contract: AnchorContract, monkeypatch
):
    from qbus.verifier.chain import account_from_key

    stranger = anchor_contract.as_account(account_from_key(anvil.dev_keys[3]))
    async with Pipeline(chain_qbus_config, stages=CORE_STAGES):
        finals = await run_jobs(bus, [job(QASM2_BELL, shots=32, seed=i) for i in range(3)])
    stage = AnchorStage(bus, chain_qbus_config, contract=stranger)
    task = asyncio.create_task(stage.run())
    try:
        # It keeps retrying the refused anchor and publishes nothing.
        with pytest.raises(TimeoutError):
            await anchored_events(bus, 1, timeout=3)
    finally:
        stage.stop()
        await asyncio.wait_for(task, 10)
    assert await anchor_contract.contract.functions.batchCount().call() == 0
    # The verifier's stage then anchors the very same results.
    stage = AnchorStage(bus, chain_qbus_config, contract=anchor_contract)
    task = asyncio.create_task(stage.run())
    try:
        events = await anchored_events(bus, 3, timeout=30)
    finally:
        stage.stop()
        await asyncio.wait_for(task, 10)
    assert {e.job_id for e in events} == {f.job_id for f in finals}
    await check_against_chain(chain_qbus_config, anchor_contract, events)


class CrashBeforePublishing(AnchorStage):
    """Anchors its first batch on chain, then 'dies' before any ResultAnchored is stored."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.crashed = asyncio.Event()

    async def _publish(self, entry, event_ids):
        self.crashed.set()
        await asyncio.Event().wait()  # never returns: killed here


async def test_a_crash_between_the_anchor_tx_and_publishing_anchors_once_and_loses_no_proof(
    chain_qbus_config: Config, bus: Bus, anchor_contract: AnchorContract
):
    config = msgspec.structs.replace(
        chain_qbus_config,
        chain=msgspec.structs.replace(chain_qbus_config.chain, batch_size=8, batch_window=1.0),
    )
    async with Pipeline(config, stages=CORE_STAGES):
        finals = await run_jobs(bus, [job(QASM2_BELL, shots=32, seed=i) for i in range(12)])
    first = CrashBeforePublishing(bus, config, contract=anchor_contract)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(first.crashed.wait(), 30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    kv = await bus.js.key_value(bus.config.kv_chain)
    (pending,) = [k for k in await kv.keys() if k.startswith(PENDING_PREFIX)]
    assert await anchor_contract.contract.functions.batchCount().call() == 1
    batch1 = await anchor_contract.batch(1)
    assert pending == PENDING_PREFIX + "0x" + batch1.root.hex()

    second = AnchorStage(bus, config, contract=anchor_contract)
    task = asyncio.create_task(second.run())
    try:
        # The 8 of the crashed batch come back after ack_wait, answered from batch 1.
        events = await anchored_events(bus, 12, timeout=60)
    finally:
        second.stop()
        await asyncio.wait_for(task, 10)
    batches = await check_against_chain(config, anchor_contract, events)
    assert batches[1] == 8 and sum(batches.values()) == 12
    # The crashed batch was not anchored again: its root has one batch, and only the
    # 4 results the first stage never batched made a new one.
    assert await anchor_contract.contract.functions.batchCount().call() == 2
    assert {e.job_id for e in events} == {f.job_id for f in finals}
    counts = await per_subject(bus, bus.subjects.anchored())
    assert set(counts.values()) == {1} and len(counts) == 12
    with contextlib.suppress(NoKeysError):
        assert not [k for k in await kv.keys() if k.startswith(PENDING_PREFIX)]


async def test_the_embedded_in_process_chain_anchors_a_pipelines_results(
    config: Config, bus: Bus, monkeypatch: pytest.MonkeyPatch
):
    # No node at all: py-evm in this process, the contract deployed at start, the key
    # (a throwaway one, funded by the chain) from the env secrets provider.
    monkeypatch.setenv("QBUS_SECRET_CHAIN_VERIFIER_KEY", "0x" + "42" * 32)
    chain = msgspec.structs.replace(
        config.chain, rpc_url="eth-tester://test-pipeline", batch_size=4, batch_window=0.3
    )
    cfg = msgspec.structs.replace(config, chain=chain)
    # A foreign producer's "result" with no sha256 result hash cannot be a leaf.
    forged = JobCompleted(
        event_id="forged-1",
        job_id="forged-1",
        engine="x",
        engine_version="0",
        circuit_hash="sha256:00",
        method="sample",
        shots=1,
        seed=0,
        verification=Verification(verdict="pass"),
        result_hash="not-a-hash",
    )
    async with Pipeline(cfg, stages=(*CORE_STAGES, "anchor")) as pipeline:
        await bus.publish(forged)
        jobs = [job(QASM2_BELL, shots=32, seed=i) for i in range(6)]
        jobs.append(job("OPENQASM 2.0; qreg q[1]; frobnicate q[0];"))  # rejected: not anchored
        finals = await run_jobs(bus, jobs)
        assert isinstance(finals[-1], JobRejected)
        events = await anchored_events(bus, 6, timeout=30)
        pipeline.check()
        contract = pipeline.stages["anchor"].contract
        batches = await check_against_chain(cfg, contract, events)
        # Every input settled: the six anchored, the rejection and the forgery ended.
        async with asyncio.timeout(10):
            while (info := await bus.js.consumer_info(bus.config.stream, "anchor")).num_ack_pending:
                await asyncio.sleep(0.05)  # polling the consumer's counters
        assert info.num_pending == 0
    assert sum(batches.values()) == 6 and max(batches.values()) <= 4
    assert {e.job_id for e in events} == {f.job_id for f in finals[:6]}
    assert len(await per_subject(bus, bus.subjects.anchored())) == 6
    # The deployment is remembered for the bus's other processes.
    kv = await bus.js.key_value(bus.config.kv_chain)
    entry = await kv.get(f"contract.{contract.chain_id}")
    assert entry.value.decode() == contract.address
