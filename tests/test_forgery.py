"""Forged final events (issue 17, defect 7) on a default-mode bus: no NATS auth, so anyone
can publish on ``qbus.result.<job>``. With stage keys (``qbus up``'s dev keys,
qbus/bus/signing.py) a forged final event fails ``qbus audit verify``, the client skips
it for the real one, and the stages do not act on it.

Real nats-server, real stages and engine; the forger is a plain NATS publish.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.deadletter import replay
from qbus.bus.jobstate import JobState
from qbus.bus.signing import HEADER, Signer, Trust, generate_keys, load_trust
from qbus.bus.tenancy import tenant_writes, wait_tenant_refusal, wait_tenant_result
from qbus.cli.dlq import replay_signer
from qbus.cli.jobs import watch_line
from qbus.client import Client, Job
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.retry import find_request
from qbus.consumers.route import last_execution
from qbus.producers.control import send_control
from qbus.producers.submit import wait_final
from qbus.schemas.events import (
    Cancel,
    DeadLetter,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobOptions,
    JobRejected,
    Reroute,
    decode,
    encode,
    new_event_id,
    new_job_id,
)
from qbus.schemas.ir import Circuit
from qbus.verifier.log_audit import AuditReport, verify_log
from tests.conftest import config_toml
from tests.jobs import BELL_IR, QASM2_BELL, count_results, job, run_jobs
from tests.longjobs import FIRST, SECOND, Executor, stages, wait_for

pytestmark = pytest.mark.timeout(120)

NO_EXECUTOR = ("ingest", "rewrite", "route", "verify", "audit", "control")


@pytest.fixture
def signed(config: Config) -> Path:
    """``qbus up``'s dev keys in the test's state directory; returns the public-key file."""
    return generate_keys(config.state_dir)


def stage_key(public: Path, stage: str) -> Signer:
    """The private key ``generate_keys`` wrote for ``stage`` beside ``public``."""
    return Signer.from_secret(stage, (public.parent / stage).read_text().strip())


async def forge(
    bus: Bus,
    job: Job,
    final: type[JobFailed | JobRejected],
    stage: str,
    code: str,
    **fields: object,
) -> int:
    """Publish a ``final`` event of ``job`` claiming to come from ``stage``, answering its
    submission, as anyone on the bus can: no signature, its fresh event id as the
    message id (the envelope checks all pass). Returns its stream sequence."""
    submission = await bus.js.get_msg(bus.config.stream, job.sequence)
    event = final(
        event_id=new_event_id(),
        job_id=job.job_id,
        causation_id=decode(submission.data).event_id,
        producer=f"qbus.{stage}",
        code=code,
        message="forged",
        stage=stage,
        **fields,  # type: ignore[arg-type]
    )
    ack = await bus.js.publish(
        bus.subjects.for_event(event), encode(event), headers={"Nats-Msg-Id": event.event_id}
    )
    return ack.seq


async def audited(bus: Bus, config: Config, timeout: float = 20.0) -> AuditReport:
    """``verify_log`` with the stages' public keys, once the auditor has chained the log."""
    bus.trust = load_trust(config)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        report = await verify_log(bus)
        if report.unaudited == 0 or asyncio.get_running_loop().time() > deadline:
            return report
        await asyncio.sleep(0.2)


async def wait_routed(bus: Bus, job_id: str) -> None:
    """Until the job waits for an executor."""
    for _ in range(200):
        state = await bus.job_state(job_id)
        if state is not None and state.status == "routed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} not routed: {state}")


def cli(config: Config, *args: str) -> subprocess.CompletedProcess:
    """``qbus ARGS`` against the test's bus, with its state directory (and keys)."""
    path = Path(config.state_dir) / "qbus.toml"
    path.write_text(config_toml(config))
    env = {**os.environ, "QBUS_CONFIG": str(path), "QBUS_STATE_DIR": config.state_dir}
    return subprocess.run(
        [sys.executable, "-m", "qbus", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_audit(config: Config) -> subprocess.CompletedProcess:
    return cli(config, "audit", "verify", "--no-chain")


async def test_forged_failure_after_completion_fails_the_audit(
    config: Config, bus: Bus, signed: Path
) -> None:
    async with (
        Pipeline(config) as pipeline,
        Client(config=config.bus, trusted_keys=signed) as client,
    ):
        submitted = await client.submit(QASM2_BELL, shots=200, seed=5)
        real = await submitted.result(timeout=60)
        assert isinstance(real, JobCompleted)
        clean = await audited(bus, config)
        assert clean.ok, clean.problems
        assert clean.signatures_checked >= 2  # its ExecutionCompleted and JobCompleted
        seq = await forge(bus, submitted, JobFailed, "verify", "engine_error")
        assert await count_results(bus, submitted.job_id) == 2
        report = await audited(bus, config)
        assert not report.ok
        assert [(p.check, p.seq) for p in report.problems] == [("unsigned_final", seq)]
        assert "no stage signature" in report.problems[0].message
        # The client still answers with the real result.
        again = await client.job(submitted.job_id).result(timeout=10)
        assert isinstance(again, JobCompleted) and again.event_id == real.event_id
        # A replay of the results holds the real one only.
        async with client.results(start_sequence=1, idle_timeout=1.0) as stream:
            replayed = [d.event.event_id async for d in stream]
        assert replayed == [real.event_id]
        pipeline.check()
    cli = cli_audit(config)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "[unsigned_final]" in cli.stderr and f"#{seq}" in cli.stderr


async def test_forged_rejection_in_flight_is_skipped_and_the_job_runs(
    config: Config, bus: Bus, signed: Path
) -> None:
    await bus.ensure_executor("qiskit-aer")
    async with (
        Pipeline(config, stages=NO_EXECUTOR) as pipeline,
        Client(config=config.bus, trusted_keys=signed) as client,
    ):
        submitted = await client.submit(QASM2_BELL, shots=200, seed=5)
        await wait_routed(bus, submitted.job_id)
        seq = await forge(bus, submitted, JobRejected, "ingest", "qasm_syntax")
        # And a refusal of its submission, which the client takes as an answer too.
        key = submitted.event_id
        refused = await forge(
            bus, submitted, JobRejected, "ingest", "duplicate_job_id", refusal=key
        )
        # And the state the executor's gate reads: the bucket is writable too.
        rejected = JobState(status="rejected", stage="ingest", event_id="forged", updated=0.0)
        kv = f"$KV.{bus.config.kv_jobs}.{submitted.job_id}"
        await bus.js.publish(kv, msgspec.json.encode(rejected))
        waiting = asyncio.ensure_future(submitted.result(timeout=60))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the forged rejection is not taken as the answer
        async with Pipeline(config, stages=("execute",)) as executor:
            final = await waiting
            assert isinstance(final, JobCompleted), final
            executor.check()
        for _ in range(100):  # the state is written just after the final event
            state = await bus.job_state(submitted.job_id)
            if state is not None and state.status != "routed":
                break
            await asyncio.sleep(0.05)
        assert state is not None and state.status == "completed"
        report = await audited(bus, config)
        assert [(p.check, p.seq) for p in report.problems] == [
            ("unsigned_final", seq),
            ("unsigned_final", refused),
        ]
        # The job's events go on past the forged rejection to its real end.
        logged = [d.event async for d in client.job(submitted.job_id).events(follow=False)]
        assert JobRejected in [type(e) for e in logged]
        assert logged[-1].event_id == final.event_id
        pipeline.check()
    cli = cli_audit(config)
    assert cli.returncode == 1 and "[unsigned_final]" in cli.stderr


async def test_a_signed_run_of_every_kind_of_end_audits_clean(
    config: Config, bus: Bus, signed: Path
) -> None:
    """Rejected (ingest), run and verified, answered from the cache (route), cancelled
    (control): every stage signs what it may write, and the audit finds nothing."""
    async with Pipeline(config, stages=NO_EXECUTOR) as pipeline:
        bus.trust = load_trust(config)
        await bus.ensure_executor("qiskit-aer")
        rejected, first, cancelled = (
            job("OPENQASM 2.0;\nqreg q[1];\nfoo q[0];\n"),
            job(QASM2_BELL, shots=300, seed=11),
            job(QASM2_BELL, shots=300, seed=12),
        )
        await bus.publish(cancelled)
        await bus.publish(rejected)
        await wait_routed(bus, cancelled.job_id)
        cancel = Cancel(event_id=new_event_id(), job_id=cancelled.job_id)
        answers = await send_control(bus, cancel, 30)
        assert [type(a) for a in answers] == [JobFailed]
        async with Pipeline(config, stages=("execute",)):
            (ran,) = await run_jobs(bus, [first])
        (cached,) = await run_jobs(bus, [job(QASM2_BELL, shots=300, seed=11)])
        finals = [await wait_final(bus, j.job_id, 10) for j in (rejected, cancelled)]
        assert [type(e) for e in finals] == [JobRejected, JobFailed]
        assert isinstance(ran, JobCompleted) and isinstance(cached, JobCompleted)
        assert cached.cached and cached.producer == "qbus.route"
        report = await audited(bus, config)
        assert report.ok, report.problems
        # Four final events, the one run's ExecutionCompleted, and the steps of the
        # three jobs past ingest (ingested, rewritten; requested for the two routed).
        assert report.signatures_checked == 13
        pipeline.check()


async def test_a_forged_execution_request_is_not_run_and_fails_the_audit(
    config: Config, bus: Bus, signed: Path
) -> None:
    # Intermediate events were signed but not required: anyone could publish an
    # execution.requested for a job of their own on an engine's subject, and the
    # executor ran it and the verify stage signed its result.
    async with Pipeline(config) as pipeline:
        bus.trust = load_trust(config)
        (first,) = await run_jobs(bus, [job(QASM2_BELL, shots=100, seed=3)])
        assert isinstance(first, JobCompleted)
        real = await bus.js.get_last_msg(
            bus.config.stream, bus.subjects.exec(first.engine, first.job_id)
        )
        request = decode(real.data)
        assert isinstance(request, ExecutionRequested)
        forged = msgspec.structs.replace(request, event_id=new_event_id(), job_id=new_job_id())
        ack = await bus.js.publish(
            bus.subjects.for_event(forged),
            encode(forged),
            headers={"Nats-Msg-Id": forged.event_id},
        )
        # A job after it on the same executor: by its end the forged request was read.
        (after,) = await run_jobs(bus, [job(QASM2_BELL, shots=100, seed=4)])
        assert isinstance(after, JobCompleted)
        assert await count_results(bus, forged.job_id) == 0
        executed = await bus.js.stream_info(
            bus.config.stream, subjects_filter=bus.subjects.executed(forged.job_id)
        )
        assert not executed.state.subjects  # never run
        report = await audited(bus, config)
        assert ("unsigned_event", ack.seq) in [(p.check, p.seq) for p in report.problems]
        assert {p.seq for p in report.problems} == {ack.seq}, report.problems
        assert "no stage signature" in report.problems[0].message
        pipeline.check()
    cli = cli_audit(config)
    assert cli.returncode == 1 and "[unsigned_event]" in cli.stderr


async def test_a_reroute_never_republishes_a_forged_request(
    config: Config, bus: Bus, signed: Path
) -> None:
    # The control stage moved the job's last execution.requested in the log to the new
    # engine under its own signature: a forged one stored last was laundered into a
    # signed request (here: 7 shots instead of 100).
    async with stages(config, bus):
        second = await Executor(config, SECOND).start()
        try:
            submitted = job(QASM2_BELL, engine=FIRST, shots=100, seed=9)
            await bus.publish(submitted)

            async def routed() -> bool:
                state = await bus.job_state(submitted.job_id)
                return state is not None and state.status == "routed"

            await wait_for(routed, 60, "routing")  # the first rewrite loads its passes
            stored = await bus.js.get_last_msg(
                bus.config.stream, bus.subjects.exec(FIRST, submitted.job_id)
            )
            real = decode(stored.data)
            assert isinstance(real, ExecutionRequested)
            options = msgspec.structs.replace(real.options, shots=7)
            forged = msgspec.structs.replace(real, event_id=new_event_id(), options=options)
            await bus.js.publish(
                bus.subjects.for_event(forged),
                encode(forged),
                headers={"Nats-Msg-Id": forged.event_id},
            )
            await bus.publish(
                Reroute(event_id=new_event_id(), job_id=submitted.job_id, engine=SECOND)
            )
            final = await wait_final(bus, submitted.job_id, 60)
        finally:
            await second.stop()
    assert isinstance(final, JobCompleted) and final.engine == SECOND, final
    assert final.shots == 100


async def test_a_retry_never_takes_a_forged_request_under_the_real_ones_id(
    config: Config, bus: Bus, signed: Path
) -> None:
    # Request ids are derived (uuid5 of known inputs): a forger can store a request
    # under the real one's event id, before it, with another message id. The retry
    # took the first with that id from the log and republished it signed by verify.
    real = ExecutionRequested(
        event_id=new_event_id(),
        job_id=new_job_id(),
        producer="qbus.route",
        engine="reference",
        circuit=msgspec.convert(BELL_IR, Circuit),
        circuit_hash="sha256:00",
        options=JobOptions(shots=100, seed=1),
    )
    forged = msgspec.structs.replace(real, options=JobOptions(shots=7, seed=1))
    subject = bus.subjects.for_event(real)
    await bus.js.publish(subject, encode(forged), headers={"Nats-Msg-Id": "forged-first"})
    bus.signer = stage_key(signed, "route")
    await bus.publish(real)
    failed = ExecutionFailed(
        event_id=new_event_id(),
        job_id=real.job_id,
        causation_id=real.event_id,
        producer="qbus.execute.reference",
        engine="reference",
        code="engine_error",
        message="boom",
        retryable=True,
    )
    bus.trust = load_trust(config)
    assert await find_request(bus, failed, timeout=2) == real


async def test_the_route_stage_never_keys_a_result_by_a_forged_run(
    config: Config, bus: Bus, signed: Path
) -> None:
    # The result cache keys a verified result by the run it answers, read back from the
    # log: a forged run there (another circuit hash) would file the result under it.
    forged = ExecutionCompleted(
        event_id=new_event_id(),
        job_id=new_job_id(),
        producer="qbus.execute.reference",
        engine="reference",
        engine_version="1",
        circuit=msgspec.convert(BELL_IR, Circuit),
        circuit_hash="sha256:" + "11" * 32,
        options=JobOptions(shots=100, seed=1),
        seed=1,
    )
    await bus.js.publish(
        bus.subjects.for_event(forged), encode(forged), headers={"Nats-Msg-Id": "forged"}
    )
    assert await last_execution(bus, forged.job_id) == forged  # unchecked without keys
    bus.trust = load_trust(config)
    assert await last_execution(bus, forged.job_id) is None


async def test_a_replayed_dead_letter_is_signed_by_the_stage_that_wrote_it(
    config: Config, bus: Bus, signed: Path
) -> None:
    # A replay goes out under a new event id, which voids the original's signature:
    # with steps now required to be signed, the stages would ignore it as a forgery.
    rewritten = decode(
        msgspec.json.encode(
            {
                "type": "circuit.rewritten",
                "event_id": new_event_id(),
                "job_id": new_job_id(),
                "producer": "qbus.rewrite",
                "circuit": BELL_IR,
                "circuit_hash": "sha256:00",
                "original_hash": "sha256:00",
                "options": {},
                "before": {"gates": 2, "two_qubit_gates": 1, "depth": 2},
                "after": {"gates": 2, "two_qubit_gates": 1, "depth": 2},
            }
        )
    )
    bus.signer = stage_key(signed, "rewrite")
    subject = bus.subjects.for_event(rewritten)
    letter = DeadLetter(
        event_id=new_event_id(),
        job_id=rewritten.job_id,
        producer="qbus.route",
        stage="route",
        consumer="route",
        stream=bus.config.stream,
        subject=subject,
        stream_seq=await bus.publish(rewritten),
        deliveries=5,
        reason="boom",
    )
    trust = load_trust(config)
    assert trust is not None
    _, unsigned = await replay(bus, letter)
    _, resigned = await replay(bus, letter, partial(replay_signer, config))
    copies = [await bus.js.get_msg(bus.config.stream, seq) for seq in (unsigned, resigned)]
    problems = [trust.message_problem(subject, c.data, c.headers) for c in copies]
    assert "no stage signature" in (problems[0] or "") and problems[1] is None
    assert replay_signer(config, job(QASM2_BELL)) is None  # a submission needs none


async def test_status_and_watch_show_a_forged_final_as_forged(
    config: Config, bus: Bus, signed: Path
) -> None:
    # qbus status read the log without the stages' keys and stopped at the forged final
    # as the job's end; qbus watch printed it as the job's result.
    job_id = new_job_id()
    watched = await bus.nc.subscribe(bus.subjects.result(job_id))  # what qbus watch reads
    forged = JobFailed(
        event_id=new_event_id(),
        job_id=job_id,
        producer="qbus.verify",
        code="engine_error",
        message="forged by anyone",
        stage="verify",
    )
    subject = bus.subjects.result(job_id)
    ack = await bus.js.publish(subject, encode(forged), headers={"Nats-Msg-Id": forged.event_id})
    real = msgspec.structs.replace(forged, event_id=new_event_id(), message="the real end")
    bus.signer = stage_key(signed, "verify")
    await bus.publish(real, headers={"Nats-Expected-Last-Subject-Sequence": str(ack.seq)})
    state = JobState(status="failed", stage="verify", event_id=real.event_id, updated=0.0)
    await (await bus.put_state_async(job_id, state))
    trust = load_trust(config)
    lines = [watch_line(trust, await watched.next_msg(timeout=5), False) for _ in range(2)]
    assert "FORGED (no stage signature" in lines[0][0] and lines[0][1]  # on stderr
    assert "FORGED" not in lines[1][0] and "the real end" in lines[1][0] and not lines[1][1]
    status = cli(config, "status", job_id)
    assert status.returncode == 0, status.stderr
    shown = [line for line in status.stdout.splitlines() if line.startswith("#")]
    assert len(shown) == 2, status.stdout
    assert "forged by anyone" in shown[0] and "FORGED (no stage signature" in shown[0]
    assert "the real end" in shown[1] and "FORGED" not in shown[1]


async def test_a_tenant_never_takes_a_signed_copy_of_another_event_as_its_answer(
    config: Config, bus: Bus, signed: Path
) -> None:
    # A tenant copy is verified against its original's subject, which the copy names
    # itself: a real, signed copy of job X's result (or of message K's refusal) stored
    # again on job Y's result subject (or K2's refusal subject) verified, and was Y's
    # answer. On an open bus anyone may store it there.
    bus.signer = stage_key(signed, "verify")
    done = JobFailed(
        event_id=new_event_id(),
        job_id=new_job_id(),
        producer="qbus.verify",
        code="engine_error",
        message="X's end",
        stage="verify",
        tenant="A",
    )
    await asyncio.gather(*await tenant_writes(bus, done))
    bus.signer = stage_key(signed, "ingest")
    refused = JobRejected(
        event_id=new_event_id(),
        job_id=new_job_id(),
        producer="qbus.ingest",
        code="duplicate_job_id",
        message="used",
        stage="ingest",
        tenant="A",
        refusal="key-1",
    )
    await asyncio.gather(*await tenant_writes(bus, refused))
    bus.trust = load_trust(config)
    # The copies where they belong verify and are answers ...
    assert await wait_tenant_result(bus, "A", done.job_id, timeout=2) == done
    assert await wait_tenant_refusal(bus, "A", "key-1", timeout=2) == refused
    # ... and are no answer for another job or message. (Published, not stored: the
    # tenant stream drops a copy under a message id it holds, but only within its
    # duplicate window; a waiting tenant takes what is published as well.)
    subjects = bus.subjects
    misplaced = [
        (
            subjects.tenant_result("A", done.job_id),
            subjects.tenant_result("A", "other"),
            partial(wait_tenant_result, bus, "A", "other", timeout=1),
        ),
        (
            subjects.tenant_refused("A", "key-1"),
            subjects.tenant_refused("A", "key-2"),
            partial(wait_tenant_refusal, bus, "A", "key-2", timeout=1),
        ),
    ]
    for origin, elsewhere, wait in misplaced:
        stored = await bus.js.get_last_msg(bus.config.tenant_stream, origin)
        waiting = asyncio.ensure_future(wait())
        while not waiting.done():  # again until the wait ends: once it has subscribed
            await bus.nc.publish(elsewhere, stored.data, headers=stored.headers)
            await asyncio.wait([waiting], timeout=0.05)
        with pytest.raises(TimeoutError):
            waiting.result()


def test_a_signature_counts_only_from_the_stage_allowed_to_write(signed: Path) -> None:
    trust = Trust.load(signed)

    def stored(stage: str, event: Event) -> dict[str, str]:
        signer = stage_key(signed, stage)
        subject = f"qbus.result.{event.job_id}"
        return {
            "Nats-Msg-Id": event.event_id,
            HEADER: signer.header(subject, event.event_id, encode(event)),
        }

    def completed(producer: str) -> JobCompleted:
        return msgspec.convert(
            {
                "event_id": "e1",
                "job_id": "j1",
                "producer": producer,
                "engine": "qiskit-aer",
                "engine_version": "1",
                "circuit_hash": "sha256:00",
                "method": "sample",
                "shots": 1,
                "seed": 1,
                "verification": {"verdict": "pass"},
                "result_hash": "sha256:00",
            },
            JobCompleted,
        )

    good = completed("qbus.verify")
    assert trust.problem(good, "qbus.result.j1", encode(good), stored("verify", good)) is None
    # Signed by ingest, which may not write a result, and claiming to be ingest.
    wrong = completed("qbus.ingest")
    assert "may not write" in trust.problem(
        wrong, "qbus.result.j1", encode(wrong), stored("ingest", wrong)
    )
    # Signed by ingest, claiming to be verify.
    assert "claims producer" in trust.problem(
        good, "qbus.result.j1", encode(good), stored("ingest", good)
    )
    # A payload changed after signing.
    changed = msgspec.structs.replace(good, shots=2)
    assert "no trusted stage key" in trust.problem(
        changed, "qbus.result.j1", encode(changed), stored("verify", good)
    )
