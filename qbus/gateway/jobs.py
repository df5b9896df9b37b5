"""The ``/v1/jobs`` routes: submit, list, read, cancel and reroute (docs/gateway.md).

Each route does what the CLI's command of the same job does, through the same code:
``qbus.producers.submit.submit`` (``Nats-Msg-Id`` = event id), the job-state KV, the
event log (``qbus.bus.job_log``), ``qbus.producers.control.send_control``.
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request
from nats.js.errors import NotFoundError

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.jobstate import JobState, decode_state
from qbus.client import new_traceparent
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.gateway.auth import Caller, current_caller
from qbus.gateway.body import media_type, read_body, unsupported
from qbus.gateway.lookup import stored_owner, visible_job
from qbus.gateway.problems import Problem
from qbus.gateway.submission import (
    ACCEPTED_TYPES,
    JSON_TYPES,
    TEXT_TYPES,
    build_job,
    from_json,
    from_text,
)
from qbus.gateway.views import MsgspecJSON, iso_time, state_item
from qbus.observability import tracing
from qbus.producers.control import send_control
from qbus.producers.submit import submit
from qbus.schemas.events import (
    Cancel,
    ControlRejected,
    Event,
    ExecutionRequested,
    JobFailed,
    Reroute,
    new_event_id,
)

# W3C Trace Context, version 00: a malformed header is ignored (a new trace starts).
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
router = APIRouter(prefix="/v1", tags=["jobs"])
CONTROL_TIMEOUT = 10.0
"""Seconds a cancel or reroute waits for the control stage's answer."""
PRODUCER = "qbus.gateway"
# How many job states GET /v1/jobs looks through for a tenant's most recent ones.
_SCAN_FACTOR = 20


def bus_of(request: Request) -> Bus:
    """The app's bus connection."""
    return request.app.state.bus


def config_of(request: Request) -> Config:
    """The app's settings."""
    return request.app.state.config


CallerDep = Annotated[Caller, Depends(current_caller)]


class RerouteBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /v1/jobs/{id}/reroute``."""

    engine: str
    reason: str = ""


_SUBMIT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/JobSubmitted"}},
        "text/plain": {"schema": {"type": "string", "description": "The program text"}},
        "application/vnd.qbus.qasm": {"schema": {"type": "string"}},
    },
}


@router.post(
    "/jobs",
    status_code=202,
    response_class=MsgspecJSON,
    openapi_extra={"requestBody": _SUBMIT_BODY},
    summary="Submit a job",
    responses={
        413: {"description": "Body over [gateway] max_body_bytes"},
        415: {"description": "Unsupported Content-Type"},
        422: {"description": "The job as ingest would reject it"},
    },
)
async def post_job(
    request: Request,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    traceparent: Annotated[str | None, Header()] = None,
    tracestate: Annotated[str | None, Header()] = None,
) -> MsgspecJSON:
    """Publish a ``job.submitted``; answers once JetStream has stored it.

    The body is the ``job.submitted`` JSON, or the program text with the options as
    query parameters (``?shots=2000&engine=qiskit-aer``). ``Idempotency-Key`` becomes the
    event id (``Nats-Msg-Id``): the same key sent again names the same job, stored once.
    """
    config = config_of(request)
    kind = media_type(request)
    if kind not in ACCEPTED_TYPES:
        raise unsupported(kind, ACCEPTED_TYPES)
    body = await read_body(request, config.gateway.max_body_bytes)
    if kind in JSON_TYPES:
        data, strict = from_json(body), True
    else:
        assert kind in TEXT_TYPES
        data, strict = from_text(body, request.query_params), False
    job = build_job(
        data,
        tenant=caller.tenant,
        idempotency_key=idempotency_key,
        strict=strict,
        limits=config.limits,
    )
    bus = bus_of(request)
    # The caller's W3C trace context, when it sent one, so its trace goes on through the
    # stages; else a new one (with tracing on, the publish is a PRODUCER span of it).
    given = traceparent if traceparent and _TRACEPARENT.fullmatch(traceparent) else None
    if given is None and not tracing.enabled():
        given = new_traceparent()
    with tracing.produce(
        bus.subjects.submit,
        traceparent=given,
        tracestate=tracestate if given else None,
        scope="qbus.gateway",
        attributes={tracing.JOB_ID: job.job_id, tracing.MESSAGE_ID: job.event_id},
    ) as trace_headers:
        sequence = await submit(bus, job, headers=trace_headers)
    self_link = f"/v1/jobs/{job.job_id}"
    answer = {
        "job_id": job.job_id,
        "event_id": job.event_id,
        "sequence": sequence,
        "traceparent": trace_headers.get("traceparent", ""),
        "links": {
            "self": self_link,
            "events": f"{self_link}/events",
            "cancel": f"{self_link}/cancel",
        },
    }
    headers = {"Location": self_link}
    if trace_headers.get("traceparent"):
        headers["traceparent"] = trace_headers["traceparent"]
    return MsgspecJSON(answer, status_code=202, headers=headers)


@router.get("/jobs", response_class=MsgspecJSON, summary="The most recent jobs")
async def list_jobs(
    request: Request, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> MsgspecJSON:
    """The ``limit`` most recently updated jobs the caller may see, from the job-state KV."""
    bus = bus_of(request)
    states = await _all_states(bus)
    states.sort(key=lambda pair: pair[1].updated, reverse=True)
    rows: list[dict[str, Any]] = []
    for job_id, state in states[: limit * _SCAN_FACTOR if caller.tenant else limit]:
        if caller.tenant is not None and await stored_owner(bus, job_id) != caller.tenant:
            continue
        rows.append(state_item(job_id, state))
        if len(rows) == limit:
            break
    return MsgspecJSON({"jobs": rows})


async def _all_states(bus: Bus) -> list[tuple[str, JobState]]:
    """Every job's state in the KV bucket (the tenant index keys left out)."""
    kv = await bus.js.key_value(bus.config.kv_jobs)
    watcher = await kv.watch(">", ignore_deletes=True)
    found: list[tuple[str, JobState]] = []
    try:
        async for entry in watcher:
            if entry is None:  # the end of the current values
                break
            if "." in entry.key or not entry.value:
                continue  # tenant.<T>.<job>: the running-jobs index, not a job
            with contextlib.suppress(msgspec.DecodeError):
                found.append((entry.key, decode_state(entry.value)))
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    return found


@router.get("/jobs/{job_id}", response_class=MsgspecJSON, summary="A job's state")
async def get_job(request: Request, caller: CallerDep, job_id: str) -> MsgspecJSON:
    """The job's KV state and its final event (null until it has one)."""
    bus = bus_of(request)
    await visible_job(bus, caller, job_id, wait=config_of(request).gateway.lookup_seconds)
    state = await bus.job_state(job_id)
    final = await _final(bus, job_id)
    body: dict[str, Any] = {
        "job_id": job_id,
        "state": None,
        "final": msgspec.to_builtins(final) if final is not None else None,
    }
    if state is not None:
        body["state"] = {**msgspec.to_builtins(state), "updated_iso": iso_time(state.updated)}
    return MsgspecJSON(body)


async def _final(bus: Bus, job_id: str) -> Event | None:
    """The job's final event as stored, or None."""
    try:
        msg = await bus.js.get_last_msg(bus.config.stream, bus.subjects.result(job_id))
    except NotFoundError:
        return None
    try:
        return decode_event(msg.data)
    except UNDECODABLE:
        return None


@router.post("/jobs/{job_id}/cancel", status_code=202, response_class=MsgspecJSON)
async def cancel_job(
    request: Request, caller: CallerDep, job_id: str, reason: str = ""
) -> MsgspecJSON:
    """Cancel a job: it ends with ``job.failed`` (``cancelled``). A finished job is
    refused with 409 ``job_finished``."""
    bus = bus_of(request)
    await visible_job(bus, caller, job_id, wait=config_of(request).gateway.lookup_seconds)
    event = Cancel(event_id=new_event_id(), job_id=job_id, producer=PRODUCER, reason=reason)
    head = (await _control(bus, event))[0]
    if isinstance(head, JobFailed):
        return MsgspecJSON(
            {"job_id": job_id, "cancelled": True, "code": head.code, "message": head.message},
            status_code=202,
        )
    raise _unexpected(head)


@router.post("/jobs/{job_id}/reroute", status_code=202, response_class=MsgspecJSON)
async def reroute_job(request: Request, caller: CallerDep, job_id: str) -> MsgspecJSON:
    """Move a running job's unfinished work to another engine (body ``{"engine": …}``)."""
    bus = bus_of(request)
    kind = media_type(request)
    if kind not in JSON_TYPES:
        raise unsupported(kind, JSON_TYPES)
    body = await read_body(request, config_of(request).gateway.max_body_bytes)
    try:
        wanted = msgspec.json.decode(body, type=RerouteBody)
    except msgspec.ValidationError as exc:
        raise Problem(422, "invalid_schema", f"reroute body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
    await visible_job(bus, caller, job_id, wait=config_of(request).gateway.lookup_seconds)
    event = Reroute(
        event_id=new_event_id(),
        job_id=job_id,
        producer=PRODUCER,
        engine=wanted.engine,
        reason=wanted.reason,
    )
    answers = await _control(bus, event)
    requests = [a for a in answers if isinstance(a, ExecutionRequested)]
    if not requests:
        raise _unexpected(answers[0])
    first = requests[0]
    return MsgspecJSON(
        {
            "job_id": job_id,
            "rerouted": True,
            "engine": first.engine,
            "generation": first.generation,
            "requests": len(requests),
        },
        status_code=202,
    )


async def _control(bus: Bus, event: Reroute | Cancel) -> list[Event]:
    """The control stage's answers to ``event``.

    Raises:
        Problem: 409 with the refusal's code (``job_finished``, ``unknown_engine`` …);
            504 ``control_timeout`` when the control stage does not answer.
    """
    try:
        answers = await send_control(bus, event, CONTROL_TIMEOUT)
    except TimeoutError:
        raise Problem(
            504,
            "control_timeout",
            f"published {event.__struct_config__.tag} for job {event.job_id}, but the control "
            f"stage did not answer within {CONTROL_TIMEOUT:g} s; is `qbus stage control` running?",
        ) from None
    head = answers[0]
    if isinstance(head, ControlRejected):
        raise Problem(409, head.code, head.message)
    return answers


def _unexpected(event: Event) -> Problem:
    return Problem(
        502, "unexpected_answer", f"the control stage answered {event.__struct_config__.tag}"
    )
