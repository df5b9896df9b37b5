"""Who owns a job, and whether the bus knows it: the check before every per-job request.

A job's tenant is on its ``circuit.ingested`` event (``options.tenant``, which ingest took
from the submit subject) and on its final event (``tenant``); a job rejected by ingest
has only the latter. The gateway keeps no list of its own: it asks the event log.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from qbus.bus.connection import Bus
from qbus.bus.tenancy import tenant_of
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.gateway.auth import Caller
from qbus.gateway.problems import job_not_found
from qbus.schemas.events import is_valid_job_id


async def stored_owner(bus: Bus, job_id: str) -> str | None:
    """The tenant of a job the log holds ("" for a job without one); None when the log
    holds neither its ``circuit.ingested`` nor its final event."""
    for subject in (bus.subjects.ingested(job_id), bus.subjects.result(job_id)):
        with contextlib.suppress(NotFoundError):
            msg = await bus.js.get_last_msg(bus.config.stream, subject)
            with contextlib.suppress(*UNDECODABLE):
                return tenant_of(decode_event(msg.data))
    return None


async def visible_job(bus: Bus, caller: Caller, job_id: str, wait: float) -> str:
    """Check that ``caller`` may see ``job_id``; returns the job's tenant.

    A job the log does not hold yet (POSTed a moment ago, not yet read by ingest) is
    waited for, up to ``wait`` seconds: a subscription to its subjects is opened before
    the log is asked, so an event stored in between is not missed.

    Raises:
        Problem: 404 ``job_not_found`` for a job that is unknown or another tenant's
            (the same answer, so one tenant cannot learn another's job ids).
    """
    if not is_valid_job_id(job_id):
        raise job_not_found(job_id)
    arrived: asyncio.Queue[Msg] = asyncio.Queue()
    subjects = [bus.subjects.ingested(job_id), bus.subjects.result(job_id)]
    subs = [await bus.nc.subscribe(s, cb=arrived.put) for s in subjects] if wait > 0 else []
    try:
        owner = await stored_owner(bus, job_id)
        if owner is None and subs:
            with contextlib.suppress(TimeoutError, *UNDECODABLE):
                # The event as published: the stream may store it a moment after a
                # core subscriber has it.
                msg = await asyncio.wait_for(arrived.get(), wait)
                owner = tenant_of(decode_event(msg.data))
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    if owner is None or not caller.may_see(owner):
        raise job_not_found(job_id)
    return owner
