"""Job builders shared by the bus tests."""

from __future__ import annotations

import asyncio

from qbus.bus.connection import Bus
from qbus.engines.registry import available_engines
from qbus.producers.submit import wait_final
from qbus.schemas.events import Event, JobSubmitted, new_event_id, new_job_id

# Engines installed only to prove a check catches them (tests/plugins): they are wrong on
# purpose, so suites that hold every engine to the reference leave them out.
DELIBERATELY_WRONG_ENGINES = frozenset({"flipper"})


def engines_under_test(*, include_reference: bool = False) -> list[str]:
    """Every installed engine a conformance or bus suite should hold to the reference."""
    return [
        name
        for name in available_engines()
        if name not in DELIBERATELY_WRONG_ENGINES and (include_reference or name != "reference")
    ]


QASM2_BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
"""

QASM3_GHZ = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
h q[0];
cx q[0], q[1];
cx q[1], q[2];
c = measure q;
"""


BELL_IR = {
    "num_qubits": 2,
    "num_clbits": 2,
    "ops": [
        {"name": "h", "qubits": [0]},
        {"name": "cx", "qubits": [0, 1]},
        {"name": "measure", "qubits": [0, 1], "clbits": [0, 1]},
    ],
}
"""The Bell circuit as a JSON IR document."""


def job(source: str | None = None, **fields: object) -> JobSubmitted:
    return JobSubmitted(
        event_id=new_event_id(),
        job_id=str(fields.pop("job_id", None) or new_job_id()),
        producer="tests",
        source=source,
        **fields,  # type: ignore[arg-type]
    )


async def run_jobs(bus: Bus, jobs: list[JobSubmitted], timeout: float = 60) -> list[Event]:
    """Publish jobs and wait for each one's final event."""
    for j in jobs:
        await bus.publish(j)
    return list(await asyncio.gather(*(wait_final(bus, j.job_id, timeout) for j in jobs)))


async def count_results(bus: Bus, job_id: str) -> int:
    """How many events the log holds on the job's result subject."""
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.result(job_id))
    return sum((info.state.subjects or {}).values())
