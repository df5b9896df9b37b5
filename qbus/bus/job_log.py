"""One job's events as the log stores them: the read every audit, client and CLI shares.

Lives in the bus layer because the offline tools (replay, audit) and the producers
(client, CLI ``status``/``watch``) all read a job's history the same way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from qbus.bus.connection import Bus
from qbus.bus.retry import retrying
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.schemas.events import FINAL_EVENTS, Event

log = logging.getLogger("qbus.job_log")


@dataclass(frozen=True)
class Logged:
    """One stored event of a job, and whether it counts.

    Attributes:
        seq: Its stream sequence.
        subject: Its subject.
        event: The event.
        forged: Why it does not count, with the stages' public keys (``bus.trust``):
            no stage allowed to write it signed it (qbus/bus/signing.py); None when it
            counts or nothing is checked.
    """

    seq: int
    subject: str
    event: Event
    forged: str | None = None
    traceparent: str | None = None  # the W3C trace context the event was stored with


async def logged_events(
    bus: Bus, job_id: str, *, follow: bool = False, timeout: float = 5.0
) -> AsyncIterator[Logged]:
    """Every stored event of a job, in log order, each with its provenance checked.

    With ``follow`` the iterator waits for new events until the job's final event: one
    that counts, so a forged final is yielded (marked) and the iteration goes on to the
    real end. A message that is no event is skipped.
    """
    sub = await bus.js.subscribe(
        bus.subjects.result(job_id),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        config=js_api.ConsumerConfig(filter_subjects=bus.subjects.of_job(job_id)),
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
                if follow:
                    continue
                return
            logged = _logged(bus, msg)
            if logged is not None:
                yield logged
                # Following, the job's final event ends the wait; reading what is stored,
                # everything is read, including what comes after it (result.anchored).
                if follow and isinstance(logged.event, FINAL_EVENTS) and logged.forged is None:
                    return
            if not follow and msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


def _logged(bus: Bus, msg: Msg) -> Logged | None:
    """The stored event in ``msg``, its provenance checked with ``bus.trust``; None (logged)
    for a message that is no event: junk on a job's subject, as anyone can publish without
    auth, is not its event."""
    try:
        event = decode_event(msg.data)
    except UNDECODABLE as exc:
        log.warning("%s: skipping a message that is no event (%s)", msg.subject, exc)
        return None
    trust = bus.trust
    forged = trust.problem(event, msg.subject, msg.data, msg.headers) if trust else None
    traceparent = msg.headers.get("traceparent") if msg.headers else None
    return Logged(msg.metadata.sequence.stream, msg.subject, event, forged, traceparent)


async def events_of(
    bus: Bus, job_id: str, *, follow: bool = False, timeout: float = 5.0
) -> AsyncIterator[tuple[int, str, Event]]:
    """Yield (sequence, subject, event) of every stored event of a job, in log order
    (``logged_events`` without the provenance: forged events included)."""
    async with contextlib.aclosing(
        logged_events(bus, job_id, follow=follow, timeout=timeout)
    ) as logged:
        async for item in logged:
            yield item.seq, item.subject, item.event


async def stored_events(
    bus: Bus, subjects: Sequence[str], timeout: float
) -> AsyncIterator[tuple[str, Event]]:
    """Yield (subject, event) of every event stored on ``subjects``, in log order: what
    the log holds now, then what arrives, until ``timeout`` seconds after the call.

    One ordered consumer reads all the subjects, so their events come in the order the
    log stored them. A message that is no event is skipped, and so, with the stages'
    public keys (``bus.trust``), is an event that no stage allowed to write it signed
    (qbus/bus/signing.py).

    Raises:
        TimeoutError: ``timeout`` seconds have passed (the iteration never ends otherwise).
    """
    several = js_api.ConsumerConfig(filter_subjects=list(subjects)) if len(subjects) > 1 else None
    deadline = time.monotonic() + timeout
    # Creating the reader is a JetStream API call: on a cluster that is electing a
    # leader, or whose node just came back, it can time out; it is tried again within
    # the caller's time (qbus/bus/retry.py).
    sub = await retrying(
        "reading the event log",
        lambda: bus.js.subscribe(
            subjects[0],
            stream=bus.config.stream,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.ALL,
            config=several,
        ),
        retry_for=timeout,
    )
    try:
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            msg = await sub.next_msg(timeout=left)  # nats-py's TimeoutError is the builtin's
            logged = _logged(bus, msg)
            if logged is None:
                continue
            if logged.forged:
                log.warning("%s: skipping a forged event (%s)", msg.subject, logged.forged)
                continue
            yield msg.subject, logged.event
    finally:
        await sub.unsubscribe()


async def first_stored(bus: Bus, subject: str, timeout: float) -> Event:
    """The first event stored on ``subject`` (a job's result, its anchor …), waiting up to
    ``timeout`` seconds for one to arrive; a forged one is skipped (``stored_events``).

    Raises:
        TimeoutError: Nothing stored there within ``timeout`` seconds.
    """
    async with contextlib.aclosing(stored_events(bus, [subject], timeout)) as events:
        return (await anext(events))[1]


REAL_FINAL_WAIT = 0.2
"""Seconds to look past a forged final event for a real one stored before it: what the
log already holds arrives at once, so this is the cost of there being none."""


async def has_final(bus: Bus, job_id: str) -> bool:
    """Whether the job has its final event on ``<prefix>.result.<job>``.

    With the stages' public keys (``bus.trust``) only one that counts: a forged final
    event (qbus/bus/signing.py) does not end a job. One read when the last message
    there verifies (or nothing is checked), as before signatures.
    """
    subject = bus.subjects.result(job_id)
    try:
        last = await bus.js.get_last_msg(bus.config.stream, subject)
    except NotFoundError:
        return False
    if bus.trust is None or not bus.trust.message_problem(last.subject, last.data, last.headers):
        return True
    try:
        await first_stored(bus, subject, REAL_FINAL_WAIT)
    except TimeoutError:
        return False
    return True
