"""Nothing lost, nothing twice: crashes, redeliveries and copies of a stage."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.runner import StageRunner
from qbus.consumers.ingest import IngestHandler
from qbus.consumers.pipeline import Pipeline
from qbus.producers.submit import wait_final
from qbus.schemas.events import JobCompleted, derived_event_id
from qbus.supervisor import Supervisor
from tests.conftest import config_toml
from tests.jobs import QASM2_BELL, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(240)

CI = os.environ.get("CI") == "true"


def slow_circuit(qubits: int = 22, layers: int = 8) -> str:
    """A circuit Aer needs about a second or more for: something to kill a stage in."""
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for layer in range(layers):
        lines += [f"ry({0.1 + layer * 0.37}) q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{i + 1}];" for i in range(qubits - 1)]
    lines.append("c = measure q;")
    return "\n".join(lines) + "\n"


def _supervisor(config: Config, tmp_path: Path) -> Supervisor:
    cfg_file = tmp_path / "qbus.toml"
    cfg_file.write_text(config_toml(config))
    return Supervisor(config.bus.url, tmp_path / "logs", extra_env={"QBUS_CONFIG": str(cfg_file)})


async def _wait_for(predicate, timeout: float, what: str, sup: Supervisor | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sup is not None:
            sup.poll()
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_executor_killed_mid_job_yields_exactly_one_completion(
    config: Config, bus: Bus, tmp_path: Path
):
    await bus.ensure_executor("qiskit-aer")
    sup = _supervisor(config, tmp_path)
    sup.start()
    try:
        slow = job(slow_circuit(), shots=200, optimize=False)
        await bus.publish(slow)

        async def executor_has_it() -> bool:
            try:
                info = await bus.js.consumer_info(config.bus.stream, "execute-qiskit-aer")
            except Exception:
                return False
            return info.num_ack_pending >= 1

        await _wait_for(executor_has_it, 90, "the executor to take the job")
        await asyncio.sleep(0.3)  # inside the engine run now
        executor = next(p for p in sup.processes if p.name.startswith("execute"))
        assert executor.proc is not None and executor.proc.poll() is None
        executor.proc.send_signal(signal.SIGKILL)
        executor.proc.wait()

        async def done() -> bool:
            return await count_results(bus, slow.job_id) >= 1

        await _wait_for(done, 120, "the job to finish after the restart", sup)
        assert executor.restarts >= 1
        final = await wait_final(bus, slow.job_id, 5)
        assert isinstance(final, JobCompleted), final
        # A straggler would show up within ack_wait; give it that long to appear.
        await asyncio.sleep(config.bus.ack_wait + 1)
        assert await count_results(bus, slow.job_id) == 1
        info = await bus.js.stream_info(
            config.bus.stream, subjects_filter=bus.subjects.executed(slow.job_id)
        )
        assert sum(info.state.subjects.values()) == 1
    finally:
        sup.stop()


async def test_random_stage_kills_still_give_one_final_event_per_job(
    config: Config, bus: Bus, tmp_path: Path
):
    await bus.ensure_executor("qiskit-aer")
    sup = _supervisor(config, tmp_path)
    sup.start()
    rng = random.Random(1234)
    jobs = [job(QASM2_BELL, shots=100) for _ in range(40 if CI else 150)]
    try:
        for j in jobs[: len(jobs) // 2]:
            await bus.publish(j)
        kills = 0
        for j in jobs[len(jobs) // 2 :]:
            await bus.publish(j)
            if rng.random() < 0.1:
                victim = rng.choice([p for p in sup.processes if not p.name.startswith("audit")])
                if victim.proc and victim.proc.poll() is None:
                    victim.proc.send_signal(signal.SIGKILL)
                    kills += 1
        assert kills >= 1

        async def all_done() -> bool:
            counts = await asyncio.gather(*(count_results(bus, j.job_id) for j in jobs))
            return all(c >= 1 for c in counts)

        await _wait_for(all_done, 180, "every job to end", sup)
        await asyncio.sleep(config.bus.ack_wait + 1)
        for j in jobs:
            assert await count_results(bus, j.job_id) == 1, j.job_id
            assert isinstance(await wait_final(bus, j.job_id, 5), JobCompleted)
    finally:
        sup.stop()


async def test_two_copies_of_a_stage_split_the_work(config: Config, bus: Bus):
    n = 120
    async with Pipeline(config, stages=("rewrite", "route", "execute", "verify")) as pipeline:
        buses = [await Bus.connect(config.bus) for _ in range(2)]
        copies = [
            StageRunner(
                b,
                stage="ingest",
                durable="ingest",
                subjects=[b.subjects.submit],
                handler=IngestHandler(),
                batch=4,
            )
            for b in buses
        ]
        tasks = [asyncio.create_task(c.run()) for c in copies]
        jobs = [job(QASM2_BELL, shots=50) for _ in range(n)]
        finals = await run_jobs(bus, jobs, timeout=120)
        for c in copies:
            c.stop()
        await asyncio.gather(*tasks)
        for b in buses:
            await b.close()
        pipeline.check()
    assert all(isinstance(f, JobCompleted) for f in finals)
    assert copies[0].processed > 0 and copies[1].processed > 0
    assert copies[0].processed + copies[1].processed == n


async def test_redelivered_input_does_not_duplicate_outputs(config: Config, bus: Bus):
    """Same input twice (as after a crash between publish and ack): one output."""
    j = job(QASM2_BELL)
    handler = IngestHandler()
    (ingested,) = await handler.handle(j)
    again = (await handler.handle(j))[0]
    assert (
        again.event_id
        == ingested.event_id
        == derived_event_id(j.event_id, "circuit.ingested", job_id=j.job_id)
    )
    first = await bus.js.publish(
        bus.subjects.for_event(ingested), b"{}", headers={"Nats-Msg-Id": ingested.event_id}
    )
    second = await bus.js.publish(
        bus.subjects.for_event(again), b"{}", headers={"Nats-Msg-Id": again.event_id}
    )
    assert not first.duplicate and second.duplicate


async def test_resubmitting_a_rejected_job_id_keeps_the_rejection(bus: Bus, pipeline: Pipeline):
    from qbus.schemas.events import JobRejected

    (first,) = await run_jobs(bus, [job("OPENQASM 2.0; qreg q[1]; bogus q[0];", job_id="rj")])
    assert isinstance(first, JobRejected)
    await bus.publish(job(QASM2_BELL, job_id="rj"))  # fixed, but under the spent id
    (later,) = await run_jobs(bus, [job(QASM2_BELL)])

    async def settled() -> bool:
        state = await bus.job_state("rj")
        return state is not None and state.status == "rejected"

    await _wait_for(settled, 30, "the job state to settle on the rejection")
    assert isinstance(later, JobCompleted)
    assert await count_results(bus, "rj") == 1


async def test_resubmitting_a_job_id_is_idempotent(bus: Bus, pipeline: Pipeline):
    """A client retry with a new event id but the same job id does not run a second job."""
    first = job(QASM2_BELL, job_id="retry-1", seed=1)
    retry = job(QASM2_BELL, job_id="retry-1", seed=2)  # different event id, different seed
    assert first.event_id != retry.event_id
    (final,) = await run_jobs(bus, [first])
    await bus.publish(retry)
    (again,) = await run_jobs(bus, [job(QASM2_BELL)])  # the bus has moved past the retry
    assert isinstance(again, JobCompleted)
    assert (await bus.job_state("retry-1")).status == "completed"
    assert await count_results(bus, "retry-1") == 1
    assert isinstance(final, JobCompleted) and final.seed == 1
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.submit)
    assert info.state.subjects[bus.subjects.submit] == 3  # the retry is kept in the log


async def test_a_job_subject_takes_one_final_event_and_recognises_its_own_copy(bus: Bus):
    from nats.js.errors import APIError

    from qbus.schemas.events import JobFailed

    runner = StageRunner(bus, stage="verify", durable="verify", subjects=[], handler=None)
    final = JobFailed(event_id="f-1", job_id="one-final", code="x", message="first")
    other = JobFailed(event_id="f-2", job_id="one-final", code="x", message="second")
    await (await bus.publish_async(final))
    for event in (final, other):  # a redelivered copy, and a different final event
        with pytest.raises(APIError) as err:
            await (await bus.publish_async(event))
        assert err.value.err_code == 10071
    assert (await runner._existing(other)) == final
    assert await count_results(bus, "one-final") == 1
