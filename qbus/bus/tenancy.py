"""Tenants on the bus: the trusted tenant of a submission, its final events' tenant copy,
and the per-tenant index of running jobs in the job-state KV (docs/security.md).

* A submission's tenant is the last token of the subject it arrived on
  (``qbus.submit.<tenant>``), never the payload: NATS permissions let tenant A publish
  only to ``qbus.submit.A``.
* Every final event carries the job's tenant; a tenant's final event is also stored on
  ``qbus_tenant.<tenant>.result.<job>`` (in the stream ``QBUS_TENANT``, outside the event
  log), the only result subject its user may read.
* While a job runs, the job-state bucket holds ``tenant.<tenant>.<job>``; the final event
  deletes it. Ingest counts these keys for ``max_concurrent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from qbus.bus.jobstate import FINAL_STATUSES, decode_state
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.schemas.events import (
    FINAL_EVENTS,
    CircuitIngested,
    Event,
    JobRejected,
    JobSubmitted,
    encode,
)

if TYPE_CHECKING:
    from qbus.bus.connection import Bus
    from qbus.bus.subjects import Subjects

log = logging.getLogger("qbus.tenancy")


def trusted_submission(event: Event, subject: str, subjects: Subjects) -> Event:
    """``event`` with, for a JobSubmitted, ``tenant`` set from the submit ``subject``.

    Whatever tenant the payload names is replaced: the subject is what NATS permissions
    guard. A submission on ``<prefix>.submit`` has no tenant.
    """
    if not isinstance(event, JobSubmitted):
        return event
    tenant = subjects.tenant_of_submit(subject)
    if tenant is None or tenant == event.tenant:
        return event
    return msgspec.structs.replace(event, tenant=tenant)


def tenant_of(event: Event) -> str:
    """The tenant an event belongs to ("" when none)."""
    tenant = getattr(event, "tenant", None)
    if tenant is None:
        options = getattr(event, "options", None)
        tenant = getattr(options, "tenant", "")
    return tenant or ""


def stamp(output: Event, cause: Event) -> Event:
    """A final event ``output`` carrying the tenant of the event that caused it."""
    if isinstance(output, FINAL_EVENTS) and not output.tenant:
        tenant = tenant_of(cause)
        if tenant:
            return msgspec.structs.replace(output, tenant=tenant)
    return output


def index_key(tenant: str, job_id: str) -> str:
    """The job-state KV key marking ``job_id`` as a running job of ``tenant``."""
    return f"tenant.{tenant}.{job_id}"


def copy_subject(subjects: Subjects, event: Event) -> str | None:
    """Where a tenant's copy of ``event`` is stored (None: it has none): a refusal on
    ``<prefix>_tenant.<tenant>.refused.<key>``, a final event on
    ``<prefix>_tenant.<tenant>.result.<job>``.

    A copy verifies against its original's subject, which the copy's own payload names
    (``Signer.copy_headers``); so a reader also checks that a copy is where this puts it,
    or a signed copy of one job's result would verify on another job's subject.
    """
    tenant = tenant_of(event)
    if not tenant:
        return None
    if isinstance(event, JobRejected) and event.refusal is not None:
        # A refusal holds no job: its copy goes to the tenant's refusal subject, not to
        # the result subject of a job it may not own.
        return subjects.tenant_refused(tenant, event.refusal)
    if isinstance(event, FINAL_EVENTS):
        return subjects.tenant_result(tenant, event.job_id)
    return None


async def tenant_writes(bus: Bus, event: Event) -> list[asyncio.Future]:
    """Publish what a stored ``event`` implies for its tenant (without waiting).

    CircuitIngested → the running-job index key; a final event → delete that key, and
    a copy of the event where ``copy_subject`` says, in the tenant stream (same bytes,
    same ``Nats-Msg-Id``, so a redelivery stores it once).
    """
    tenant = tenant_of(event)
    if not tenant:
        return []
    kv_subject = f"$KV.{bus.config.kv_jobs}.{index_key(tenant, event.job_id)}"
    if isinstance(event, CircuitIngested):
        return [asyncio.ensure_future(bus.acks.publish(kv_subject, b"running"))]
    subject = copy_subject(bus.subjects, event)
    if subject is None:
        return []
    copy = asyncio.ensure_future(_publish_copy(bus, subject, event))
    if isinstance(event, JobRejected) and (event.refusal is not None or event.stage == "ingest"):
        return [copy]  # a refusal, or a job never ingested: never indexed, no key to delete
    delete = bus.acks.publish(kv_subject, b"", {"KV-Operation": "DEL"})
    return [asyncio.ensure_future(delete), copy]


def _publish_copy(bus: Bus, subject: str, event: Event) -> Awaitable[PubAck]:
    """Store a tenant's copy of ``event`` on ``subject``: the same bytes and message id as
    the original, and its stage signature, so a tenant's client verifies the copy."""
    payload = encode(event)
    headers = {"Nats-Msg-Id": event.event_id}
    if bus.signer is not None:
        headers = bus.signer.copy_headers(event, bus.subjects.for_event(event), payload)
    return bus.acks.publish(subject, payload, headers)


async def running_jobs(bus: Bus, tenant: str, also: set[str] | frozenset = frozenset()) -> set[str]:
    """Jobs of ``tenant`` past ingest and without a final event, from the job-state KV.

    ``also`` are further candidates (jobs ingest accepted but has perhaps not indexed
    yet). A job whose own state is already final is not counted even if its index key is
    still there (a delete that raced ahead of the put).
    """
    kv = await bus.js.key_value(bus.config.kv_jobs)
    watcher = await kv.watch(index_key(tenant, "*"), ignore_deletes=True, meta_only=True)
    jobs: set[str] = set()
    try:
        async for entry in watcher:
            if entry is None:  # the initial values are all delivered
                break
            jobs.add(entry.key.rsplit(".", 1)[1])
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    running = set()
    for job in jobs | set(also):
        try:
            state = decode_state((await kv.get(job)).value or b"")
        except Exception:
            running.add(job)  # no readable state yet: it is just starting
            continue
        if state.status not in FINAL_STATUSES:
            running.add(job)
    return running


async def wait_tenant_result(
    bus: Bus, tenant: str, job_id: str, timeout: float = 60.0, *, refusal: str | None = None
) -> Event:
    """A tenant's wait for its job's final event, with only the tenant's permissions.

    Subscribes to ``<prefix>_tenant.<tenant>.result.<job>`` first, then asks for the stored
    copy (JetStream direct get, allowed for the tenant's own results), so a result
    published before the call is found and one published after it is delivered.

    Args:
        bus: The tenant's connection.
        tenant: The tenant.
        job_id: The job.
        timeout: Seconds to wait.
        refusal: The key of the submission's message (``Subjects.refusal_key``): its
            refusal (``<prefix>_tenant.<tenant>.refused.<key>``, e.g. ``duplicate_job_id``
            for a job id another tenant holds) is the answer too.

    Raises:
        TimeoutError: Nothing final within ``timeout`` seconds.
    """
    subjects = [bus.subjects.tenant_result(tenant, job_id)]
    if refusal is not None:
        # Looked up first: a tenant's own earlier job under this id has a stored result.
        subjects.insert(0, bus.subjects.tenant_refused(tenant, refusal))
    return await _wait_tenant_copy(bus, subjects, f"result for job {job_id}", timeout)


async def wait_tenant_refusal(bus: Bus, tenant: str, key: str, timeout: float = 60.0) -> Event:
    """A tenant's wait for the refusal of its message ``key`` (its ``Nats-Msg-Id``, or
    ``seq-<N>``: docs/protocol.md, "Answers"), with only the tenant's permissions.

    Raises:
        TimeoutError: No refusal within ``timeout`` seconds.
    """
    subject = bus.subjects.tenant_refused(tenant, key)
    return await _wait_tenant_copy(bus, [subject], f"refusal of message {key}", timeout)


async def _wait_tenant_copy(bus: Bus, subjects: list[str], what: str, timeout: float) -> Event:
    """The first copy on the tenant ``subjects``: a stored one (in the order given), else
    the next to arrive on any of them."""
    arrived: asyncio.Queue[Msg] = asyncio.Queue()
    subs = [await bus.nc.subscribe(subject, cb=arrived.put) for subject in subjects]
    deadline = time.monotonic() + timeout
    try:
        for subject in subjects:
            try:
                stored = await bus.js.get_last_msg(bus.config.tenant_stream, subject, direct=True)
            except NotFoundError:
                continue
            event = _tenant_copy(bus, stored.subject, stored.data, stored.headers)
            if event is not None:
                return event
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            try:
                msg = await asyncio.wait_for(arrived.get(), left)
            except TimeoutError as exc:
                raise TimeoutError(f"no {what} within {timeout} s") from exc
            event = _tenant_copy(bus, msg.subject, msg.data, msg.headers)
            if event is not None:
                return event
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _tenant_copy(
    bus: Bus, subject: str, data: bytes, headers: Mapping[str, str] | None
) -> Event | None:
    """The event of a tenant copy; None (logged) for a payload that is no event or a copy
    that is not on its own subject (``copy_subject``: another job's, another message's),
    or, with the stages' public keys (``bus.trust``), for a copy that does not verify as
    the original it copies (signed over the original's subject: ``Signer.copy_headers``)."""
    try:
        event = decode_event(data)
    except UNDECODABLE as exc:
        log.warning("%s: skipping a message that is no event (%s)", subject, exc)
        return None
    if subject != copy_subject(bus.subjects, event):
        log.warning("%s: skipping a copy of an event of another job or message", subject)
        return None
    trust = bus.trust
    forged = trust and trust.problem(event, bus.subjects.for_event(event), data, headers)
    if forged:
        log.warning("%s: skipping a forged copy (%s)", subject, forged)
        return None
    return event
