"""The wire protocol as files: JSON Schema per event and an AsyncAPI 3.0 document.

Both are generated from the msgspec event Structs, so the code is the single source of
truth; ``qbus schema --out schemas/`` writes them into the repository's top-level
``schemas/`` folder, where they are committed and checked for drift by a test.

The AsyncAPI document is built here by hand rather than with FastStream: FastStream
derives AsyncAPI only from its own broker/subscriber objects, and qbus's stages use
nats-py directly (docs/architecture.md). The document describes channels (subjects with
their ``{job}`` / ``{engine}`` parameters), the messages on each, the operations a
client or stage performs, and the NATS headers (``Nats-Msg-Id``, ``traceparent``,
``Qbus-Signature``).
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

SIGNATURE_HEADER = "Qbus-Signature"
"""The stage-signature header (qbus/bus/signing.py ``HEADER``, which is this value)."""
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"
REGEN_COMMAND = "qbus schema --out schemas/"

# (channel id, address under the prefix, parameters, events, description). The order is
# the flow of a job, so the document reads top to bottom like docs/protocol.md. An
# address starting with "_" follows the prefix without a dot: the tenant subjects
# (``<prefix>_tenant.…``) live outside ``<prefix>.>``, in their own stream.
_CHANNELS: list[tuple[str, str, tuple[str, ...], tuple[type[Event], ...], str]] = [
    ("submit", "submit", (), (JobSubmitted,), "Producers publish new jobs here."),
    (
        "submitTenant",
        "submit.{tenant}",
        ("tenant",),
        (JobSubmitted,),
        "A tenant publishes its jobs here (auth mode: its NATS user may publish nowhere "
        "else); ingest takes the job's tenant from this subject (docs/security.md).",
    ),
    (
        "refused",
        "refused.{key}",
        ("key",),
        (JobRejected,),
        "The answer to a message on a submit subject that holds no job (another event "
        "type, an unknown submit subject, no readable job id, a job id another submission "
        "holds): a job.rejected whose `refusal` is the key (docs/protocol.md, Answers). "
        "A sender waits here and on result.{job}.",
    ),
    (
        "tenantRefused",
        "_tenant.{tenant}.refused.{key}",
        ("tenant", "key"),
        (JobRejected,),
        "A tenant's copy of the refusal of its message (stream <prefix>_TENANT), the only "
        "refusal subject its user may read; same bytes, message id and Qbus-Signature as "
        "the original on refused.{key}, against which it verifies.",
    ),
    ("ingested", "ingested.{job}", ("job",), (CircuitIngested,), "Parsed, validated IR."),
    ("rewritten", "rewritten.{job}", ("job",), (CircuitRewritten,), "IR after rewrite passes."),
    (
        "exec",
        "exec.{engine}.{job}",
        ("engine", "job"),
        (ExecutionRequested,),
        "Work for one engine: the subject is the route. A high or low priority job is "
        "published on exec.{engine}.high.{job} / exec.{engine}.low.{job}, and a job in the "
        "heavy lane on exec.{engine}.heavy.{job} (docs/routing.md).",
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
        "tenantResult",
        "_tenant.{tenant}.result.{job}",
        ("tenant", "job"),
        (JobCompleted, JobFailed, JobRejected),
        "A tenant's copy of its job's final event (stream <prefix>_TENANT), the only "
        "result subject its user may read; same bytes, message id and Qbus-Signature as "
        "the original on result.{job}, against which it verifies.",
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
    "tenant": {"description": "The tenant: a subject token, also its NATS user's name part."},
    "key": {
        "description": (
            "The refused message's Nats-Msg-Id when it is 1-64 characters of "
            "[A-Za-z0-9_-] not starting with seq-, else seq-<its stream sequence>."
        ),
    },
}

# Who sends and who receives on each channel, from the point of view of an application
# on the bus (AsyncAPI 3 operations are per application; qbus documents the whole bus).
_OPERATIONS: list[tuple[str, str, str, str]] = [
    ("submitJob", "send", "submit", "A client submits a job."),
    ("submitTenantJob", "send", "submitTenant", "A tenant's client submits a job."),
    ("ingestJob", "receive", "submit", "The ingest stage consumes submissions."),
    ("receiveRefusal", "receive", "refused", "A sender reads the refusal of its message."),
    (
        "receiveTenantRefusal",
        "receive",
        "tenantRefused",
        "A tenant's client reads the refusal of its message.",
    ),
    ("receiveIngested", "receive", "ingested", "The rewrite stage consumes parsed circuits."),
    ("receiveRewritten", "receive", "rewritten", "The route stage consumes rewritten circuits."),
    ("receiveExecution", "receive", "exec", "An engine's executors consume their work."),
    ("receiveExecuted", "receive", "executed", "The verify stage consumes raw results."),
    ("receiveResult", "receive", "result", "Clients watch or replay final events."),
    ("receiveTenantResult", "receive", "tenantResult", "A tenant's client reads its results."),
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
            "address": prefix + ("" if address.startswith("_") else ".") + address,
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
                            SIGNATURE_HEADER: {
                                "type": "string",
                                "pattern": "^[a-z]+:[A-Za-z0-9+/]+={0,2}$",
                                "description": (
                                    "Set by a stage on every event it publishes: "
                                    "`<stage>:<base64 Ed25519 signature>` over the subject, "
                                    "a newline, the Nats-Msg-Id, a newline and the payload, "
                                    "made with the stage's key. With the stages' public keys "
                                    "a reader counts a final event, a refusal, an execution "
                                    "result, circuit.ingested, circuit.rewritten or "
                                    "execution.requested only when it is signed by a stage "
                                    "allowed to write it that is also its `producer` "
                                    "(docs/security.md). A tenant's copy carries the "
                                    "original's signature, over the original's subject."
                                ),
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
