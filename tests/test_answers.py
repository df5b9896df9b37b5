"""Every message on a submit subject gets exactly one answer its sender can find (issue 17).

A message that starts a job is answered on ``qbus.result.<job>``; one that holds no job
(not a submission, an unknown submit subject, no readable job id, a job id already in
use) on ``qbus.refused.<key>``, keyed by its ``Nats-Msg-Id`` (docs/protocol.md, "Answers").
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import first_stored
from qbus.cli.jobs import submit_and_wait
from qbus.client import Client
from qbus.consumers.pipeline import Pipeline
from qbus.producers.submit import job_from_file, wait_final
from qbus.schemas.events import (
    Cancel,
    Event,
    JobCompleted,
    JobFailed,
    JobRejected,
    answer,
    encode,
    new_event_id,
    new_job_id,
)
from qbus.verifier.log_audit import verify_log
from tests.jobs import QASM2_BELL, count_results, job, run_jobs
from tests.longjobs import FIRST, stages, wait_for

pytestmark = pytest.mark.timeout(180)


async def _send(bus: Bus, subject: str, data: bytes | Event, msg_id: str | None) -> int:
    """Publish raw bytes (or an event's) as a plain NATS client would; the stream seq."""
    payload = encode(data) if isinstance(data, Event) else data
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    return (await bus.js.publish(subject, payload, headers=headers)).seq


async def _refusal(bus: Bus, key: str) -> JobRejected:
    event = await first_stored(bus, bus.subjects.refused(key), timeout=30)
    assert isinstance(event, JobRejected) and event.refusal == key, event
    return event


async def _log_count(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_two_jobs_whose_submissions_share_an_event_id_both_complete(
    bus: Bus, pipeline: Pipeline
):
    # Defect 3: the second job's derived ids equalled the first's, so the server's
    # duplicate window dropped its events and it stayed "ingested" for ever.
    shared = new_event_id()
    first = msgspec.structs.replace(job(QASM2_BELL, shots=50), event_id=shared)
    second = msgspec.structs.replace(job(QASM2_BELL, shots=50), event_id=shared)
    await _send(bus, bus.subjects.submit, first, "msg-first")
    await _send(bus, bus.subjects.submit, second, "msg-second")
    finals = await asyncio.gather(
        wait_final(bus, first.job_id, timeout=30), wait_final(bus, second.job_id, timeout=30)
    )
    assert all(isinstance(f, JobCompleted) for f in finals), finals
    assert finals[0].event_id != finals[1].event_id


async def test_a_used_job_id_is_refused_and_a_resent_submission_is_not(
    bus: Bus, pipeline: Pipeline
):
    (first,) = await run_jobs(bus, [owner := job(QASM2_BELL, shots=50)])
    assert isinstance(first, JobCompleted)
    # Another submission under the same job id, valid or not: refused, keyed by its
    # message id; the job it names keeps its one final event.
    for n, source in enumerate((QASM2_BELL, "not a program")):
        other = job(source, job_id=owner.job_id)
        await _send(bus, bus.subjects.submit, other, f"dup-{n}")
        refused = await _refusal(bus, f"dup-{n}")
        assert refused.code == "duplicate_job_id" and refused.where == "$.job_id"
        assert owner.job_id in refused.message and refused.causation_id == other.event_id
    # The same submission sent again (same event id, a new message id): the same job,
    # the same answer, no refusal.
    await _send(bus, bus.subjects.submit, owner, "resent")
    (later,) = await run_jobs(bus, [job(QASM2_BELL)])  # ingest is past the resend
    assert isinstance(later, JobCompleted)
    assert await _log_count(bus, bus.subjects.refused("resent")) == 0
    assert await count_results(bus, owner.job_id) == 1
    assert await wait_final(bus, owner.job_id, timeout=5) == first
    state = await bus.job_state(owner.job_id)
    assert state is not None and state.status == "completed"


async def test_a_job_id_rejected_at_ingest_is_still_used(
    bus: Bus, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
):
    # The id's only event is the rejection on its result subject: the second submission's
    # circuit.ingested is refused by the server's guard over the job's subjects.
    caplog.set_level(logging.WARNING, logger="qbus.runner")
    (rejected,) = await run_jobs(bus, [owner := job("OPENQASM 2.0; frob q;")])
    assert isinstance(rejected, JobRejected) and rejected.refusal is None
    other = job(QASM2_BELL, job_id=owner.job_id)
    await _send(bus, bus.subjects.submit, other, "after-rejection")
    refused = await _refusal(bus, "after-rejection")
    assert refused.code == "duplicate_job_id" and refused.causation_id == other.event_id
    assert await _log_count(bus, bus.subjects.ingested(owner.job_id)) == 0
    assert await count_results(bus, owner.job_id) == 1
    # An empty ingested subject is the expected case here, not a failed read (which was
    # logged as a warning with a traceback, once per such submission).
    assert not [r for r in caplog.records if "cannot read" in r.getMessage()]


async def test_a_bad_submission_under_the_id_of_a_job_in_flight_does_not_end_it(
    config: Config, bus: Bus
):
    # The job waits for an executor that is not running: ingested and routed, no final
    # event yet. A rejection of another submission under its id would otherwise be
    # stored as that job's one final event.
    async with stages(config, bus):
        owner = job(QASM2_BELL, engine=FIRST)
        await bus.publish(owner)

        async def routed() -> bool:
            state = await bus.job_state(owner.job_id)
            return state is not None and state.status == "routed"

        await wait_for(routed, 60, "routing")
        for n, source in enumerate(("not a program", QASM2_BELL)):
            other = job(source, job_id=owner.job_id)
            await _send(bus, bus.subjects.submit, other, f"in-flight-{n}")
            refused = await _refusal(bus, f"in-flight-{n}")
            assert refused.code == "duplicate_job_id", refused
        assert await count_results(bus, owner.job_id) == 0
        assert await routed()


@pytest.mark.parametrize("junk_first", [True, False])
async def test_junk_and_a_job_under_one_new_id_in_one_batch_get_one_answer_each(
    config: Config, bus: Bus, junk_first: bool
):
    # Both wait in the log before ingest starts, so they share its first batch: the one
    # stored first holds the id, the other is refused; the job's result subject holds
    # one final event, the first one's.
    valid = job(QASM2_BELL, shots=20)
    junk = b'{"type": "job.submitted", "job_id": "%s", "shots": "x"}' % valid.job_id.encode()
    sends = [(junk, "junk"), (valid, "valid")]
    for payload, msg_id in sends if junk_first else sends[::-1]:
        await _send(bus, bus.subjects.submit, payload, msg_id)
    async with Pipeline(config) as pipeline:
        final = await wait_final(bus, valid.job_id, timeout=60)
        refused = await _refusal(bus, "valid" if junk_first else "junk")
        pipeline.check()
    if junk_first:
        assert isinstance(final, JobRejected) and final.code == "invalid_schema", final
        assert refused.code == "duplicate_job_id"
        assert await _log_count(bus, bus.subjects.ingested(valid.job_id)) == 0
    else:
        assert isinstance(final, JobCompleted), final
        assert refused.code == "invalid_schema"
    assert await count_results(bus, valid.job_id) == 1


async def test_a_job_whose_subjects_hold_only_a_cancel_is_ingested(bus: Bus, pipeline: Pipeline):
    # A cancel sent before its job arrives sits on qbus.control.<job>, inside the guard of
    # the job's circuit.ingested: ingest looks again and takes the id, as no submission
    # holds it. The job gets its one final event, and its sender no refusal.
    early = job(QASM2_BELL, shots=20)
    await _send(bus, bus.subjects.control(early.job_id), answer(early, Cancel, "test"), None)
    await _send(bus, bus.subjects.submit, early, "after-cancel")
    final = await wait_final(bus, early.job_id, timeout=30)
    assert isinstance(final, JobCompleted | JobFailed), final
    assert not (isinstance(final, JobFailed) and final.code == "duplicate_job_id")
    assert await _log_count(bus, bus.subjects.ingested(early.job_id)) == 1
    assert await _log_count(bus, bus.subjects.refused("after-cancel")) == 0
    assert await count_results(bus, early.job_id) == 1


async def test_a_client_and_the_cli_get_the_refusal_of_a_used_job_id_as_the_answer(
    config: Config, bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    # Before, the second submission's result() returned the first job's result: the
    # refusal on qbus.refused.<its message id> was never looked at.
    async with Client(config=config.bus) as client:
        owner = await client.submit(QASM2_BELL, shots=50)
        first = await owner.result(timeout=60)
        assert isinstance(first, JobCompleted)
        taker = await client.submit(QASM2_BELL, shots=60, job_id=owner.job_id)
        answer = await taker.result(timeout=15)
        assert isinstance(answer, JobRejected) and answer.code == "duplicate_job_id", answer
        assert answer.refusal == taker.event_id and answer.causation_id == taker.event_id
        # The owner's answer is still its own, and a resent submission is answered too.
        assert await owner.result(timeout=5) == first
    # ``qbus submit --wait`` under the used job id: the refusal, not the other's result.
    program = tmp_path / "bell.qasm"
    program.write_text(QASM2_BELL)
    cli_job = job_from_file(program, job_id=owner.job_id, shots=70)
    answer = await submit_and_wait(config, cli_job, timeout=15)
    assert isinstance(answer, JobRejected) and answer.refusal == cli_job.event_id
    assert answer.code == "duplicate_job_id"


async def test_two_new_submissions_racing_for_one_job_id_get_one_job_and_one_refusal(
    bus: Bus, pipeline: Pipeline
):
    job_id = new_job_id()
    racers = [job(QASM2_BELL, job_id=job_id, shots=10 + n) for n in range(2)]
    for n, racer in enumerate(racers):  # back to back: one batch, both pass the check
        await _send(bus, bus.subjects.submit, racer, f"race-{n}")
    final = await wait_final(bus, job_id, timeout=30)
    assert isinstance(final, JobCompleted)
    ingested = await first_stored(bus, bus.subjects.ingested(job_id), timeout=5)
    loser = 1 - [r.event_id for r in racers].index(ingested.causation_id)
    refused = await _refusal(bus, f"race-{loser}")
    assert refused.code == "duplicate_job_id"
    assert await count_results(bus, job_id) == 1


async def test_every_message_on_a_submit_subject_gets_one_answer(bus: Bus, pipeline: Pipeline):
    (done,) = await run_jobs(bus, [victim := job(QASM2_BELL, shots=20)])
    assert isinstance(done, JobCompleted)
    s = bus.subjects
    forged_failure = answer(victim, JobFailed, "qbus.verify", code="forged", message="forged")
    cancel = Cancel(event_id=new_event_id(), job_id=victim.job_id, reason="no")
    stray = job(QASM2_BELL)
    # (subject, payload, message id, expected code)
    cases: list[tuple[str, bytes | Event, str | None, str]] = [
        (s.submit, forged_failure, "m-failed", "not_a_submission"),
        (s.submit, done, "m-completed", "not_a_submission"),
        (s.submit, cancel, "m-cancel", "not_a_submission"),
        (s.submit + ".a.b", stray, "m-deep", "unknown_subject"),
        (s.submit + ".a.b", b"not json", "m-deep-junk", "invalid_json"),
        (s.submit, b"\x00\x01 not json", "m-junk", "invalid_json"),
        (s.submit, b'{"type": "job.submitted", "job_id": 7}', "m-no-job", "invalid_schema"),
        (s.submit, b"[]", "bad.msg id", "unknown_event_type"),  # an unusable message id
        # Undecodable, naming a job another submission holds: refused, not on its result.
        (
            s.submit,
            b'{"type": "job.submitted", "job_id": "%s", "shots": "x"}' % victim.job_id.encode(),
            "m-named",
            "invalid_schema",
        ),
        (s.submit, b"{", None, "invalid_json"),  # no message id at all
    ]
    keys = []
    for subject, payload, msg_id, _ in cases:
        seq = await _send(bus, subject, payload, msg_id)
        keys.append(msg_id if msg_id and "." not in msg_id else f"seq-{seq}")
    for key, (_, _, _, code) in zip(keys, cases, strict=True):
        refused = await _refusal(bus, key)
        assert refused.code == code, (key, refused)
        assert refused.message and refused.stage == "ingest"
    # The forged events touched nothing of the job they name.
    assert await count_results(bus, victim.job_id) == 1
    assert await wait_final(bus, victim.job_id, timeout=5) == done
    state = await bus.job_state(victim.job_id)
    assert state is not None and state.status == "completed"
    # The submission on qbus.submit.a.b started no job.
    assert await _log_count(bus, s.ingested(stray.job_id)) == 0
    # Still serving; and exactly one answer per message: one refusal each, no more.
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)
    assert await _log_count(bus, s.refused()) == len(cases)
    # The audit reads the refused inputs as inputs, and each refusal's cause is in the log.
    report = await verify_log(bus)
    assert report.ok, report.problems
