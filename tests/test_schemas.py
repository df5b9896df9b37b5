"""Wire format: golden files per event, JSON Schema export, evolution rules."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import jsonschema
import msgspec
import pytest

from qbus.schemas.events import (
    _DERIVED_NS,
    EVENT_TYPES,
    JobRejected,
    JobSubmitted,
    answer,
    decode,
    derived_event_id,
    encode,
    json_schemas,
    tag_of,
)
from qbus.schemas.ir import circuit_hash
from tests.samples import BELL, sample_events

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: tag_of(type(e)))
def test_golden_wire_file(event):
    path = GOLDEN / f"{tag_of(type(event))}.json"
    if os.environ.get("QBUS_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode(event) + b"\n")
    assert encode(event) + b"\n" == path.read_bytes()
    assert decode(path.read_bytes()) == event


def test_every_event_type_has_a_sample_and_a_distinct_tag():
    tags = [tag_of(t) for t in EVENT_TYPES]
    assert len(set(tags)) == len(tags)
    assert {type(e) for e in sample_events()} == set(EVENT_TYPES)


def test_unknown_fields_are_ignored():
    raw = json.loads(encode(sample_events()[0]))
    raw["added_in_a_later_version"] = {"anything": [1, 2]}
    assert decode(json.dumps(raw).encode()) == sample_events()[0]


def test_json_schema_validates_every_sample_and_rejects_a_wrong_type():
    schemas = json_schemas()
    for event in sample_events():
        schema = {**schemas["events"][tag_of(type(event))], "$defs": schemas["$defs"]}
        jsonschema.validate(json.loads(encode(event)), schema)
    bad = json.loads(encode(sample_events()[0]))
    bad["shots"] = "many"
    schema = {**schemas["events"]["job.submitted"], "$defs": schemas["$defs"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_wrong_type_names_the_field():
    raw = json.loads(encode(sample_events()[0]))
    raw["shots"] = "many"
    with pytest.raises(msgspec.ValidationError, match=r"\$\.shots"):
        decode(json.dumps(raw).encode())


def test_circuit_hash_is_canonical():
    reordered = msgspec.json.decode(
        b'{"ops":[{"params":[],"name":"h","qubits":[0]},{"name":"cx","qubits":[0,1]},'
        b'{"name":"rz","qubits":[1],"params":["theta/2"]},'
        b'{"clbits":[0,1],"name":"measure","qubits":[0,1]}],'
        b'"parameters":["theta"],"num_clbits":2,"num_qubits":2}',
        type=type(BELL),
    )
    assert circuit_hash(reordered) == circuit_hash(BELL)
    changed = msgspec.structs.replace(BELL, num_clbits=3)
    assert circuit_hash(changed) != circuit_hash(BELL)


def test_job_options_roundtrip():
    job = JobSubmitted(event_id="x", job_id="j", source="s", shots=5, parameters={"a": 1.0})
    assert job.options().shots == 5 and job.options().parameters == {"a": 1.0}


def test_derived_event_id_is_uuid5_of_its_name():
    for causation in ("", "e1", "ü-ñ", uuid.uuid4().hex, "x" * 300):
        for tag, index in (("job.completed", 0), ("execution.requested", 7)):
            for job, tenant in (("j1", ""), ("j1", "acme"), ("", "")):
                name = f"{tenant}/{job}/{causation}/{tag}/{index}"
                expected = str(uuid.uuid5(_DERIVED_NS, name))
                assert (
                    derived_event_id(causation, tag, index, job_id=job, tenant=tenant) == expected
                )


def test_derived_event_ids_differ_across_jobs_and_tenants():
    # Issue 17: two jobs whose submissions share an event id once derived the same ids
    # for every later event, and the server's duplicate window dropped the second's.
    ids = {
        derived_event_id("same-cause", "circuit.ingested", job_id=job, tenant=tenant)
        for job in ("job-a", "job-b")
        for tenant in ("", "a", "b")
    }
    assert len(ids) == 6
    first = JobSubmitted(event_id="same-cause", job_id="job-a", source="s")
    second = JobSubmitted(event_id="same-cause", job_id="job-b", source="s")
    assert answer(first, JobRejected, "p", code="c", message="m").event_id != (
        answer(second, JobRejected, "p", code="c", message="m").event_id
    )
