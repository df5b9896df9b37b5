"""The wire protocol as files: JSON Schema per event and an AsyncAPI 3.0 document.

Both are generated from the msgspec event Structs, so the code is the single source of
truth; ``qbus schema --out schemas/`` writes them into the repository's top-level
``schemas/`` folder, where they are committed and checked for drift by a test.

The AsyncAPI document is built here by hand rather than with FastStream: FastStream
derives AsyncAPI only from its own broker/subscriber objects, and qbus's stages use
nats-py directly (docs/architecture.md). The document describes channels (subjects with
their ``{job}`` / ``{engine}`` parameters), the messages on each, the operations a
client or stage performs, and the NATS headers (``Nats-Msg-Id``, ``traceparent``).
No I/O except in ``write_schema_files``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qbus.schemas import schema_text
from qbus.schemas.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Cancel,
    CircuitIngested,
    CircuitRewritten,
    ControlRejected,
    DeadLetter,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSubmitted,
    Reroute,
    ResultAnchored,
    json_schemas,
    tag_of,
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"
REGEN_COMMAND = "qbus schema --out schemas/"

# (channel id, address under the prefix, parameters, events, description). The order is
# the flow of a job, so the document reads top to bottom like docs/protocol.md.
_CHANNELS: list[tuple[str, str, tuple[str, ...], tuple[type[Event], ...], str]] = [
    ("submit", "submit", (), (JobSubmitted,), "Producers publish new jobs here."),
    ("ingested", "ingested.{job}", ("job",), (CircuitIngested,), "Parsed, validated IR."),
    ("rewritten", "rewritten.{job}", ("job",), (CircuitRewritten,), "IR after rewrite passes."),
    (
        "exec",
        "exec.{engine}.{job}",
        ("engine", "job"),
        (ExecutionRequested,),
        "Work for one engine: the subject is the route. A high or low priority job is "
        "published on exec.{engine}.high.{job} / exec.{engine}.low.{job} (docs/routing.md).",
    ),
    (
        "executed",
        "executed.{job}",
        ("job",),
        (ExecutionCompleted, ExecutionFailed),
        "An engine's raw result or failure.",
    ),
    (
        "result",
        "result.{job}",
        ("job",),
        (JobCompleted, JobFailed, JobRejected),
        "Exactly one final event per job: what clients watch (replayable from the stream).",
    ),
    (
        "anchored",
        "anchored.{job}",
        ("job",),
        (ResultAnchored,),
        "A result's Merkle inclusion proof and the chain transaction that anchored its root.",
    ),
    (
        "control",
        "control.{job}",
        ("job",),
        (Reroute, Cancel, ControlRejected),
        "Operator commands for a job, and the control stage's refusals.",
    ),
    (
        "dlq",
        "dlq.{stage}.{job}",
        ("stage", "job"),
        (DeadLetter,),
        "A message a stage gave up on after max_deliver deliveries, with the reason; the "
        "job ends with JobFailed(dead_lettered). Listed and replayed by `qbus dlq`.",
    ),
]

_PARAMETERS = {
    "job": {
        "description": "The job id: 1-64 characters of [A-Za-z0-9_-] (a subject token).",
    },
    "engine": {"description": "Engine name chosen by the router (e.g. qiskit-aer)."},
    "stage": {"description": "The stage that gave the message up (route, execute …)."},
}

# Who sends and who receives on each channel, from the point of view of an application
# on the bus (AsyncAPI 3 operations are per application; qbus documents the whole bus).
_OPERATIONS: list[tuple[str, str, str, str]] = [
    ("submitJob", "send", "submit", "A client submits a job."),
    ("ingestJob", "receive", "submit", "The ingest stage consumes submissions."),
    ("receiveIngested", "receive", "ingested", "The rewrite stage consumes parsed circuits."),
    ("receiveRewritten", "receive", "rewritten", "The route stage consumes rewritten circuits."),
    ("receiveExecution", "receive", "exec", "An engine's executors consume their work."),
    ("receiveExecuted", "receive", "executed", "The verify stage consumes raw results."),
    ("receiveResult", "receive", "result", "Clients watch or replay final events."),
    ("receiveAnchored", "receive", "anchored", "Clients and auditors read anchor proofs."),
    ("sendControl", "send", "control", "Operators reroute or cancel a job."),
    ("receiveDeadLetters", "receive", "dlq", "Operators list and replay dead letters."),
]


def _message_name(event_type: type[Event]) -> str:
    return event_type.__name__


def asyncapi_document(prefix: str = "qbus") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the qbus protocol.

    Args:
        prefix: Subject prefix (``QBUS_PREFIX``); channel addresses start with it.

    Returns:
        The document as JSON-ready builtins, deterministic for a given code version.
    """
    refs, components = schema_text.schema_components(
        EVENT_TYPES, ref_template="#/components/schemas/{name}"
    )
    messages: dict[str, Any] = {}
    for event_type, ref in zip(EVENT_TYPES, refs, strict=True):
        doc = (event_type.__doc__ or "").strip().splitlines()
        messages[_message_name(event_type)] = {
            "name": tag_of(event_type),
            "title": tag_of(event_type),
            "summary": doc[0] if doc else tag_of(event_type),
            "contentType": "application/json",
            "traits": [{"$ref": "#/components/messageTraits/natsHeaders"}],
            "payload": ref,
        }
    channels: dict[str, Any] = {}
    for channel_id, address, params, events, description in _CHANNELS:
        channel: dict[str, Any] = {
            "address": f"{prefix}.{address}",
            "description": description,
            "messages": {
                _message_name(t): {"$ref": f"#/components/messages/{_message_name(t)}"}
                for t in events
            },
        }
        if params:
            channel["parameters"] = {p: _PARAMETERS[p] for p in params}
        channels[channel_id] = channel
    operations = {
        op_id: {
            "action": action,
            "summary": summary,
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
        for op_id, action, channel_id, summary in _OPERATIONS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "qbus",
            "version": str(SCHEMA_VERSION),
            "description": (
                "A quantum-job bus on NATS JetStream. Every event is JSON with a `type` tag; "
                f"one stream holds `{prefix}.>` as the event log. Generated from qbus's "
                f"msgspec events by `{REGEN_COMMAND}`; see docs/protocol.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "`qbus up` on this machine",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "messageTraits": {
                "natsHeaders": {
                    "headers": {
                        "type": "object",
                        "properties": {
                            "Nats-Msg-Id": {
                                "type": "string",
                                "description": (
                                    "The event's event_id; the server drops a duplicate "
                                    "inside the stream's duplicate window."
                                ),
                            },
                            "traceparent": {
                                "type": "string",
                                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                                "description": "W3C trace context, copied to caused events.",
                            },
                            "tracestate": {
                                "type": "string",
                                "description": "W3C trace state, travels with traceparent.",
                            },
                            "baggage": {
                                "type": "string",
                                "description": "W3C baggage, copied to caused events.",
                            },
                        },
                        "required": ["Nats-Msg-Id"],
                    }
                }
            },
            "schemas": components,
        },
    }


def schema_files(prefix: str = "qbus") -> dict[str, str]:
    """Every protocol file by name: ``<tag>.json`` per event plus ``asyncapi.json``.

    Each event schema is self-contained (its ``$defs`` included), so a client in any
    language can validate one event type with a single file.
    """
    schemas = json_schemas()
    files: dict[str, str] = {}
    for tag, body in schemas["events"].items():
        doc = {"$schema": JSON_SCHEMA_DIALECT, **body, "title": tag, "$defs": schemas["$defs"]}
        files[f"{tag}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    files[ASYNCAPI_FILE] = json.dumps(asyncapi_document(prefix), indent=2) + "\n"
    return files


def write_schema_files(out: str | Path) -> list[Path]:
    """Write ``schema_files()`` into ``out`` (created if missing); returns the paths.

    Event schemas this code no longer generates (a removed event) are deleted, so the
    folder is exactly what the code generates; other files in ``out`` are left alone.
    """
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    files = schema_files()
    for stale in target.glob("*.json"):
        if stale.name not in files and _is_event_schema(stale):
            stale.unlink()
    paths = []
    for name, text in files.items():
        path = target / name
        path.write_text(text)
        paths.append(path)
    return paths


def _is_event_schema(path: Path) -> bool:
    # Only files this module wrote: an event schema titled with its own file stem.
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(doc, dict)
        and doc.get("$schema") == JSON_SCHEMA_DIALECT
        and doc.get("title") == path.stem
    )
