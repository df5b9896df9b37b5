"""One fixed example of every event: golden wire files and schema checks use these."""

from __future__ import annotations

from qbus.schemas.events import (
    Cancel,
    CircuitIngested,
    CircuitRewritten,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobOptions,
    JobRejected,
    JobSubmitted,
    PassReport,
    Reroute,
    ResultAnchored,
    Verification,
)
from qbus.schemas.ir import Circuit, CircuitStats, Op

ENV = {"job_id": "job-1", "timestamp": 1767225600.0, "producer": "tests"}
BELL = Circuit(
    num_qubits=2,
    num_clbits=2,
    ops=(
        Op(name="h", qubits=(0,)),
        Op(name="cx", qubits=(0, 1)),
        Op(name="rz", qubits=(1,), params=("theta/2",)),
        Op(name="measure", qubits=(0, 1), clbits=(0, 1)),
    ),
    parameters=("theta",),
)
OPTS = JobOptions(shots=100, seed=7, parameters={"theta": 0.5})
STATS = CircuitStats(gates=3, two_qubit_gates=1, depth=4)
HASH = "sha256:" + "ab" * 32


def sample_events() -> list[Event]:
    return [
        JobSubmitted(event_id="e1", source="OPENQASM 3.0;", shots=100, seed=7, **ENV),
        CircuitIngested(
            event_id="e2",
            causation_id="e1",
            circuit=BELL,
            circuit_hash=HASH,
            source_format="qasm3",
            options=OPTS,
            stats=STATS,
            **ENV,
        ),
        CircuitRewritten(
            event_id="e3",
            causation_id="e2",
            circuit=BELL,
            circuit_hash=HASH,
            original_hash=HASH,
            options=OPTS,
            before=STATS,
            after=STATS,
            passes=[PassReport(name="cancel_inverses", removed=0)],
            **ENV,
        ),
        ExecutionRequested(
            event_id="e4",
            causation_id="e3",
            engine="qiskit-aer",
            circuit=BELL,
            circuit_hash=HASH,
            options=OPTS,
            route_reason="auto",
            **ENV,
        ),
        ExecutionCompleted(
            event_id="e5",
            causation_id="e4",
            engine="qiskit-aer",
            engine_version="0.18.2",
            circuit=BELL,
            circuit_hash=HASH,
            options=OPTS,
            seed=7,
            counts={"00": 52, "11": 48},
            run_seconds=0.001,
            **ENV,
        ),
        ExecutionFailed(
            event_id="e6",
            causation_id="e4",
            engine="qiskit-aer",
            code="engine_error",
            message="boom",
            **ENV,
        ),
        JobCompleted(
            event_id="e7",
            causation_id="e5",
            engine="qiskit-aer",
            engine_version="0.18.2",
            circuit_hash=HASH,
            method="sample",
            shots=100,
            seed=7,
            verification=Verification(verdict="pass", test="chi2", statistic=0.16, p_value=0.69),
            result_hash=HASH,
            counts={"00": 52, "11": 48},
            **ENV,
        ),
        JobFailed(
            event_id="e8",
            causation_id="e6",
            code="engine_error",
            message="boom",
            stage="execute",
            **ENV,
        ),
        JobRejected(
            event_id="e9",
            causation_id="e1",
            code="qasm_syntax",
            message="expected ';'",
            stage="ingest",
            where="line 3, column 7",
            **ENV,
        ),
        ResultAnchored(
            event_id="e12",
            result_hash="ab" * 32,
            batch_id=3,
            root="0x" + "cd" * 32,
            proof=["0x" + "ef" * 32],
            leaf_index=1,
            batch_size=2,
            tx_hash="0x" + "12" * 32,
            block_number=42,
            chain_id=31337,
            contract="0x" + "34" * 20,
            **ENV,
        ),
        Reroute(event_id="e10", engine="reference", reason="maintenance", **ENV),
        Cancel(event_id="e11", reason="no longer needed", **ENV),
    ]
