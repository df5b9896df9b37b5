"""The log checks on their own (no server): a log written by the real stage handlers
checks clean, and each semantic check names the event it concerns."""

from __future__ import annotations

import msgspec

from qbus.bus.subjects import Subjects
from qbus.consumers.execute import ExecuteHandler
from qbus.consumers.verify import VerifyHandler
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.audit import ChainEntry, event_digest
from qbus.schemas.events import (
    CircuitIngested,
    Event,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobOptions,
    JobSubmitted,
    encode,
)
from qbus.schemas.ir import circuit_hash, stats
from qbus.verifier.audit_checks import LogChecker
from tests.jobs import QASM2_BELL

SUBJECTS = Subjects("qbus")


async def real_log(job_id: str = "j1") -> list[Event]:
    """Submission → ingested → requested → completed → final, the last two made by the
    executor's and verifier's own handlers."""
    circuit = parse_qasm(QASM2_BELL)[0]
    options = JobOptions(shots=400, seed=9)
    submitted = JobSubmitted(event_id=f"{job_id}-s", job_id=job_id, source=QASM2_BELL)
    ingested = CircuitIngested(
        event_id=f"{job_id}-i",
        job_id=job_id,
        causation_id=submitted.event_id,
        circuit=circuit,
        circuit_hash=circuit_hash(circuit),
        source_format="qasm2",
        options=options,
        stats=stats(circuit),
    )
    requested = ExecutionRequested(
        event_id=f"{job_id}-r",
        job_id=job_id,
        causation_id=ingested.event_id,
        engine="qiskit-aer",
        circuit=circuit,
        circuit_hash=ingested.circuit_hash,
        options=options,
    )
    handler = ExecuteHandler("qiskit-aer", None)
    try:
        (completed,) = await handler.handle(requested)
    finally:
        handler.close()
    (final,) = await VerifyHandler().handle(completed)
    assert isinstance(final, JobCompleted)
    return [submitted, ingested, requested, completed, final]


def check(
    events: list[Event], subjects: dict[int, str] | None = None, chain: bool = False
) -> LogChecker:
    checker = LogChecker(SUBJECTS)
    entries = {}
    stored = []
    for seq, event in enumerate(events, 1):
        subject = (subjects or {}).get(seq) or SUBJECTS.for_event(event)
        data = encode(event)
        digest = event_digest(subject, event.event_id, data)
        stored.append((seq, subject, event.event_id, data, digest))
        entries[seq] = ChainEntry(seq, event.event_id, digest, subject, "")
    if chain:
        checker = LogChecker(SUBJECTS, entries)
    for row in stored:
        checker.feed(*row)
    checker.finish()
    return checker


async def test_a_log_written_by_the_real_handlers_checks_clean():
    events = await real_log()
    checker = check(events, chain=True)
    assert checker.problems == []
    assert (checker.checked, checker.results_checked) == (5, 1)


async def test_a_tenant_submission_and_rejected_junk_on_submit_are_not_problems():
    events = await real_log()
    checker = LogChecker(SUBJECTS)
    checker.feed(1, "qbus.submit", "junk-1", b"not json", "")
    checker.feed(2, "qbus.submit.acme", "junk-2", b"{}", "")
    for seq, event in enumerate(events, 3):
        subject = "qbus.submit.acme" if seq == 3 else SUBJECTS.for_event(event)
        checker.feed(seq, subject, event.event_id, encode(event), "")
    checker.feed(9, "qbus.executed.j1", "junk-3", b"[1, 2]", "")
    checker.finish()
    assert [(p.seq, p.check) for p in checker.problems] == [(9, "undecodable")]


async def test_an_event_moved_to_another_job_is_named():
    events = await real_log()
    checker = check(events, subjects={5: "qbus.result.someone-else"})
    assert [(p.seq, p.check, p.type) for p in checker.problems] == [
        (5, "subject_mismatch", "job.completed")
    ]
    assert "qbus.result.j1" in checker.problems[0].message


async def test_a_result_that_does_not_match_its_request_is_named():
    events = await real_log()
    completed = events[3]
    assert isinstance(completed, ExecutionCompleted)
    events[3] = msgspec.structs.replace(
        completed, options=msgspec.structs.replace(completed.options, shots=500)
    )
    checker = check(events)
    found = {(p.seq, p.check) for p in checker.problems}
    assert (4, "request_mismatch") in found
    message = next(p.message for p in checker.problems if p.check == "request_mismatch")
    assert "options.shots (500 vs 400)" in message
    # The final event's shots no longer re-derive from it either.
    assert (5, "result_mismatch") in found


async def test_an_edited_circuit_no_longer_matches_its_hash():
    events = await real_log()
    ingested = events[1]
    assert isinstance(ingested, CircuitIngested)
    ops = ingested.circuit.ops[1:]  # the H gate dropped
    events[1] = msgspec.structs.replace(
        ingested, circuit=msgspec.structs.replace(ingested.circuit, ops=ops)
    )
    checker = check(events)
    assert [(p.seq, p.check, p.type) for p in checker.problems] == [
        (2, "circuit_hash", "circuit.ingested")
    ]
