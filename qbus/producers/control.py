"""Send a control event (Reroute / Cancel) and collect the control stage's answer.

Shared by ``qbus reroute``/``qbus cancel`` and the HTTP gateway's cancel and reroute
endpoints (docs/long-jobs.md).
"""

from __future__ import annotations

import asyncio

from qbus.bus.connection import Bus
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.schemas.events import Cancel, Event, ExecutionRequested, Reroute


async def send_control(bus: Bus, event: Reroute | Cancel, timeout: float) -> list[Event]:
    """Publish ``event`` and collect the control stage's answer to it.

    Returns the events caused by ``event``: one ControlRejected or JobFailed, or the
    ExecutionRequested of a reroute (all of them that arrive within a short grace after
    the first).

    Raises:
        TimeoutError: No answer within ``timeout`` seconds.
    """
    answers: list[Event] = []
    first = asyncio.Event()

    async def on_msg(msg) -> None:
        try:
            got = decode_event(msg.data)
        except UNDECODABLE:
            return
        if got.causation_id == event.event_id:
            answers.append(got)
            first.set()

    # Core subscriptions before the publish: no answer can slip past.
    subs = [await bus.nc.subscribe(s, cb=on_msg) for s in bus.subjects.of_job(event.job_id)]
    try:
        await bus.publish(event)
        await asyncio.wait_for(first.wait(), timeout)
        if isinstance(answers[0], ExecutionRequested):
            await asyncio.sleep(0.5)  # the rest of the chunks are published with it
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return answers


__all__ = ["send_control"]
