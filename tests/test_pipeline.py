"""A job through every stage on a real nats-server: the three input formats."""

from __future__ import annotations

import msgspec
import pytest

from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import JobCompleted, JobRejected
from qbus.schemas.ir import Circuit, Op
from tests.jobs import QASM2_BELL, QASM3_GHZ, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(120)


async def test_qasm2_qasm3_and_json_jobs_complete_verified(bus: Bus, pipeline: Pipeline):
    ir = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(
            Op(name="x", qubits=(0,)),
            Op(name="h", qubits=(1,)),
            Op(name="measure", qubits=(0, 1), clbits=(0, 1)),
        ),
    )
    jobs = [
        job(QASM2_BELL, shots=2000),
        job(QASM3_GHZ, shots=2000),
        job(msgspec.json.encode(ir).decode(), format="json", shots=2000),
        job(None, circuit=ir, shots=500),
    ]
    finals = await run_jobs(bus, jobs)
    for final in finals:
        assert isinstance(final, JobCompleted), final
        assert final.verification.verdict == "pass", final.verification
        assert final.result_hash.startswith("sha256:")
        assert sum(final.counts.values()) == final.shots
    bell, ghz, x_h, inline = finals
    assert set(bell.counts) == {"00", "11"}
    assert set(ghz.counts) == {"000", "111"}
    # x on qubit 0 → clbit 0 (rightmost) is always 1; h on qubit 1 splits clbit 1.
    assert set(x_h.counts) == {"01", "11"}
    assert inline.circuit_hash == x_h.circuit_hash
    for j in jobs:
        assert await count_results(bus, j.job_id) == 1


async def test_statevector_job_returns_exact_amplitudes(bus: Bus, pipeline: Pipeline):
    src = QASM3_GHZ.replace("c = measure q;\n", "")
    (final,) = await run_jobs(bus, [job(src, method="statevector")])
    assert isinstance(final, JobCompleted), final
    assert final.verification.test == "fidelity"
    assert final.verification.verdict == "pass"
    amps = final.statevector
    assert len(amps) == 16
    assert amps[0] == pytest.approx(2**-0.5) and amps[14] == pytest.approx(2**-0.5)


async def test_same_seed_gives_same_counts_and_hash(bus: Bus, pipeline: Pipeline):
    a, b = await run_jobs(bus, [job(QASM2_BELL, seed=7), job(QASM2_BELL, seed=7)])
    assert a.counts == b.counts
    assert a.result_hash == b.result_hash
    (c,) = await run_jobs(bus, [job(QASM2_BELL, seed=8)])
    assert c.result_hash != a.result_hash


async def test_unknown_engine_is_rejected_with_the_installed_list(bus: Bus, pipeline: Pipeline):
    (final,) = await run_jobs(bus, [job(QASM2_BELL, engine="no-such-engine")])
    assert isinstance(final, JobRejected)
    assert final.code == "unknown_engine"
    assert "qiskit-aer" in final.message


async def test_job_state_and_event_order(bus: Bus, pipeline: Pipeline):
    from qbus.bus.job_log import events_of

    j = job(QASM2_BELL)
    await run_jobs(bus, [j])
    state = await bus.job_state(j.job_id)
    assert state is not None and state.status == "completed" and state.engine == "qiskit-aer"
    tags = [e.__struct_config__.tag async for _, _, e in events_of(bus, j.job_id, timeout=1)]
    assert tags == [
        "circuit.ingested",
        "circuit.rewritten",
        "execution.requested",
        "execution.completed",
        "job.completed",
    ]


async def test_large_statevector_goes_to_the_object_store(bus: Bus, pipeline: Pipeline):
    from qbus.bus.blobs import ObjectStoreBlobs, statevector_from_bytes

    n = 21  # above the 20-qubit inline limit
    src = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n' + f"qubit[{n}] q;\nh q[0];\n"
    src += "".join(f"cx q[0], q[{i}];\n" for i in range(1, n))
    (final,) = await run_jobs(bus, [job(src, method="statevector")])
    assert isinstance(final, JobCompleted), final
    assert final.statevector is None
    assert final.statevector_ref == f"obj://{bus.config.object_store}/{final.job_id}.g0.statevector"
    assert final.verification.verdict == "skipped"
    vector = statevector_from_bytes(await ObjectStoreBlobs(bus).get(final.statevector_ref))
    assert vector.shape == (2**n,)
    assert abs(vector[0]) == pytest.approx(2**-0.5) and abs(vector[-1]) == pytest.approx(2**-0.5)


async def test_installed_engine_without_executor_is_rejected(bus: Bus, pipeline: Pipeline):
    (final,) = await run_jobs(bus, [job(QASM2_BELL, engine="reference")])
    assert isinstance(final, JobRejected)
    assert final.code == "engine_not_deployed"
    assert "qbus stage execute --engine reference" in final.message
    assert "qiskit-aer" in final.message
