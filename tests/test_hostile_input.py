"""Hostile input (issue 17): deep nesting and oversized numbers are refused at once.

Each case goes through a real bus and the in-process stages: the input gets one
``job.rejected`` with a code at once (no redelivery), a valid job after it completes,
the input stays in the log, and the audit chain and ``verify_log`` cover it.
"""

from __future__ import annotations

import json
import time

import pytest

from qbus.bus.connection import Bus
from qbus.bus.deadletter import AdvisoryWatcher
from qbus.bus.job_log import events_of
from qbus.bus.tenancy import wait_tenant_result
from qbus.client import Client
from qbus.consumers.audit import AuditStage
from qbus.consumers.pipeline import Pipeline
from qbus.frontends.bounds import MAX_JSON_DEPTH, nested_deeper_than, shallow, top_level_only
from qbus.producers.submit import wait_final
from qbus.schemas.events import (
    DeadLetter,
    JobCompleted,
    JobFailed,
    JobRejected,
    encode,
    new_event_id,
    new_job_id,
)
from qbus.verifier.log_audit import verify_log
from tests.jobs import QASM2_BELL, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(180)

DEEP = 1_000  # msgspec raised RecursionError here (Python's recursion limit)
NEST = "[" * DEEP + "]" * DEEP


def _submission(job_id: str, **extra: object) -> dict[str, object]:
    return {
        "type": "job.submitted",
        "event_id": new_event_id(),
        "job_id": job_id,
        "producer": "hostile",
        "source": QASM2_BELL,
        **extra,
    }


def _with_deep(submission: dict[str, object], field: str, wrap: str) -> bytes:
    """``submission`` as JSON with ``field`` set to ``wrap`` around the deep nesting."""
    text = json.dumps(submission)
    return f'{text[:-1]}, "{field}": {wrap.replace("@", NEST)}}}'.encode()


async def _audited(bus: Bus, pipeline: Pipeline) -> int:
    """Wait until the audit chain covers the whole log; returns its last sequence."""
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    auditor = pipeline.stages["audit"]
    assert isinstance(auditor, AuditStage)
    await auditor.flushed_to(last, timeout=30)
    return last


async def _submit_count(bus: Bus) -> int:
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.submit)
    return (info.state.subjects or {}).get(bus.subjects.submit, 0)


async def test_json_nested_1000_deep_is_rejected_too_deep_and_audited(bus: Bus, pipeline: Pipeline):
    # The extra field, labels, an inline circuit and parameters: each 1,000 levels deep.
    payloads: list[tuple[str, bytes]] = []
    for field, wrap in [
        ("x", "@"),
        ("labels", '{"a": @}'),
        ("parameters", '{"theta": @}'),
    ]:
        job_id = new_job_id()
        payloads.append((job_id, _with_deep(_submission(job_id), field, wrap)))
    job_id = new_job_id()
    inline = _submission(job_id)
    del inline["source"]
    payloads.append((job_id, _with_deep(inline, "circuit", '{"num_qubits": 1, "ops": @}')))
    # JSON IR text in `source` is decoded by ingest's handler, not the runner.
    job_id = new_job_id()
    ir_text = '{"num_qubits": 1, "ops": [], "x": ' + NEST + "}"
    payloads.append((job_id, json.dumps(_submission(job_id, source=ir_text)).encode()))
    for job_id, data in payloads:
        assert len(data) < 5_000
        await bus.js.publish(bus.subjects.submit, data, headers={"Nats-Msg-Id": job_id})
    started = time.monotonic()
    for job_id, _ in payloads:
        final = await wait_final(bus, job_id, timeout=30)
        assert isinstance(final, JobRejected), final
        assert final.code == "too_deep", final
        assert f"more than {MAX_JSON_DEPTH} levels deep" in final.message
        assert await count_results(bus, job_id) == 1
    assert time.monotonic() - started < 10  # at once, not after redeliveries
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)
    assert await _submit_count(bus) == len(payloads) + 1  # every input stays in the log
    # The audit chain went on past them, and the offline check reads them without a crash.
    last = await _audited(bus, pipeline)
    report = await verify_log(bus)
    assert report.ok, report.problem
    assert report.checked == last


async def test_the_envelope_after_a_deep_part_still_names_the_job(bus: Bus, pipeline: Pipeline):
    # The job and event ids come after the deep part: the top level alone is read.
    job_id, event_id = new_job_id(), new_event_id()
    data = (
        b'{"type": "job.submitted", "x": '
        + NEST.encode()
        + f', "job_id": "{job_id}", "event_id": "{event_id}", "source": "x"}}'.encode()
    )
    await bus.js.publish(bus.subjects.submit, data, headers={"Nats-Msg-Id": event_id})
    final = await wait_final(bus, job_id, timeout=30)
    assert isinstance(final, JobRejected) and final.code == "too_deep"
    assert final.causation_id == event_id
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)


async def test_quil_nested_30000_parentheses_is_rejected_not_a_crash(bus: Bus, pipeline: Pipeline):
    pytest.importorskip("pyquil")
    # pyQuil's native parser crashed the process (SIGSEGV) on this before the bound.
    deep = "RX(" + "(" * 30_000 + "1" + ")" * 30_000 + ") 0\nMEASURE 0 ro[0]\n"
    jobs = [job(deep, format="quil"), job(deep)]  # named, and found by detection
    started = time.monotonic()
    for j in jobs:
        await bus.publish(j)
    for j in jobs:
        final = await wait_final(bus, j.job_id, timeout=30)
        assert isinstance(final, JobRejected), final
        assert final.code == "too_deep", final
        assert "parentheses are nested more than 64 deep" in final.message
    assert time.monotonic() - started < 10
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)
    assert await _submit_count(bus) == len(jobs) + 1
    pipeline.check()  # every stage task still running


@pytest.mark.parametrize(
    "source",
    [
        "OPENQASM 2.0;\nqreg q[" + "9" * 5_000 + "];\n",
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[' + "9" * 5_000 + "];\n",
        "OPENQASM 3.0;\nqubit[" + "9" * 5_000 + "] q;\n",
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[-' + "9" * 5_000 + "];\n",
    ],
    ids=["qreg", "index", "qubit", "negative-index"],
)
async def test_an_integer_of_5000_digits_is_rejected_at_once(
    bus: Bus, pipeline: Pipeline, source: str
):
    bad = job(source)
    started = time.monotonic()
    await bus.publish(bad)
    final = await wait_final(bus, bad.job_id, timeout=30)
    # Before: a ValueError (int() refuses > 4,300 digits), 5 redeliveries, dead_lettered.
    assert isinstance(final, JobRejected), final
    assert final.code == "qasm_syntax", final
    assert "an integer of 5,000 digits is too long" in final.message
    assert final.where and final.where.startswith("line ")
    assert len(final.message) < 200
    assert time.monotonic() - started < 5
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)
    assert await _submit_count(bus) == 2


async def test_readers_of_the_log_skip_a_forged_event_nested_1000_deep(bus: Bus) -> None:
    # Without auth anyone can store such a payload on a job's subjects: every reader
    # of the log (qbus status, Job.events, the result wait, the result stream, a
    # tenant's copy) stopped with a RecursionError in msgspec. Now each skips it.
    job_id = new_job_id()
    failed = {"type": "job.failed", "event_id": new_event_id(), "job_id": job_id}
    deep = _with_deep({**failed, "producer": "forger", "code": "x", "message": "x"}, "x", "@")
    real = JobFailed(
        event_id=new_event_id(), job_id=job_id, producer="test", code="c", message="m", tenant="A"
    )
    for subject in (bus.subjects.ingested(job_id), bus.subjects.result(job_id)):
        await bus.js.publish(subject, deep)
    await bus.js.publish(bus.subjects.result(job_id), encode(real))
    logged = [event async for _, _, event in events_of(bus, job_id, timeout=1.0)]
    assert logged == [real]
    assert await wait_final(bus, job_id, timeout=5) == real
    async with Client(config=bus.config) as client:
        async with client.results(start_sequence=1, idle_timeout=1.0) as stream:
            assert [d.event async for d in stream] == [real]
        assert [d.event async for d in client.job(job_id).events(follow=False)] == [real]
    copy = bus.subjects.tenant_result("A", job_id)
    await bus.js.publish(copy, deep)
    with pytest.raises(TimeoutError):  # the junk copy is no answer: the wait goes on
        await wait_tenant_result(bus, "A", job_id, timeout=0.5)
    await bus.js.publish(copy, encode(real))
    assert await wait_tenant_result(bus, "A", job_id, timeout=5) == real


async def test_a_dead_letter_is_written_past_a_deep_forged_event_of_its_job(bus: Bus) -> None:
    # The dead-letter watcher looks through the job's events for the message's outcome:
    # a 1,000-deep event stored there stopped it with a RecursionError, so the message
    # was never dead-lettered and its job never ended.
    submitted = job(QASM2_BELL)
    seq = await bus.publish(submitted)
    deep = _with_deep(_submission(submitted.job_id, type="circuit.ingested"), "x", "@")
    await bus.js.publish(bus.subjects.ingested(submitted.job_id), deep)
    watcher = AdvisoryWatcher(bus, "ingest", ["ingest"], grace=0, fetch_timeout=1.0)
    advisory = {"stream": bus.config.stream, "consumer": "ingest", "stream_seq": seq}
    events = await watcher.handle({**advisory, "deliveries": 5})
    assert [type(e) for e in events] == [DeadLetter, JobFailed]
    assert isinstance(await wait_final(bus, submitted.job_id, timeout=5), JobFailed)


def test_depth_scanner_skips_strings_and_counts_both_bracket_kinds():
    assert not nested_deeper_than(b"[" * 64 + b"]" * 64, 64)
    assert nested_deeper_than(b"[{" * 33 + b"}]" * 33, 64)
    assert nested_deeper_than(b"[" * 65, 64)  # unclosed counts too
    assert not nested_deeper_than(b'["' + b"[" * 100 + b'"]', 64)
    assert not nested_deeper_than(b'["\\"' + b"[" * 100 + b'"]', 64)  # escaped quote
    assert nested_deeper_than(b'["\\\\"' + b"[" * 100 + b"]" * 100 + b"]", 64)
    assert top_level_only(b'{"a": [1, [2]], "b": "]", "c": {"d": {}}, "e": 1}') == (
        b'{"a": null, "b": "]", "c": null, "e": 1}'
    )
    assert shallow(b'{"a": [1]}') == b'{"a": [1]}'
