"""``qbus cancel`` (issue 5): a cancelled job ends with exactly one JobFailed(cancelled),
no chunk runs after the cancel is processed, and a finished job is left as it is.

Real nats-server and stages; the CLI runs as its own process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.producers.control import send_control
from qbus.producers.submit import wait_final
from qbus.schemas.events import (
    Cancel,
    ControlRejected,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    new_event_id,
)
from tests.jobs import QASM2_BELL, count_results, job
from tests.longjobs import (
    FIRST,
    Executor,
    executor_idle,
    ledger_of,
    log_of,
    stages,
    sweep_job,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)


async def qbus_cli(config: Config, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI as its own process (without blocking the stages in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qbus",
        "--url",
        config.bus.url,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def test_cancel_mid_sweep_stops_the_chunks_and_ends_the_job_once(config: Config, bus: Bus):
    async with stages(config, bus):
        first = await Executor(config, FIRST, batch=4).start()
        try:
            j = sweep_job(FIRST)
            await bus.publish(j)

            async def some_done():
                ledger = await ledger_of(bus, j.job_id)
                return ledger is not None and len(ledger.done) >= 8

            await wait_for(some_done, 120, "8 chunks done")
            await first.stop()
            status = await qbus_cli(config, "status", j.job_id)
            assert status.returncode == 0, status.stderr
            assert "chunks" in status.stdout and "/64 chunks" in status.stdout

            cancel = Cancel(event_id=new_event_id(), job_id=j.job_id, reason="test")
            answers = await send_control(bus, cancel, 30)
            # The executor comes back: what is left of the job is skipped, not run.
            first = await Executor(config, FIRST, batch=4).start()
            await wait_for(lambda: executor_idle(bus, FIRST), 60, "executor drained")
            final = await wait_final(bus, j.job_id, 10)
            log = await log_of(bus, j.job_id)
        finally:
            await first.stop()
    assert isinstance(answers[0], JobFailed), answers
    assert isinstance(final, JobFailed) and final.code == "cancelled", final
    assert final.causation_id == cancel.event_id and "test" in final.message
    assert await count_results(bus, j.job_id) == 1
    # Nothing ran after the cancel: every ExecutionCompleted is before the JobFailed.
    kinds = [type(e) for _, e in log]
    end = kinds.index(JobFailed)
    assert ExecutionCompleted not in kinds[end + 1 :]
    ran = kinds.count(ExecutionCompleted)
    assert 8 <= ran < 64
    assert kinds.count(ExecutionRequested) == 64
    ledger = await ledger_of(bus, j.job_id)
    assert ledger is not None and ledger.status == "cancelled"
    state = await bus.job_state(j.job_id)
    assert state is not None and state.status == "failed"


async def test_cancel_a_waiting_job_and_a_finished_one(config: Config, bus: Bus):
    async with stages(config, bus):
        # Nothing runs FIRST yet: the job waits in its executor's queue.
        waiting = job(QASM2_BELL, engine=FIRST)
        await bus.publish(waiting)

        async def routed():
            state = await bus.job_state(waiting.job_id)
            return state is not None and state.status == "routed"

        await wait_for(routed, 60, "routing")
        cancelled = await qbus_cli(config, "cancel", waiting.job_id, "--reason", "not needed")
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancelled" in cancelled.stdout
        first = await Executor(config, FIRST).start()
        try:
            await wait_for(lambda: executor_idle(bus, FIRST), 60, "executor drained")
            done = job(QASM2_BELL, engine=FIRST)
            await bus.publish(done)
            completed = await wait_final(bus, done.job_id, 60)
        finally:
            await first.stop()
        again = await qbus_cli(config, "cancel", done.job_id)
        log_waiting = await log_of(bus, waiting.job_id)
        log_done = await log_of(bus, done.job_id)
    # The waiting job ended once, cancelled, and never ran.
    finals = [e for _, e in log_waiting if isinstance(e, JobFailed | JobCompleted)]
    assert len(finals) == 1 and isinstance(finals[0], JobFailed)
    assert finals[0].code == "cancelled"
    assert not any(isinstance(e, ExecutionCompleted) for _, e in log_waiting)
    # Cancelling the finished job is a no-op, and says so.
    assert isinstance(completed, JobCompleted)
    assert again.returncode == 0, again.stderr
    assert "no-op" in again.stderr and "job_finished" in again.stderr
    rejected = [e for _, e in log_done if isinstance(e, ControlRejected)]
    assert len(rejected) == 1 and rejected[0].code == "job_finished"
    assert await count_results(bus, done.job_id) == 1
    state = await bus.job_state(done.job_id)
    assert state is not None and state.status == "completed"
