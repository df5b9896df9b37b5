"""``qbus audit verify`` over the whole log: a clean run passes, and each kind of tampering
is reported at the exact event (stream sequence, subject, event id, type).

Tampering is done the way someone with access to the server would do it, since the
stream itself is append-only for the stages:

* deleting a message through the JetStream API (``STREAM.MSG.DELETE``, what
  ``nats stream rmm`` sends; the stream allows it, as JetStream streams do by default);
* restoring the log from a doctored copy: every event re-published in order into a
  fresh server with one payload changed (what an operator restoring a backup could
  do), with the old audit chain copied along, or with a new chain computed over the
  doctored log by a fresh auditor (an attacker who controls the audit stream too).

The last case leaves a chain that matches the log; the result-hash re-derivation,
the replay and the on-chain anchors are what still catch it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.audit import AuditStage
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import (
    Event,
    ExecutionCompleted,
    JobCompleted,
    Observable,
    decode,
    encode,
)
from qbus.verifier.hashing import event_result_hash
from qbus.verifier.log_audit import AuditReport, verify_log
from tests.jobs import QASM2_BELL, QASM3_GHZ, job, run_jobs

pytestmark = pytest.mark.timeout(180)

BELL_SV = QASM2_BELL.replace("measure q -> c;\n", "")
ZZ = [msgspec.convert({"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}]}, Observable)]


class Stored(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def event(self) -> Event:
        return decode(self.data)


async def run_audited(bus: Bus, pipeline: Pipeline) -> list[Event]:
    """A mixed set of seeded jobs, run to their end and chained by the auditor."""
    finals = await run_jobs(
        bus,
        [
            job(QASM2_BELL, shots=500, seed=7),
            job(QASM3_GHZ, shots=800, seed=8),
            job(BELL_SV, method="statevector"),
            job(BELL_SV, method="expectation", observables=ZZ),
        ],
    )
    assert all(isinstance(f, JobCompleted) for f in finals), finals
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    await pipeline.stages["audit"].flushed_to(last)
    return finals


async def stored_log(bus: Bus) -> list[Stored]:
    info = await bus.js.stream_info(bus.config.stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(bus.config.stream, seq)
        out.append(Stored(seq, msg.subject, dict(msg.headers or {}), msg.data))
    return out


def first(log: list[Stored], kind: type[Event], job_id: str | None = None) -> Stored:
    return next(
        s for s in log if isinstance(s.event, kind) and (job_id is None or s.event.job_id == job_id)
    )


def problem_at(report: AuditReport, seq: int, check: str):
    found = [p for p in report.problems if p.seq == seq and p.check == check]
    assert found, f"no {check} at #{seq}: {report.problems}"
    return found[0]


async def restore_copy(
    bus: Bus,
    target: Bus,
    edit: Callable[[Stored], bytes] = lambda s: s.data,
    *,
    rechain: bool = False,
) -> None:
    """Re-publish the log, in order, into ``target`` through ``edit``; then either copy
    the audit chain as it was or (``rechain``) let a fresh auditor chain the copy."""
    await target.provision()
    for stored in await stored_log(bus):
        await target.js.publish(stored.subject, edit(stored), headers=stored.headers)
    last = (await target.js.stream_info(target.config.stream)).state.last_seq
    if rechain:
        auditor = AuditStage(target)
        task = asyncio.create_task(auditor.run())
        await auditor.flushed_to(last)
        auditor.stop()
        await asyncio.wait_for(task, 10)
        return
    info = await bus.js.stream_info(bus.config.audit_stream)
    for seq in range(1, info.state.last_seq + 1):
        msg = await bus.js.get_msg(bus.config.audit_stream, seq)
        await target.js.publish(msg.subject, msg.data, headers=msg.headers)


def with_counts(event: JobCompleted | ExecutionCompleted, counts: dict[str, int]) -> Event:
    """The event with other counts; a JobCompleted's hash recomputed to match them."""
    forged = msgspec.structs.replace(event, counts=counts)
    if isinstance(forged, JobCompleted):
        forged = msgspec.structs.replace(forged, result_hash=event_result_hash(forged))
    return forged


def shifted(counts: dict[str, int]) -> dict[str, int]:
    keys = sorted(counts)
    out = dict(counts)
    out[keys[0]] += 1
    out[keys[-1]] -= 1
    return out


def qbus_cli(*args: str, url: str, config_file: Path | None = None):
    cmd = [sys.executable, "-m", "qbus"]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    return subprocess.run([*cmd, "--url", url, *args], capture_output=True, text=True, timeout=120)


async def test_clean_log_passes_every_check(bus: Bus, pipeline: Pipeline, config: Config):
    finals = await run_audited(bus, pipeline)
    report = await verify_log(bus)
    assert report.ok, report.problems
    assert report.problems == []
    assert report.checked == report.events and report.unaudited == 0
    assert report.results_checked == len(finals)
    out = await asyncio.to_thread(qbus_cli, "audit", "verify", "--json", url=config.bus.url)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and doc["problems"] == [] and doc["results_checked"] == 4


async def test_deleted_event_is_named_with_its_subject_and_type(
    bus: Bus, pipeline: Pipeline, config: Config
):
    finals = await run_audited(bus, pipeline)
    log = await stored_log(bus)
    victim = first(log, ExecutionCompleted, finals[0].job_id)
    answer = first(log, JobCompleted, finals[0].job_id)
    await bus.js.delete_msg(config.bus.stream, victim.seq)

    report = await verify_log(bus)
    assert not report.ok
    deleted = report.problems[0]
    assert (deleted.check, deleted.seq) == ("chain_deleted", victim.seq)
    assert deleted.event_id == victim.event.event_id
    assert deleted.subject == victim.subject == f"qbus.executed.{finals[0].job_id}"
    assert deleted.type == "execution.completed"
    assert deleted.job_id == finals[0].job_id
    orphan = problem_at(report, answer.seq, "missing_cause")
    assert victim.event.event_id in orphan.message
    assert (orphan.type, orphan.event_id) == ("job.completed", answer.event.event_id)
    assert report.broken_seq == victim.seq

    out = await asyncio.to_thread(qbus_cli, "audit", "verify", url=config.bus.url)
    assert out.returncode == 1
    assert f"#{victim.seq}" in out.stderr and victim.event.event_id in out.stderr
    assert "[chain_deleted]" in out.stderr and "execution.completed" in out.stderr
    out = await asyncio.to_thread(qbus_cli, "audit", "verify", "--json", url=config.bus.url)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["problems"][0]["seq"] == victim.seq
    assert doc["problems"][0]["check"] == "chain_deleted"


async def test_altered_payload_is_named_and_its_consequences_follow(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    finals = await run_audited(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    victim = first(log, ExecutionCompleted, finals[1].job_id)
    answer = first(log, JobCompleted, finals[1].job_id)

    def edit(stored: Stored) -> bytes:
        if stored.seq != victim.seq:
            return stored.data
        event = stored.event
        return encode(msgspec.structs.replace(event, seed=event.seed + 1))

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit)
            report = await verify_log(restored)
    assert not report.ok
    altered = report.problems[0]
    assert (altered.check, altered.seq) == ("chain_altered", victim.seq)
    assert (altered.type, altered.event_id) == ("execution.completed", victim.event.event_id)
    assert altered.subject == victim.subject
    mismatch = problem_at(report, answer.seq, "result_mismatch")
    assert mismatch.related_seq == victim.seq
    assert "seed" in mismatch.message
    assert {p.seq for p in report.problems} == {victim.seq, answer.seq}


async def test_changed_counts_are_caught_even_with_a_rebuilt_chain(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    """The attacker edits a result's counts, recomputes its result hash so the event is
    self-consistent, and re-chains the doctored log: the chain then matches, but the
    result no longer re-derives from the ExecutionCompleted it answers."""
    finals = await run_audited(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    victim = first(log, JobCompleted, finals[0].job_id)
    source = first(log, ExecutionCompleted, finals[0].job_id)
    forged_counts = shifted(victim.event.counts)

    def edit(stored: Stored) -> bytes:
        if stored.seq == victim.seq:
            return encode(with_counts(stored.event, forged_counts))
        return stored.data

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit, rechain=True)
            report = await verify_log(restored)
    assert not report.ok
    assert [p.check for p in report.problems] == ["result_mismatch"]
    p = report.problems[0]
    assert (p.seq, p.type, p.event_id) == (victim.seq, "job.completed", victim.event.event_id)
    assert p.subject == f"qbus.result.{finals[0].job_id}"
    assert p.related_seq == source.seq
    key = sorted(forged_counts)[0]
    assert f"counts ('{key}': {forged_counts[key]} vs {victim.event.counts[key]}" in p.message


async def test_counts_changed_without_rehashing_are_named_twice(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    finals = await run_audited(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    victim = first(log, JobCompleted, finals[1].job_id)

    def edit(stored: Stored) -> bytes:
        if stored.seq == victim.seq:
            event = stored.event
            return encode(msgspec.structs.replace(event, counts=shifted(event.counts)))
        return stored.data

    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restore_copy(bus, restored, edit)
            report = await verify_log(restored)
    checks = [(p.seq, p.check) for p in report.problems]
    assert checks == [
        (victim.seq, "chain_altered"),
        (victim.seq, "result_hash"),
        (victim.seq, "result_mismatch"),
    ]
    assert all(p.event_id == victim.event.event_id for p in report.problems)


async def test_inserted_event_inside_the_chained_range_is_reported(
    bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    finals = await run_audited(bus, pipeline)
    await pipeline.stop()
    log = await stored_log(bus)
    # A forged second final event slipped in right after the real one: the copy shifts
    # every later event by one sequence, which the chain sees.
    victim = first(log, JobCompleted, finals[2].job_id)
    with NatsServer(tmp_path / "restored") as other:
        async with await Bus.connect(BusConfig(url=other.url)) as restored:
            await restored.provision()
            for stored in log:
                await restored.js.publish(stored.subject, stored.data, headers=stored.headers)
                if stored.seq == victim.seq:
                    await restored.js.publish("qbus.control.x", b"{}")
            info = await bus.js.stream_info(bus.config.audit_stream)
            for seq in range(1, info.state.last_seq + 1):
                msg = await bus.js.get_msg(bus.config.audit_stream, seq)
                await restored.js.publish(msg.subject, msg.data, headers=msg.headers)
            report = await verify_log(restored)
    assert not report.ok
    assert report.problems[0].seq == victim.seq + 1
    assert report.problems[0].check == "chain_altered"
    assert any(p.check == "undecodable" and p.seq == victim.seq + 1 for p in report.problems)


async def test_a_removed_chain_record_is_reported(bus: Bus, pipeline: Pipeline, config: Config):
    await run_audited(bus, pipeline)
    await run_audited(bus, pipeline)  # a second round: a second chain record at least
    info = await bus.js.stream_info(config.bus.audit_stream)
    assert info.state.messages >= 2
    await bus.js.delete_msg(config.bus.audit_stream, info.state.first_seq)
    report = await verify_log(bus)
    assert not report.ok
    assert report.problems[0].check == "chain_record"
    assert "the audit chain itself is broken" in report.problems[0].message
    assert report.checked == 0  # nothing after a broken record is trusted to the chain
