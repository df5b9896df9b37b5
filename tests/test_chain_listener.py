"""Smart-contract-triggered runs on a real anvil node: RunRequested → job → RunFulfilled."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.js import api as js_api

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.producers.chain_listener import ChainListener
from qbus.producers.submit import wait_final
from qbus.schemas.events import JobCompleted, JobRejected, JobSubmitted, decode
from qbus.verifier.anvil import AnvilNode
from qbus.verifier.chain import AnchorContract, account_from_key, request_job_id
from qbus.verifier.merkle import digest_bytes, keccak256
from tests.jobs import QASM2_BELL, QASM3_GHZ
from tests.test_chain_anchor import CORE_STAGES, anchored_events, check_against_chain

pytestmark = pytest.mark.timeout(180)


async def submitted_jobs(bus: Bus) -> list[JobSubmitted]:
    """Every JobSubmitted in the log, in order."""
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.submit)
    total = sum((info.state.subjects or {}).values())
    if total == 0:
        return []
    sub = await bus.js.subscribe(
        bus.subjects.submit,
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    try:
        return [decode((await sub.next_msg(timeout=5)).data) for _ in range(total)]
    finally:
        await sub.unsubscribe()


async def test_a_contract_call_becomes_a_job_whose_result_is_fulfilled_on_chain(
    chain_qbus_config: Config, bus: Bus, anvil: AnvilNode, anchor_contract: AnchorContract
):
    config = chain_qbus_config
    requester = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    async with Pipeline(config, stages=(*CORE_STAGES, "anchor")) as pipeline:
        listener = ChainListener(bus, config, anchor_contract)
        task = asyncio.create_task(listener.run())
        try:
            request_id, _ = await requester.request_run(QASM2_BELL, shots=200)
            job_id = request_job_id(anchor_contract.chain_id, anchor_contract.address, request_id)
            final = await wait_final(bus, job_id, timeout=60)
            assert isinstance(final, JobCompleted), final
            assert sum(final.counts.values()) == 200
            assert set(final.counts) <= {"00", "11"}
            # The anchor stage fulfils before it publishes the job's ResultAnchored.
            (anchored,) = await anchored_events(bus, 1, timeout=30)
        finally:
            listener.stop()
            await asyncio.wait_for(task, 10)
        pipeline.check()
    assert anchored.job_id == job_id
    await check_against_chain(config, anchor_contract, [anchored])
    (fulfilled,) = await anchor_contract.fulfilled_logs()
    assert fulfilled["requestId"] == request_id
    assert fulfilled["resultHash"] == digest_bytes(final.result_hash)
    assert "0x" + fulfilled["anchorRoot"].hex() == anchored.root
    state = await anchor_contract.request(request_id)
    assert state.fulfilled and state.result_hash == digest_bytes(final.result_hash)
    (submitted,) = await submitted_jobs(bus)
    assert submitted.labels["chain.request_id"] == str(request_id)
    assert submitted.labels["chain.requester"] == requester.account.address
    assert submitted.labels["chain.qasm_hash"] == "0x" + keccak256(QASM2_BELL.encode()).hex()


class CrashAfter(ChainListener):
    """Dies after publishing ``n`` jobs, before its cursor is saved."""

    def __init__(self, *args, n: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.n = n

    async def _submit(self, request):
        if self.submitted >= self.n:
            raise RuntimeError("killed")
        await super()._submit(request)


async def test_killing_and_restarting_the_listener_misses_and_repeats_nothing(
    chain_qbus_config: Config, bus: Bus, anvil: AnvilNode, anchor_contract: AnchorContract
):
    config = msgspec.structs.replace(
        chain_qbus_config,
        chain=msgspec.structs.replace(chain_qbus_config.chain, confirmations=2),
    )
    requester = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    ids = [(await requester.request_run(QASM2_BELL, shots=10 + i))[0] for i in range(6)]
    await anchor_contract.mine(2)
    first = CrashAfter(bus, config, anchor_contract, n=4)
    with pytest.raises(RuntimeError, match="killed"):
        await first.poll_once()
    assert first.submitted == 4
    # More requests while it is down; the newest is not yet confirmed.
    ids += [(await requester.request_run(QASM3_GHZ, shots=100 + i))[0] for i in range(4)]
    second = ChainListener(bus, config, anchor_contract)
    while await second.poll_once():
        pass
    jobs = await submitted_jobs(bus)
    assert [int(j.labels["chain.request_id"]) for j in jobs] == ids[:8]
    # Two blocks on top of the last two requests confirm them.
    await anchor_contract.mine(2)
    while await second.poll_once():
        pass
    jobs = await submitted_jobs(bus)
    assert [int(j.labels["chain.request_id"]) for j in jobs] == ids
    assert [j.shots for j in jobs] == [10 + i for i in range(6)] + [100 + i for i in range(4)]
    assert len({j.job_id for j in jobs}) == 10
    # A third listener starting from scratch (cursor gone) repeats nothing either.
    kv = await bus.js.key_value(bus.config.kv_chain)
    await kv.purge(f"cursor.{anchor_contract.chain_id}.{anchor_contract.address.lower()}")
    third = ChainListener(bus, config, anchor_contract)
    while await third.poll_once():
        pass
    assert len(await submitted_jobs(bus)) == 10


async def test_requests_by_uri_are_refused_unless_fetching_is_on(
    chain_qbus_config: Config, bus: Bus, anvil: AnvilNode, anchor_contract: AnchorContract
):
    requester = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    request_id, _ = await requester.request_run(
        qasm_hash=keccak256(QASM2_BELL.encode()), uri="https://example.invalid/bell.qasm"
    )
    listener = ChainListener(bus, chain_qbus_config, anchor_contract)
    await listener.poll_once()
    job_id = request_job_id(anchor_contract.chain_id, anchor_contract.address, request_id)
    final = await wait_final(bus, job_id, timeout=10)
    assert isinstance(final, JobRejected) and final.code == "chain_uri_disabled"
    assert "fetch_uris" in final.message
    await ChainListener(bus, chain_qbus_config, anchor_contract).poll_once()  # a rescan
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.result(job_id))
    assert sum((info.state.subjects or {}).values()) == 1


async def test_a_listener_process_killed_and_restarted_submits_each_request_once(
    chain_qbus_config: Config,
    bus: Bus,
    anvil: AnvilNode,
    anchor_contract: AnchorContract,
    tmp_path,
):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import config_toml

    chain = chain_qbus_config.chain
    toml = tmp_path / "qbus.toml"
    toml.write_text(
        config_toml(chain_qbus_config)
        + f'[chain]\nrpc_url = "{chain.rpc_url}"\ncontract = "{chain.contract}"\n'
        "poll_interval = 0.05\n"
    )
    env = {**os.environ, "QBUS_CONFIG": str(toml)}

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "qbus", "chain", "listen"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def submitted_count() -> int:
        info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.submit)
        return sum((info.state.subjects or {}).values())

    async def wait_for(count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while await submitted_count() < count:
                assert proc.poll() is None, "the listener died"
                await asyncio.sleep(0.05)  # polling the stream's counters, not a peer

    requester = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    ids = [(await requester.request_run(QASM2_BELL, shots=10 + i))[0] for i in range(10)]
    listener = start()
    try:
        await wait_for(3, listener)
        # SIGKILL: no chance to save anything. Where in its range it dies depends on
        # timing; the deterministic mid-range crash is the CrashAfter test above.
        listener.send_signal(signal.SIGKILL)
        listener.wait(10)
        ids += [(await requester.request_run(QASM2_BELL, shots=100 + i))[0] for i in range(10)]
        listener = start()
        await wait_for(20, listener)
        # Caught up: the cursor is past the last request's block.
        last_block = await anchor_contract.w3.eth.block_number
        kv = await bus.js.key_value(bus.config.kv_chain)
        key = f"cursor.{anchor_contract.chain_id}.{anchor_contract.address.lower()}"
        async with asyncio.timeout(30):
            while int((await kv.get(key)).value) <= last_block:
                await asyncio.sleep(0.05)
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(10)
    jobs = await submitted_jobs(bus)
    assert sorted(int(j.labels["chain.request_id"]) for j in jobs) == ids
    assert len(jobs) == 20
