"""The Python client API against a real nats-server with every stage running in-process."""

from __future__ import annotations

import asyncio
import datetime
import sys

import msgspec
import pytest

from qbus.bus.config import Config
from qbus.client import Client, SyncClient, circuit_fields
from qbus.consumers.pipeline import Pipeline
from qbus.errors import BusError, MissingOptionalLibraryError, SchemaError
from qbus.schemas.events import JobCompleted, JobRejected
from qbus.schemas.ir import Circuit
from tests.jobs import BELL_IR, QASM2_BELL, QASM3_GHZ

pytestmark = pytest.mark.timeout(120)


def _bell_counts_ok(event: object, shots: int) -> None:
    assert isinstance(event, JobCompleted), event
    assert sum(event.counts.values()) == shots
    assert set(event.counts) <= {"00", "11"}


async def test_submit_text_ir_dict_and_qiskit_circuit(config: Config, pipeline: Pipeline):
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    inputs = [QASM2_BELL, msgspec.convert(BELL_IR, Circuit), BELL_IR, qc]
    async with Client(config.bus.url) as c:
        jobs = [await c.submit(circuit, shots=300, seed=7) for circuit in inputs]
        assert all(j.sequence > 0 and j.traceparent.startswith("00-") for j in jobs)
        results = await asyncio.gather(*(j.result(timeout=60) for j in jobs))
    for event in results:
        _bell_counts_ok(event, 300)
    # A Circuit and its dict form are the same canonical IR.
    assert results[1].circuit_hash == results[2].circuit_hash


async def test_bad_input_is_refused_before_publishing(config: Config):
    async with Client(config.bus.url) as c:
        with pytest.raises(SchemaError) as info:
            await c.submit({"num_qubits": "two"})
        assert info.value.where == "$.num_qubits"
        with pytest.raises(TypeError, match="OpenQASM"):
            await c.submit(42)
        with pytest.raises(TypeError, match="unknown job options: shot"):
            await c.submit(QASM2_BELL, shot=10)


def test_cirq_and_braket_circuits_become_the_same_ir_job():
    import cirq
    from braket.circuits import Circuit as BraketCircuit

    from qbus.engines.reference import probabilities
    from qbus.frontends.qasm import parse_qasm

    q = cirq.LineQubit.range(2)
    bell_cirq = cirq.Circuit([cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.measure(*q, key="m")])
    bell_braket = BraketCircuit().h(0).cnot(0, 1)
    for circuit, fmt in ((bell_cirq, "qasm2"), (bell_braket, "qasm3")):
        fields = circuit_fields(circuit)
        assert fields["format"] == fmt
        parsed, _ = parse_qasm(fields["source"])
        assert probabilities(parsed) == pytest.approx({"00": 0.5, "11": 0.5})


def test_framework_objects_without_their_library_get_an_install_hint(monkeypatch):
    # The library is installed here; make its import fail as it would where it is not.
    monkeypatch.setitem(sys.modules, "cirq", None)
    monkeypatch.setitem(sys.modules, "braket.circuits.serialization", None)
    fake_cirq = type("Circuit", (), {"__module__": "cirq.circuits.circuit"})()
    fake_braket = type("Circuit", (), {"__module__": "braket.circuits.circuit"})()
    with pytest.raises(MissingOptionalLibraryError, match="pip install cirq-core"):
        circuit_fields(fake_cirq)
    with pytest.raises(MissingOptionalLibraryError, match="pip install amazon-braket-sdk"):
        circuit_fields(fake_braket)


async def test_rejection_is_the_result(config: Config, pipeline: Pipeline):
    async with Client(config.bus.url) as c:
        job = await c.submit("OPENQASM 2.0;\nqreg q[1];\nhadamard q[0];\n")
        rejected = await job.result(timeout=60)
    assert isinstance(rejected, JobRejected) and rejected.code == "unknown_gate"


async def test_results_stream_and_job_events(config: Config, pipeline: Pipeline):
    async with Client(config.bus.url) as c:
        # Started before submitting, so a "new results only" stream cannot miss them.
        async with c.results() as stream:
            jobs = [await c.submit(QASM2_BELL, shots=100), await c.submit(QASM3_GHZ, shots=100)]
            seen = {}
            async for delivery in stream:
                seen[delivery.event.job_id] = delivery
                if len(seen) == 2:
                    break
        assert set(seen) == {j.job_id for j in jobs}
        assert all(isinstance(d.event, JobCompleted) for d in seen.values())
        assert all(d.subject == f"qbus.result.{d.event.job_id}" for d in seen.values())
        events = [d async for d in jobs[0].events(timeout=30)]
        tags = [type(d.event).__name__ for d in events]
        # The submission itself is on the shared qbus.submit subject, not the job's own.
        assert tags[0] == "CircuitIngested" and tags[-1] == "JobCompleted"
        assert "CircuitIngested" in tags and "ExecutionCompleted" in tags
        assert [d.sequence for d in events] == sorted(d.sequence for d in events)


async def test_replay_results_from_a_sequence_and_a_time(config: Config, pipeline: Pipeline):
    async with Client(config.bus.url) as c:
        first = await c.submit(QASM2_BELL, shots=50)
        await first.result(timeout=60)
        # Everything stored from here on is later than this on the server's clock (the
        # server runs on this machine).
        since = datetime.datetime.now(datetime.UTC)
        later = []
        for _ in range(2):
            job = await c.submit(QASM2_BELL, shots=50)
            await job.result(timeout=60)
            later.append(job)

        async def first_two(**start) -> list[str]:
            ids = []
            async with c.results(**start) as stream:
                async for delivery in stream:
                    ids.append(delivery.event.job_id)
                    if len(ids) == 2:
                        return ids
            return ids

        # Delivery is in log order, so the first job's result would come first if the
        # replay started too early.
        later_ids = [j.job_id for j in later]
        assert await first_two(start_sequence=later[0].sequence) == later_ids
        assert await first_two(start_time=since) == later_ids
        assert await first_two(start_sequence=1) == [first.job_id, later_ids[0]]
        # A filter on one job id skips the others' results.
        async with c.results(later_ids[1], start_sequence=1) as stream:
            only = await anext(stream)
        assert only.event.job_id == later_ids[1]


async def test_sync_client(config: Config, pipeline: Pipeline):
    # The stages run on this test's event loop, so the blocking client runs in a thread.
    def blocking() -> tuple[object, list[str], str]:
        with SyncClient(config.bus.url) as c:
            job = c.submit(QASM2_BELL, shots=200)
            result = job.result(timeout=60)
            tags = [type(d.event).__name__ for d in job.events(timeout=30)]
            replayed = next(iter(c.results(job.job_id, start_sequence=job.sequence)))
        return result, tags, replayed.event.job_id

    result, tags, replayed_id = await asyncio.to_thread(blocking)
    _bell_counts_ok(result, 200)
    assert tags[-1] == "JobCompleted"
    assert replayed_id == result.job_id


def test_client_reports_an_unreachable_server():
    async def go() -> None:
        async with Client("nats://127.0.0.1:1", name="nobody"):
            pass

    with pytest.raises(BusError, match="cannot connect"):
        asyncio.run(go())
    with pytest.raises(BusError, match="cannot connect"):
        SyncClient("nats://127.0.0.1:1")
