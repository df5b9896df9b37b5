"""A result too big for any message fails its job once, with a code that says so.

The server's ``max_payload`` (16 MiB, qbus/bus/nats.conf) bounds every event. An
execution whose counts alone are bigger cannot be stored however often it is re-run,
so the stage that made it ends the job with JobFailed(``result_too_large``) at once,
naming the size and the limit, instead of redelivering the input until it is a dead
letter.
"""

from __future__ import annotations

import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.bus.runner import RESULT_TOO_LARGE
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import DeadLetter, ExecutionRequested, JobFailed
from tests.jobs import count_results, job, run_jobs

pytestmark = pytest.mark.timeout(240)

QUBITS = 21
SHOTS = 3_000_000  # ~1.5 M distinct 21-bit outcomes: about 45 MB of counts


def uniform(qubits: int) -> str:
    """Every qubit in |+>, all measured: as many distinct outcomes as shots allow."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{qubits}];", f"creg c[{qubits}];"]
    lines += [f"h q[{i}];" for i in range(qubits)]
    return "\n".join([*lines, "measure q -> c;"]) + "\n"


async def test_result_over_the_message_limit_fails_once_with_its_size(
    config: Config, bus: Bus, pipeline: Pipeline
):
    huge = job(uniform(QUBITS), shots=SHOTS, engine="qiskit-aer")
    (final,) = await run_jobs(bus, [huge], timeout=180)
    assert isinstance(final, JobFailed), final
    assert final.code == RESULT_TOO_LARGE, final
    limit = bus.nc.max_payload
    assert f"{limit:,} bytes" in final.message and "execution.completed" in final.message
    assert final.stage.startswith("execute")
    log = [e async for _, _, e in events_of(bus, huge.job_id)]
    # One run: one request, no dead letter, and the executor's input was not redelivered.
    assert sum(isinstance(e, ExecutionRequested) for e in log) == 1
    assert not any(isinstance(e, DeadLetter) for e in log)
    info = await bus.js.consumer_info(config.bus.stream, "execute-qiskit-aer")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0
    assert await count_results(bus, huge.job_id) == 1
