"""Helpers of the long-job tests (test_reroute.py, test_cancel.py): a 64-chunk sweep,
executors a test starts and stops, and readers of the ledger and the event log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
from nats.js import api as js_api

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.ledger import Ledger, LedgerStore
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.stages import build_stage
from qbus.schemas.events import Event, Observable, decode
from tests.jobs import job

FIRST, SECOND = "qiskit-aer", "cirq"
PROGRAM = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[2] q;
bit[2] c;
ry(theta) q[0];
cx q[0], q[1];
rx(theta / 2) q[1];
c = measure q;
"""
POINTS = [{"theta": 0.05 * i} for i in range(128)]
CHUNK = 2  # 128 points, 2 a chunk: 64 chunks
OBSERVABLES = msgspec.convert(
    [
        {"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}, {"coeff": 0.5, "pauli": "X1"}]},
        {"terms": [{"coeff": 1.0, "pauli": "Z0"}]},
    ],
    list[Observable],
)
STAGES = ("ingest", "rewrite", "route", "verify", "audit", "control")


def sweep_job(engine: str, chunk_size: int | None = CHUNK, **fields: object):
    return job(
        PROGRAM,
        method="sweep",
        engine=engine,
        sweep=POINTS,
        observables=OBSERVABLES,
        chunk_size=chunk_size,
        **fields,
    )


class Executor:
    """One engine's executor stage that a test starts and stops."""

    def __init__(self, config: Config, engine: str, batch: int = 4) -> None:
        self.config, self.engine, self.batch = config, engine, batch
        self.bus: Bus | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> Executor:
        self.bus = await Bus.connect(self.config.bus, name=f"test-execute-{self.engine}")
        self.stage = build_stage("execute", self.bus, self.config, engine=self.engine)
        # Small batches: results come out a few chunks at a time, as in a long job.
        self.stage.batch = self.batch  # type: ignore[attr-defined]
        self.task = asyncio.create_task(self.stage.run())
        return self

    async def stop(self) -> None:
        self.stage.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        if self.bus is not None:
            await self.bus.close()


@contextlib.asynccontextmanager
async def stages(config: Config, bus: Bus) -> AsyncIterator[Pipeline]:
    for engine in (FIRST, SECOND):
        await bus.ensure_executor(engine)
    async with Pipeline(config, stages=STAGES, engines=()) as p:
        yield p
        p.check()


async def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` (async) until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.05)


async def ledger_of(bus: Bus, job_id: str) -> Ledger | None:
    ledger, _ = await LedgerStore(bus.js, bus.config.kv_chunks).read(job_id)
    return ledger


async def log_of(bus: Bus, job_id: str) -> list[tuple[str, Event]]:
    """Every stored event of the job, in log order, those after its final event too."""
    sub = await bus.js.subscribe(
        bus.subjects.result(job_id),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        config=js_api.ConsumerConfig(filter_subjects=bus.subjects.of_job(job_id)),
    )
    out: list[tuple[str, Event]] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=5.0)
            out.append((msg.subject, decode(msg.data)))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def answer_to(bus: Bus, event_id: str, job_id: str) -> Event:
    """The first event in the log caused by ``event_id``."""

    async def find():
        for _, e in await log_of(bus, job_id):
            if e.causation_id == event_id:
                return e
        return None

    return await wait_for(find, 30, f"answer to {event_id}")


async def executor_idle(bus: Bus, engine: str) -> bool:
    """The engine's normal-priority executor consumer has nothing pending or in flight."""
    info = await bus.js.consumer_info(bus.config.stream, bus.executor_durable(engine))
    return info.num_pending == 0 and info.num_ack_pending == 0
