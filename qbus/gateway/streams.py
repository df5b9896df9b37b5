"""Server-sent events: one job's events, and every final event (docs/gateway.md, "SSE").

Each SSE message is ``id: <stream sequence>``, ``event: <event type>``, ``data: <the
event item as JSON>`` (``qbus.gateway.views.event_item``). The sequence is the event log's,
so ``Last-Event-ID`` resumes exactly after the last message a client got: an
``EventSource`` sends it by itself when it reconnects.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from nats.js.errors import NotFoundError
from sse_starlette import EventSourceResponse, ServerSentEvent

from qbus.bus.connection import Bus
from qbus.bus.job_log import logged_events
from qbus.gateway.hub import Message, ResultHub, client_messages
from qbus.gateway.jobs import CallerDep, bus_of, config_of
from qbus.gateway.lookup import visible_job
from qbus.gateway.problems import Problem
from qbus.gateway.views import MsgspecJSON, event_item, sse_data

router = APIRouter(prefix="/v1", tags=["streams"])
EVENT_STREAM = "text/event-stream"
PING_SECONDS = 15
"""A comment line this often keeps proxies from closing an idle stream."""
READ_TIMEOUT = 1.0
"""Seconds a JSON read of a job's events waits for the log to say it has no more."""

_SSE_RESPONSE = {
    200: {
        "description": "JSON, or with `Accept: text/event-stream` server-sent events",
        "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
    }
}


def resume_after(header: str | None, query: str | None) -> int | None:
    """The sequence a stream resumes after: ``Last-Event-ID``, else ``?last_event_id=``.

    Raises:
        Problem: 400 ``invalid_last_event_id`` for anything but a whole number ≥ 0.
    """
    raw = header if header is not None else query
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise Problem(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID must be an event-log sequence (a whole number), not {raw!r}",
        )
    return int(raw)


@router.get("/jobs/{job_id}/events", response_class=MsgspecJSON, responses=_SSE_RESPONSE)
async def job_events(
    request: Request,
    caller: CallerDep,
    job_id: str,
    last_event_id: Annotated[str | None, Header()] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> Response:
    """Every stored event of the job, in log order.

    With ``Accept: text/event-stream``: server-sent events from the first event (or after
    ``Last-Event-ID``), live, ending after the job's final event. A job whose final event
    the client already has is answered 204, which stops an ``EventSource`` reconnecting.
    """
    bus = bus_of(request)
    await visible_job(bus, caller, job_id, wait=config_of(request).gateway.lookup_seconds)
    if EVENT_STREAM not in request.headers.get("accept", ""):
        items = [
            event_item(item.seq, item.subject, item.event, item.forged)
            async for item in logged_events(bus, job_id, timeout=READ_TIMEOUT)
        ]
        return MsgspecJSON({"job_id": job_id, "events": items})
    after = resume_after(last_event_id, last_event_id_query)
    if after is not None and await _final_sequence(bus, job_id) <= after:
        return Response(status_code=204)
    return EventSourceResponse(_job_messages(bus, job_id, after or 0), ping=PING_SECONDS)


async def _final_sequence(bus: Bus, job_id: str) -> float:
    """The sequence of the job's final event (infinity while it has none)."""
    try:
        msg = await bus.js.get_last_msg(bus.config.stream, bus.subjects.result(job_id))
    except NotFoundError:
        return float("inf")
    return msg.seq or float("inf")


async def _job_messages(bus: Bus, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    """The job's events after sequence ``after`` as SSE messages, until its final one."""
    async with contextlib.aclosing(logged_events(bus, job_id, follow=True)) as logged:
        async for item in logged:
            if item.seq <= after:
                continue
            data = event_item(item.seq, item.subject, item.event, item.forged)
            yield ServerSentEvent(data=sse_data(data), event=data["type"], id=str(item.seq))


@router.get("/results", responses=_SSE_RESPONSE)
async def results(
    request: Request,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header()] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> EventSourceResponse:
    """Server-sent events of every final event (``job.completed``, ``job.failed``,
    ``job.rejected``) the caller may see, live; after ``Last-Event-ID`` (an event-log
    sequence) it first replays those stored after it."""
    after = resume_after(last_event_id, last_event_id_query)
    hub: ResultHub = request.app.state.hub
    # Joined before answering: no final event stored after the answer is missed.
    queue = await hub.join()
    messages = client_messages(hub, queue, bus_of(request), caller, after)
    return EventSourceResponse(_as_sse(messages), ping=PING_SECONDS)


async def _as_sse(messages: AsyncIterator[Message]) -> AsyncIterator[ServerSentEvent]:
    async with contextlib.aclosing(messages):
        async for message in messages:
            yield ServerSentEvent(data=message.data, event=message.type, id=str(message.sequence))
