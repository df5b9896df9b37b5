"""The any-language protocol: committed schema files, AsyncAPI, and raw-JSON producers.

The raw-JSON tests use nats-py alone on the producer side (no qbus types), exactly as a
client in another language would; wrong-type rejections of the top-level fields are in
tests/test_rejections.py.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from pathlib import Path

import jsonschema
import nats
import pytest

from qbus.bus import signing
from qbus.bus.config import Config
from qbus.bus.subjects import Subjects
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.asyncapi import (
    JSON_SCHEMA_DIALECT,
    REGEN_COMMAND,
    SIGNATURE_HEADER,
    asyncapi_document,
    schema_files,
    write_schema_files,
)
from qbus.schemas.enums import FORMATS, METHODS, PRIORITIES
from qbus.schemas.events import EVENT_TYPES, tag_of
from qbus.schemas.schema_text import normalize_descriptions

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
GOLDEN = Path(__file__).parent / "golden"


def test_committed_schema_files_match_the_code():
    expected = schema_files()
    # openapi.json is the HTTP gateway's document, with its own drift test
    # (tests/test_gateway_openapi.py).
    committed = {p.name: p.read_text() for p in SCHEMAS.glob("*.json") if p.name != "openapi.json"}
    hint = f"the committed protocol files are stale: run `.venv/bin/{REGEN_COMMAND}` and commit"
    assert sorted(committed) == sorted(expected), f"{hint} (files differ)"
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"{hint} ({', '.join(stale)} changed)"


@pytest.mark.parametrize("name", ["job.failed.json", "asyncapi.json"])
def test_msgspec_0_22_output_normalises_to_the_committed_files(name: str):
    # tests/data/msgspec-0.22/ holds files as msgspec 0.22 wrote them (descriptions keep
    # the docstrings' indentation; 0.23, which this venv has, dedents them). The drift
    # test above compares the normalised text, so it passes under either release.
    text = (Path(__file__).parent / "data" / "msgspec-0.22" / name).read_text()
    assert "\\n    Attributes:" in text, "the fixture lost its 0.22 indentation"
    assert normalize_descriptions(json.loads(text)) == json.loads((SCHEMAS / name).read_text())


def test_description_normaliser_dedents_like_msgspec_0_23():
    raw = {"a": {"description": "Title.\n\n    Attributes:\n        x: An x."}, "b": [1]}
    clean = {"a": {"description": "Title.\n\nAttributes:\n    x: An x."}, "b": [1]}
    assert normalize_descriptions(raw) == clean
    assert normalize_descriptions(clean) == clean


def test_writing_schema_files_removes_stale_event_schemas_only(tmp_path: Path):
    stale = {"$schema": JSON_SCHEMA_DIALECT, "title": "job.removed", "type": "object"}
    (tmp_path / "job.removed.json").write_text(json.dumps(stale))
    (tmp_path / "package.json").write_text("{}")
    written = write_schema_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in written] + ["package.json"]
    )


@pytest.mark.parametrize("tag", [tag_of(t) for t in EVENT_TYPES])
def test_golden_events_validate_against_the_committed_schema(tag: str):
    schema = json.loads((SCHEMAS / f"{tag}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads((GOLDEN / f"{tag}.json").read_text()), schema)


def test_closed_value_sets_are_enums_in_the_committed_schema():
    schema = json.loads((SCHEMAS / "job.submitted.json").read_text())
    fields, defs = schema["properties"], schema["$defs"]
    # msgspec lists an enum's values sorted; the schema names exactly the Literal's values.
    assert fields["method"]["enum"] == sorted(METHODS)
    assert "teleport" not in METHODS and {"sample", "statevector", "dynamics"} <= set(METHODS)
    assert fields["priority"] == {"default": "normal", "enum": ["high", "low", "normal"]}
    assert fields["format"]["enum"] == sorted(FORMATS)
    assert fields["hypervisor"]["enum"] == ["auto", "bwrap", "inline", "process"]
    assert defs["JobOptions"]["properties"]["priority"]["enum"] == sorted(PRIORITIES)
    verdict = defs["Verification"]["properties"]
    assert verdict["verdict"]["enum"] == ["fail", "pass", "skipped"]
    assert verdict["cross_verdict"]["anyOf"][0]["enum"] == ["fail", "pass", "skipped"]
    # A value outside the set fails the committed schema, as it fails the decoder.
    golden = json.loads((GOLDEN / "job.submitted.json").read_text())
    with pytest.raises(jsonschema.ValidationError, match="'urgent' is not one of"):
        jsonschema.validate({**golden, "priority": "urgent"}, schema)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_document_covers_every_event_and_subject():
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    # Every local reference resolves.
    for ref in _refs(doc):
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"dangling {ref}"
            node = node[part]
    # Every event is on a channel, and channel addresses are the real subjects.
    channels = doc["channels"]
    on_channels = {m for c in channels.values() for m in c["messages"]}
    assert on_channels == {t.__name__ for t in EVENT_TYPES}
    s = Subjects("qbus")
    addresses = {c["address"] for c in channels.values()}
    assert addresses == {
        s.submit,
        s.submit_for("{tenant}"),
        s.refused("{key}"),
        s.tenant_refused("{tenant}", "{key}"),
        s.ingested("{job}"),
        s.rewritten("{job}"),
        s.exec("{engine}", "{job}"),
        s.executed("{job}"),
        s.result("{job}"),
        s.tenant_result("{tenant}", "{job}"),
        s.anchored("{job}"),
        s.control("{job}"),
        s.dlq("{stage}", "{job}"),
    }
    # A refusal is a job.rejected on its own channel, and so are the tenants' copies.
    assert set(channels["refused"]["messages"]) == {"JobRejected"}
    assert set(channels["tenantResult"]["messages"]) == set(channels["result"]["messages"])
    for channel in channels.values():
        params = set(re.findall(r"{(\w+)}", channel["address"]))
        assert params == set(channel.get("parameters", {}))
    headers = doc["components"]["messageTraits"]["natsHeaders"]["headers"]["properties"]
    assert {"Nats-Msg-Id", "traceparent", SIGNATURE_HEADER} <= set(headers)
    assert SIGNATURE_HEADER == signing.HEADER
    assert re.fullmatch(headers[SIGNATURE_HEADER]["pattern"], "verify:" + "A" * 86 + "==")


def _readme_recipe() -> tuple[str, dict[str, str], bytes, str]:
    """The README's `nats pub` / `nats sub` recipe: subject, headers, payload, result subject."""
    text = (ROOT / "README.md").read_text()
    pub = re.search(r"^nats pub .*?(?<!\\)$", text, re.M | re.S)
    sub = re.search(r"^nats sub '([^']+)'", text, re.M)
    assert pub and sub, "README lost its nats CLI recipe"
    args = shlex.split(pub.group(0).replace("\\\n", " "))
    subject, headers, payload = args[2], {}, None
    rest = iter(args[3:])
    for arg in rest:
        if arg == "--header":
            key, value = next(rest).split(":", 1)
            headers[key] = value
        else:
            payload = arg
    assert payload is not None
    return subject, headers, payload.encode(), sub.group(1)


async def test_readme_nats_cli_recipe_runs_as_written(config: Config, pipeline: Pipeline):
    subject, headers, payload, result_subject = _readme_recipe()
    assert "Nats-Msg-Id" in headers and "traceparent" in headers
    nc = await nats.connect(config.bus.url)
    try:
        # `nats sub` is a core subscription: like the recipe, start it before publishing.
        sub = await nc.subscribe(result_subject)
        # `nats pub` is a core publish; the stream stores it all the same.
        await nc.publish(subject, payload, headers=headers)
        msg = await sub.next_msg(timeout=60)
        final = json.loads(msg.data)
        assert final["type"] == "job.completed", final
        assert final["job_id"] == json.loads(payload)["job_id"]
        assert sum(final["counts"].values()) == json.loads(payload)["shots"]
        jsonschema.validate(final, json.loads((SCHEMAS / "job.completed.json").read_text()))
        # The recipe for reading a stored result later (`nats stream get --last-for`).
        stored = await nc.jetstream().get_last_msg(config.bus.stream, result_subject)
        assert json.loads(stored.data) == final
    finally:
        await nc.close()


async def test_hand_written_json_with_extra_and_wrongly_typed_fields(
    config: Config, pipeline: Pipeline
):
    bell = (
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
        "h q[0]; cx q[0], q[1]; c = measure q;"
    )

    def raw(**fields: object) -> dict:
        job_id = f"raw-{uuid.uuid4().hex[:12]}"
        return {"type": "job.submitted", "event_id": f"e-{job_id}", "job_id": job_id, **fields}

    future = raw(source=bell, shots=200, added_in_v9={"priority": "high"}, tenant="acme")
    nested = raw(circuit={"num_qubits": 1, "ops": [{"name": "h", "qubits": ["zero"]}]})
    nc = await nats.connect(config.bus.url)
    js = nc.jetstream()
    try:
        subs = {}
        for job in (future, nested):
            subs[job["job_id"]] = await nc.subscribe(f"qbus.result.{job['job_id']}")
            body = json.dumps(job).encode()
            await js.publish("qbus.submit", body, headers={"Nats-Msg-Id": job["event_id"]})
        done = json.loads((await subs[future["job_id"]].next_msg(timeout=60)).data)
        rejected = json.loads((await subs[nested["job_id"]].next_msg(timeout=60)).data)
    finally:
        await nc.close()
    # Unknown fields are ignored (forward compatibility).
    assert done["type"] == "job.completed" and sum(done["counts"].values()) == 200
    # A wrong type deep inside names its path.
    assert rejected["type"] == "job.rejected" and rejected["code"] == "invalid_schema"
    assert rejected["where"] == "$.circuit.ops[0].qubits[0]", rejected
