"""Bad input gets one clear JobRejected, loses nothing, and the stages keep running."""

from __future__ import annotations

import json

import pytest

from qbus.bus.connection import Bus
from qbus.consumers.ingest import IngestHandler
from qbus.consumers.pipeline import Pipeline
from qbus.errors import Reject
from qbus.producers.submit import wait_final
from qbus.schemas.events import (
    JobCompleted,
    JobRejected,
    JobSubmitted,
    new_event_id,
    new_job_id,
)
from qbus.schemas.ir import decode_circuit
from tests.jobs import QASM2_BELL, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(180)

H2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
H3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'

# (source, expected code, a fragment the message or location must contain)
BAD_SOURCES: list[tuple[str, str, str]] = [
    (H2 + "h q[0]\ncx q[0], q[1];\n", "qasm_syntax", "line 6"),
    (H2 + "h q[0];;\n", "qasm_syntax", "line 5"),
    (H2 + "cx q[0] q[1];\n", "qasm_syntax", "line 5"),
    (H2 + "rx(pi/2 q[0];\n", "qasm_syntax", "line 5"),
    (H2 + "measure q[0] => c[0];\n", "qasm_syntax", "line 5"),
    ("OPENQASM 2.0;\nqreg q[2]\n", "qasm_syntax", "line"),
    (H2 + "hadamard q[0];\n", "unknown_gate", "hadamard"),
    (H3 + "cnot_gate q[0], q[1];\n", "unknown_gate", "cnot_gate"),
    (H2 + "foo(0.1) q[0];\n", "unknown_gate", "foo"),
    (H2 + "h q[2];\n", "qubit_out_of_range", "q[2]"),
    (H2 + "cx q[0], q[7];\n", "qubit_out_of_range", "q[7]"),
    (H3 + "h q[0], q[1];\n", "wrong_arity", "line 5"),
    (H2 + "measure q[0] -> c[5];\n", "clbit_out_of_range", "c[5]"),
    (H2 + "h r[0];\n", "unknown_register", "r"),
    (H2 + "cx q[0];\n", "wrong_arity", "cx"),
    (H2 + "rx q[0];\n", "wrong_arity", "rx"),
    (H2 + "h(0.5) q[0];\n", "wrong_arity", "h"),
    (H2 + "cx q[0], q[0];\n", "duplicate_qubit", "q[0]"),
    (H2 + "qreg q[3];\n", "duplicate_declaration", "q"),
    (H3 + "if (c == 9) x q[1];\n", "invalid_condition", "does not fit"),
    ('OPENQASM 2.0;\ninclude "mylib.inc";\nqreg q[1];\n', "unsupported_include", "mylib"),
    ("", "empty_program", ""),
    ("   \n// only a comment\n", "empty_program", ""),
    ('{"num_qubits": 2, "ops": [{"name": "cx", "qubits": [0, 5]}]}', "invalid_schema", "qubit 5"),
    ('{"num_qubits": 2, "ops": [{"name": "frob", "qubits": [0]}]}', "invalid_schema", "frob"),
    ('{"num_qubits": "two"}', "invalid_schema", "num_qubits"),
    ('{"num_qubits": 2, "ops": [', "invalid_schema", "JSON"),
    ("OPENQASM 2.0;\n" + "// padding\n" * 1_000_000, "too_large", "bytes"),
]


async def test_thirty_malformed_inputs_each_get_one_rejection(bus: Bus, pipeline: Pipeline):
    jobs = [job(src, shots=100) for src, _, _ in BAD_SOURCES]
    # Two more that are bad at the schema level: published as raw JSON, not via qbus types.
    raw_wrong_type = {
        "type": "job.submitted",
        "event_id": new_event_id(),
        "job_id": new_job_id(),
        "source": QASM2_BELL,
        "shots": "many",
    }
    raw_unknown_method = {
        "type": "job.submitted",
        "event_id": new_event_id(),
        "job_id": new_job_id(),
        "source": QASM2_BELL,
        "method": "teleport",
    }
    for j in jobs:
        await bus.publish(j)
    for raw in (raw_wrong_type, raw_unknown_method):
        await bus.js.publish(
            bus.subjects.submit, json.dumps(raw).encode(), headers={"Nats-Msg-Id": raw["event_id"]}
        )
    ids = [j.job_id for j in jobs] + [raw_wrong_type["job_id"], raw_unknown_method["job_id"]]
    expected = [(code, frag) for _, code, frag in BAD_SOURCES]
    expected += [("invalid_schema", "shots"), ("unknown_method", "teleport")]
    assert len(ids) >= 30
    for job_id, (code, fragment) in zip(ids, expected, strict=True):
        final = await wait_final(bus, job_id, timeout=60)
        assert isinstance(final, JobRejected), (job_id, final)
        assert final.code == code, (code, final)
        assert fragment in f"{final.message} {final.where or ''}", (fragment, final)
        assert final.message and len(final.message) < 2000
        assert await count_results(bus, job_id) == 1
    # The stages are still serving: a good job completes afterwards.
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)
    # Nothing lost: every rejected input, the 10 MB one included, is in the event log.
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.submit)
    assert info.state.subjects[bus.subjects.submit] == len(ids) + 1
    pipeline.check()


async def test_unreadable_payload_on_submit_is_rejected_not_crashing(bus: Bus, pipeline: Pipeline):
    await bus.js.publish(bus.subjects.submit, b"\x00\x01 not json", headers={"Nats-Msg-Id": "x1"})
    await bus.js.publish(
        bus.subjects.submit,
        b'{"type": "job.submitted.v9", "job_id": "j9"}',
        headers={"Nats-Msg-Id": "x2"},
    )
    rejected = await wait_final(bus, "j9", timeout=30)
    assert isinstance(rejected, JobRejected) and rejected.code == "unknown_event_type"
    # A `type` that is not even a string (unhashable): still an answer, not a crash.
    await bus.js.publish(
        bus.subjects.submit,
        b'{"type": ["job.submitted"], "job_id": "j10", "event_id": 5}',
        headers={"Nats-Msg-Id": "x3"},
    )
    odd = await wait_final(bus, "j10", timeout=30)
    assert isinstance(odd, JobRejected) and odd.code == "unknown_event_type"
    assert odd.causation_id == "x3"  # the event id was no string: the message id stands in
    (good,) = await run_jobs(bus, [job(QASM2_BELL)])
    assert isinstance(good, JobCompleted)


@pytest.mark.parametrize("inline", [False, True])
async def test_an_undeclared_circuit_parameter_is_rejected_at_ingest(inline: bool):
    # The IR types no longer parse expressions (schemas is types only): ingest checks that
    # every name a gate uses is declared, for JSON IR text and for an inline circuit alike.
    ir = {
        "num_qubits": 1,
        "num_clbits": 1,
        "parameters": ["theta"],
        "ops": [
            {"name": "rx", "qubits": [0], "params": ["theta + phi"]},
            {"name": "measure", "qubits": [0], "clbits": [0]},
        ],
    }
    fields = {"circuit": decode_circuit(json.dumps(ir))} if inline else {"source": json.dumps(ir)}
    submitted = JobSubmitted(event_id=new_event_id(), job_id=new_job_id(), producer="t", **fields)
    with pytest.raises(Reject) as caught:
        await IngestHandler().handle(submitted)
    assert caught.value.code == "undeclared_parameter"
    assert caught.value.where == "$.ops[0].params" and "['phi']" in caught.value.message
    declared = {**ir, "parameters": ["phi", "theta"]}
    fields = {"source": json.dumps(declared), "parameters": {"phi": 0.1, "theta": 0.2}}
    ok = JobSubmitted(event_id=new_event_id(), job_id=new_job_id(), producer="t", **fields)
    assert len(await IngestHandler().handle(ok)) == 1


# (field, a value outside its set, the code, the allowed values as the message lists them)
BAD_ENUM_VALUES = [
    ("method", "teleport", "unknown_method", "sample, statevector, expectation, sweep, dynamics"),
    ("priority", "urgent", "invalid_priority", "high, normal, low"),
    ("format", "qasm4", "unknown_format", "auto, qasm2, qasm3, json, quil"),
    ("hypervisor", "firecracker", "unknown_hypervisor", "auto, inline, process, bwrap"),
]


async def test_a_value_outside_a_closed_set_names_its_field_and_the_allowed_values(
    bus: Bus, pipeline: Pipeline
):
    # The closed sets are Literal types: the decoder refuses the value with its path, and
    # the rejection keeps the code ingest's hand checks used to give.
    raws = [
        {
            "type": "job.submitted",
            "event_id": new_event_id(),
            "job_id": new_job_id(),
            "source": QASM2_BELL,
            field: value,
        }
        for field, value, _, _ in BAD_ENUM_VALUES
    ]
    for raw in raws:
        await bus.js.publish(
            bus.subjects.submit, json.dumps(raw).encode(), headers={"Nats-Msg-Id": raw["event_id"]}
        )
    for raw, (field, value, code, allowed) in zip(raws, BAD_ENUM_VALUES, strict=True):
        final = await wait_final(bus, raw["job_id"], timeout=60)
        assert isinstance(final, JobRejected), final
        assert (final.code, final.where, final.stage) == (code, f"$.{field}", "ingest")
        assert f"Invalid enum value '{value}' - at `$.{field}`" in final.message, final
        assert final.message.endswith(f"{field} must be one of {allowed}"), final
    pipeline.check()
