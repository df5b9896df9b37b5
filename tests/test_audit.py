"""The audit chain: an untouched log verifies; an altered event is named."""

from __future__ import annotations

import asyncio
import glob
from pathlib import Path

import pytest

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.audit import AuditStage
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import decode, encode
from qbus.verifier.log_audit import verify_log
from tests.jobs import QASM2_BELL, QASM3_GHZ, job, run_jobs

pytestmark = pytest.mark.timeout(120)


async def _audited_log(bus: Bus, pipeline: Pipeline, n: int = 6) -> int:
    await run_jobs(bus, [job(QASM2_BELL if i % 2 else QASM3_GHZ) for i in range(n)])
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    auditor = pipeline.stages["audit"]
    assert isinstance(auditor, AuditStage)
    await auditor.flushed_to(last)
    return last


async def test_untouched_log_verifies(bus: Bus, pipeline: Pipeline):
    last = await _audited_log(bus, pipeline)
    report = await verify_log(bus)
    assert report.ok, report.problem
    assert report.checked == last
    assert report.chain_records >= 1


async def test_restored_log_with_one_altered_payload_names_that_event(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    last = await _audited_log(bus, pipeline)
    await pipeline.stop()
    # An operator "restores" the log from a doctored copy: every event re-published in
    # order into a fresh server, one payload changed (the counts of a result).
    target = 0
    with NatsServer(tmp_path / "restored") as other:
        restored = await Bus.connect(BusConfig(url=other.url))
        await restored.provision()
        victim_id = None
        for seq in range(1, last + 1):
            msg = await bus.js.get_msg(bus.config.stream, seq)
            data = msg.data
            event = decode(data)
            if victim_id is None and event.__struct_config__.tag == "job.completed":
                forged = dict(event.counts)
                key = next(iter(forged))
                forged[key] += 1
                data = encode(type(event)(**{**_fields(event), "counts": forged}))
                victim_id, target = event.event_id, seq
            await restored.js.publish(msg.subject, data, headers=msg.headers)
        info = await bus.js.stream_info(bus.config.audit_stream)
        for seq in range(1, info.state.last_seq + 1):
            msg = await bus.js.get_msg(bus.config.audit_stream, seq)
            await restored.js.publish(msg.subject, msg.data, headers=msg.headers)
        report = await verify_log(restored)
        await restored.close()
    assert not report.ok
    assert report.broken_event_id == victim_id
    assert report.broken_seq == target
    assert victim_id in report.problem and "altered" in report.problem


async def test_payload_edited_on_disk_is_caught(tmp_path: Path):
    store = tmp_path / "store"
    with NatsServer(store) as server:
        from qbus.bus.config import Config

        config = Config(bus=BusConfig(url=server.url))
        async with await Bus.connect(config.bus) as bus:
            await bus.provision()
            async with Pipeline(config) as pipeline:
                await _audited_log(bus, pipeline, n=3)
            ok = await verify_log(bus)
            assert ok.ok, ok.problem
            victim = await bus.js.get_msg(config.bus.stream, 3)
    blocks = glob.glob(str(store / "jetstream" / "*" / "streams" / "QBUS" / "msgs" / "*.blk"))
    assert blocks
    needle = victim.data[-40:]
    for path in blocks:
        raw = Path(path).read_bytes()
        if needle in raw:
            Path(path).write_bytes(raw.replace(needle, needle.upper()))
            break
    else:
        pytest.fail("event bytes not found in the store")
    with NatsServer(store) as server:
        async with await Bus.connect(BusConfig(url=server.url)) as bus:
            report = await verify_log(bus)
    assert not report.ok
    assert report.broken_seq == 3
    assert report.broken_event_id == victim.headers["Nats-Msg-Id"]


def _fields(event) -> dict:
    return {f: getattr(event, f) for f in event.__struct_fields__}


async def test_second_auditor_does_not_fork_the_chain(bus: Bus, pipeline: Pipeline, config):
    last = await _audited_log(bus, pipeline, n=2)
    second_bus = await Bus.connect(config.bus)
    second = AuditStage(second_bus)
    task = asyncio.create_task(second.run())
    await run_jobs(bus, [job(QASM2_BELL) for _ in range(4)])
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    await pipeline.stages["audit"].flushed_to(last)
    second.stop()
    await asyncio.wait_for(task, 10)
    await second_bus.close()
    report = await verify_log(bus)
    assert report.ok, report.problem
    assert report.checked == last
